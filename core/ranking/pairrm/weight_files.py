"""The tensors of a weights folder, by name and shape, read without loading them.

``model.safetensors`` (or the shards of ``model.safetensors.index.json``) give their shapes from the file
header; ``pytorch_model.bin`` is opened with ``torch.load(..., mmap=True, weights_only=True)``, which maps
the file instead of reading it, so no tensor is materialised either (a legacy, non-zip ``.bin`` cannot be
mapped: it is read in full, which costs what the checkpoint weighs and never what a damaged config asks).

Example:
    >>> shapes = read_weight_shapes("ckpt/")  # doctest: +SKIP
    >>> shapes["head_layer.4.weight"]  # doctest: +SKIP
    (1, 1024)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

Shapes = dict[str, tuple[int, ...]]
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN = "pytorch_model.bin"


def safetensors_shapes(path: str | Path) -> Shapes:
    """Name -> shape of every tensor of one ``.safetensors`` file, from its header only."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}


def load_bin(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """A ``pytorch_model.bin`` state dict, read with ``weights_only=True`` (never arbitrary objects)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # e.g. UnpicklingError: the file holds objects other than tensors
        if mmap and isinstance(exc, RuntimeError) and "mmap" in str(exc):  # a legacy (non-zip) file
            raise
        raise ValueError(
            f"{path} could not be read as plain tensors ({type(exc).__name__}); "
            "this package never unpickles arbitrary objects: convert the checkpoint to safetensors or "
            "save a plain state dict"
        ) from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def _bin_shapes(path: Path) -> Shapes:
    try:
        state = load_bin(path, mmap=True)
    except RuntimeError as exc:  # a legacy .bin: read it in full (its real size, whatever its config says)
        logger.info("%s cannot be memory-mapped (%s); reading it in full to learn its shapes", path, exc)
        state = load_bin(path)
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def read_weight_shapes(folder: str | Path) -> Shapes | None:
    """Name -> shape of the weights in ``folder`` (``model.safetensors``, its shards, or ``pytorch_model.bin``),
    with no tensor loaded; ``None`` when the folder holds none of them."""
    folder = Path(folder)
    if (folder / SAFETENSORS).is_file():
        return safetensors_shapes(folder / SAFETENSORS)
    if (folder / SAFETENSORS_INDEX).is_file():
        index = json.loads((folder / SAFETENSORS_INDEX).read_text())
        shapes: Shapes = {}
        for shard in sorted(set(index.get("weight_map", {}).values())):
            shapes.update(safetensors_shapes(folder / shard))
        return shapes
    if (folder / BIN).is_file():
        return _bin_shapes(folder / BIN)
    return None

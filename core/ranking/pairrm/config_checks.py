"""Checks on a ranker's config before its model is built: sane sizes, and sizes that match the weights.

Building a model allocates every tensor its config names, so a damaged ``config.json`` (a ``hidden_size``
of 1e9, 1e7 layers, 0 attention heads) would ask the allocator for hundreds of GB, spin for minutes, or
divide by zero before any key check could run. Here the config is checked first, in this order:

1. every size field is an int; those that must be are positive (``num_attention_heads: 0`` stops here);
2. each field the weights determine agrees with the tensor shapes read from the weights file's header
   (no tensor loaded): the word embeddings are (``vocab_size``, ``hidden_size``), the head reads
   ``hidden_size`` and writes ``n_tasks``, the layers in the keys number ``num_hidden_layers``…;
3. ``hidden_size`` splits into ``num_attention_heads``, and no size exceeds :data:`LIMITS` (far above any
   published encoder), which guards the fields no weight records (e.g. DeBERTa's position ids);
4. the whole model is built on the meta device (no memory) and its state-dict keys and shapes are
   compared with the weights' (:func:`expected_shapes`, :func:`check_state_shapes`).

Every error is a ``ValueError`` that names the field, the config's value and what the weights say.

Example:
    >>> from transformers import BertConfig
    >>> check_encoder_config(BertConfig(hidden_size=30, num_attention_heads=4), None, "demo")
    Traceback (most recent call last):
    ...
    ValueError: demo: hidden_size=30 is not a multiple of num_attention_heads=4; each head gets hidden_size / num_attention_heads dimensions
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch

from blender_core.ranking.pairrm.configuration_pairrm import PairRMConfig
from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel

logger = logging.getLogger(__name__)

Shapes = Mapping[str, tuple[int, ...]]

# Upper bounds on each size, far above every published encoder (DeBERTa-v3-large: hidden 1024, 24 layers,
# 128k vocabulary; the largest multilingual vocabularies hold about 256k tokens), low enough that a config
# within them cannot by itself ask for an absurd allocation.
LIMITS: dict[str, int] = {
    "hidden_size": 65_536,
    "num_hidden_layers": 1_024,
    "num_attention_heads": 65_536,
    "intermediate_size": 262_144,
    "vocab_size": 4_194_304,
    "max_position_embeddings": 1_048_576,
    "embedding_size": 65_536,
    "type_vocab_size": 1_024,
    "position_buckets": 1_048_576,
    "max_relative_positions": 1_048_576,
    "n_tasks": 1_024,
}
# Sizes that must be >= 1 when the config has them; the others may be 0 or negative ("unset" / "none").
_POSITIVE = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "embedding_size",
)
_OTHER_INTS = ("type_vocab_size", "position_buckets", "max_relative_positions")
_LAYER = re.compile(r"(?:^|\.)encoder\.layers?\.(\d+)\.")


def _get(config: Any, field: str) -> Any:
    return config.get(field) if isinstance(config, Mapping) else getattr(config, field, None)


def _find(shapes: Shapes, suffix: str) -> tuple[str, tuple[int, ...]] | None:
    """The first tensor whose name is ``suffix`` or ends with ``.suffix`` (any base-model prefix)."""
    names = sorted(n for n in shapes if n == suffix or n.endswith("." + suffix))
    return (names[0], shapes[names[0]]) if names else None


def damaged_config(source: str, exc: Exception) -> ValueError:
    """The error for a config that transformers itself refused (e.g. a float where its dataclass wants an int)."""
    return ValueError(f"{source}: the config is damaged: {' '.join(str(exc).split())}")


def check_sizes_are_ints(config: Any, source: str) -> None:
    """Step 1: each size field the config has is an int, and a positive one where it must be."""
    for field in (*_POSITIVE, *_OTHER_INTS):
        value = _get(config, field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{source}: {field} must be an int, got {value!r}; the config is damaged")
        if field in _POSITIVE and value < 1:
            raise ValueError(
                f"{source}: {field} must be a positive int, got {value!r}; the config is damaged"
            )


def _mismatch(source: str, field: str, value: Any, actual: int, evidence: str) -> ValueError:
    return ValueError(
        f"{source}: {field}={value!r} in the config, but the weights say {actual} ({evidence}); the config "
        f"does not belong to these weights or is damaged: set {field} to {actual}, or use the config that "
        "came with the weights"
    )


def _check_field(source: str, config: Any, field: str, actual: int, evidence: str) -> None:
    value = _get(config, field)
    if value is not None and value != actual:
        raise _mismatch(source, field, value, actual, evidence)


def check_against_weights(config: Any, shapes: Shapes, source: str) -> None:
    """Step 2: every size the weights determine (found by name suffix, so any base-model prefix works)."""
    hidden = _get(config, "hidden_size")
    head = shapes.get("head_layer.1.weight")
    attn = _find(shapes, "encoder.layer.0.attention.output.dense.weight")
    if head is not None and len(head) == 2:
        _check_field(source, config, "hidden_size", head[0], f"head_layer.1.weight has shape {head}")
    elif attn is not None:
        _check_field(source, config, "hidden_size", attn[1][0], f"{attn[0]} has shape {attn[1]}")
    layers = sorted({int(m.group(1)) for name in shapes if (m := _LAYER.search(name))})
    if layers:
        span = f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])
        _check_field(source, config, "num_hidden_layers", len(layers), f"the keys hold encoder layers {span}")
    width_field = "embedding_size" if _get(config, "embedding_size") not in (None, hidden) else "hidden_size"
    for suffix, field in (
        ("embeddings.word_embeddings.weight", "vocab_size"),
        ("embeddings.position_embeddings.weight", "max_position_embeddings"),
        ("embeddings.token_type_embeddings.weight", "type_vocab_size"),
    ):
        found = _find(shapes, suffix)
        if found is not None and len(found[1]) == 2:
            name, shape = found
            _check_field(source, config, field, shape[0], f"{name} has shape {shape}")
            _check_field(source, config, width_field, shape[1], f"{name} has shape {shape}")
    inter = _find(shapes, "encoder.layer.0.intermediate.dense.weight")
    if inter is not None:
        _check_field(source, config, "intermediate_size", inter[1][0], f"{inter[0]} has shape {inter[1]}")
    rel = _find(shapes, "encoder.rel_embeddings.weight")  # DeBERTa: (2 x relative span, hidden)
    if rel is not None and bool(_get(config, "relative_attention")):
        buckets = _get(config, "position_buckets") or -1
        field = "position_buckets" if buckets > 0 else "max_relative_positions"
        if field == "max_relative_positions" and (_get(config, field) or -1) < 1:
            field = "max_position_embeddings"  # DeBERTa's fallback for the span
        _check_field(source, config, field, rel[1][0] // 2, f"{rel[0]} has shape {rel[1]}, twice the span")


def check_limits(config: Any, source: str) -> None:
    """Step 3: ``hidden_size`` splits into the heads, and no size is beyond :data:`LIMITS`."""
    hidden, heads = _get(config, "hidden_size"), _get(config, "num_attention_heads")
    has_head_dim = _get(config, "head_dim") is not None or _get(config, "attention_head_size") is not None
    if hidden is not None and heads is not None and hidden % heads and not has_head_dim:
        raise ValueError(
            f"{source}: hidden_size={hidden} is not a multiple of num_attention_heads={heads}; each head gets "
            "hidden_size / num_attention_heads dimensions"
        )
    for field, limit in LIMITS.items():
        value = _get(config, field)
        if isinstance(value, int) and value > limit:
            raise ValueError(
                f"{source}: {field}={value} is beyond any real encoder's (at most {limit:,} here); the config "
                "is damaged"
            )


def check_encoder_config(config: Any, shapes: Shapes | None, source: str) -> None:
    """Steps 1-3 for an encoder config (a transformers config or its dict) and, when known, its weights' shapes.

    Args:
        config: the encoder's config.
        shapes: name -> shape of the weights (any base-model prefix), or None when they cannot be read yet.
        source: where the config comes from, to start every error with.
    """
    check_sizes_are_ints(config, source)
    if shapes is not None:
        check_against_weights(config, shapes, source)
    check_limits(config, source)


def check_pairrm_config(config: PairRMConfig, shapes: Shapes | None, source: str, weights: str) -> None:
    """Steps 1-4 for a PairRM config and its checkpoint's weights, before anything is allocated.

    Args:
        config: the ranker's config (its ``encoder_config`` already a transformers config).
        shapes: name -> shape of the checkpoint's weights, or None when it has none.
        source: where the config comes from, to start the errors of steps 1-3 with.
        weights: where the weights are, for the key errors of step 4.
    """
    check_n_tasks(config.n_tasks, None, source)  # against the head: by key, in step 4
    check_encoder_config(config.encoder_config, shapes, source)
    if shapes is not None:
        expected = expected_shapes(config)
        if expected is not None:
            check_state_shapes(expected, shapes, weights)


def check_n_tasks(n_tasks: Any, head: tuple[int, ...] | None, source: str) -> int:
    """``n_tasks`` if it is an int from 1 to its limit that matches the head's rows (``head``: the shape of
    ``head_layer.4.weight``, when known); else a ``ValueError`` naming it."""
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or not 1 <= n_tasks <= LIMITS["n_tasks"]:
        raise ValueError(
            f"{source}: n_tasks must be an int from 1 to {LIMITS['n_tasks']} (1 in every published "
            f"checkpoint), got {n_tasks!r}"
        )
    if head is not None and len(head) == 2 and head[0] != n_tasks:
        raise _mismatch(source, "n_tasks", n_tasks, head[0], f"head_layer.4.weight has shape {head}")
    return n_tasks


def expected_shapes(config: PairRMConfig) -> dict[str, tuple[int, ...]] | None:
    """Name -> shape of the state dict of ``PairRMModel(config)``, built on the meta device (no memory);
    None when the encoder cannot be built that way."""
    try:
        with torch.device("meta"):
            model = PairRMModel(config)
    except Exception as exc:  # an encoder whose __init__ needs real tensors: the check after loading remains
        logger.debug("could not build the model on the meta device (%s: %s)", type(exc).__name__, exc)
        return None
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _short(keys: list[str], n: int = 12) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", … ({len(keys) - n} more)" if len(keys) > n else "")


def check_state_shapes(expected: Shapes, got: Shapes, source: str) -> None:
    """Any key of the model missing from the weights, unexpected, or of another shape is an error naming the keys."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    mismatched = [
        f"{k} {tuple(got[k])} vs {tuple(expected[k])}"
        for k in sorted(set(got) & set(expected))
        if tuple(got[k]) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_short(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (checkpoint vs model): {_short(mismatched)}")
    if problems:
        raise ValueError(
            f"the weights in {source} do not match the PairRM model built from its config; "
            + "; ".join(problems)
            + ". Check that the config (encoder, vocabulary size, n_tasks) belongs to these weights"
        )

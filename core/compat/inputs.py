"""Checks of the llm-blender drop-in's arguments, shared by its ranker and fuser methods: the reference's
``assert`` checks as ``ValueError`` / ``TypeError`` that say what was received and what to do.

Example:
    >>> source_texts(["2+2?", "x"], ["Answer: ", "Echo: "], "rank")
    ['Answer: 2+2?', 'Echo: x']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blender_core.base.validation import check_candidate_lists, check_prompts, check_texts_per

#: the rank kwargs that override the ranker's truncation limits for one call
LIMIT_KWARGS = ("source_max_length", "candidate_max_length")


def check_batch_size(batch_size: Any, fn: str) -> int:
    """``batch_size`` if it is a positive int, else a ``ValueError`` naming ``fn``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{fn}() got batch_size={batch_size!r}; pass a positive int")
    return batch_size


def per_input_texts(values: Any, n_inputs: int, what: str, fn: str) -> list[str]:
    """One text per input (``instructions``, ``ref_candidates``), checked: a list of str of length ``n_inputs``."""
    return check_texts_per(values, n_inputs, what, "input", fn)


def source_texts(inputs: Any, instructions: Any, fn: str) -> list[str]:
    """instruction + input, with no separator, as the reference."""
    texts = check_prompts(inputs, fn)
    if instructions is None:
        return texts
    heads = per_input_texts(instructions, len(texts), "instructions", fn)
    return [head + text for head, text in zip(heads, texts, strict=True)]


def candidate_table(srcs: list[str], candidates: Any, fn: str) -> tuple[list[list[str]], int]:
    """Candidate lists, all of one length (the reference returns (N, C) arrays); returns them and C."""
    cands = check_candidate_lists(srcs, candidates, fn, 1)
    sizes = sorted({len(c) for c in cands})
    if len(sizes) > 1:
        raise ValueError(
            f"{fn}() got inputs with {sizes} candidates; every input needs the same number of candidates "
            "(use blender_core.ranking.PairRanker for ragged lists)"
        )
    return cands, (sizes[0] if sizes else 0)


def rank_limits(rank_kwargs: Mapping[str, Any], fn: str, extra: tuple[str, ...] = ()) -> tuple[Any, Any]:
    """The ``source_max_length`` / ``candidate_max_length`` of a call's kwargs (None when not given)."""
    unknown = sorted(set(rank_kwargs) - {*LIMIT_KWARGS, *extra})
    if unknown:
        raise TypeError(
            f"{fn}() got unknown arguments {unknown}; it takes {', '.join((*LIMIT_KWARGS, *extra))}"
        )
    return rank_kwargs.get("source_max_length"), rank_kwargs.get("candidate_max_length")

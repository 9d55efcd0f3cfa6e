"""Checks on user input, with errors that say what was received and what to do."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def check_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(
            f"{what} is a {type(value).__name__}, not a str; pass text (for a chat message, its .content)"
        )
    return value


def check_texts(values: Any, what: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(
            f"{what} must be a list of str, got {type(values).__name__}; for one text pass [text]"
        )
    return [check_text(v, f"{what}[{k}]") for k, v in enumerate(values)]


def check_texts_per(values: Any, n: int, what: str, per: str, fn: str) -> list[str]:
    """One text per ``per`` (``fn`` got ``n`` of them): ``values`` must be a list of ``n`` str."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{fn}() takes {what} as a list of str (one per {per}), got {type(values).__name__}")
    if len(values) != n:
        raise ValueError(f"{fn}() got {n} {per}s but {len(values)} {what}; pass one per {per}")
    return [check_text(v, f"{fn}(): {what}[{k}]") for k, v in enumerate(values)]


def check_prompts(prompts: Any, fn: str) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError(f"{fn}() takes a list of prompts, got a single str; wrap it in a list: [prompt]")
    if not isinstance(prompts, Sequence):
        raise TypeError(f"{fn}() takes a list of prompts, got {type(prompts).__name__}")
    return [check_text(p, f"{fn}(): prompt {k}") for k, p in enumerate(prompts)]


def check_candidate_lists(
    prompts: list[str], candidates: Any, fn: str, min_candidates: int
) -> list[list[str]]:
    if isinstance(candidates, str) or not isinstance(candidates, Sequence):
        raise TypeError(
            f"{fn}() takes one list of candidate texts per prompt, got {type(candidates).__name__}"
        )
    if len(candidates) != len(prompts):
        raise ValueError(
            f"{fn}() got {len(prompts)} prompts but {len(candidates)} candidate lists; pass one list of "
            "candidates per prompt"
        )
    out = []
    for k, cands in enumerate(candidates):
        if isinstance(cands, str) or not isinstance(cands, Sequence):
            raise TypeError(
                f"{fn}(): candidates for prompt {k} must be a list of str, got {type(cands).__name__}; "
                "for a single prompt pass [[cand_1, cand_2, ...]]"
            )
        if len(cands) < min_candidates:
            need = "ranking needs at least 2" if min_candidates >= 2 else "at least 1 is needed"
            raise ValueError(f"{fn}() got {len(cands)} candidate(s) for prompt {k}; {need}")
        out.append([check_text(c, f"{fn}(): candidate {i} of prompt {k}") for i, c in enumerate(cands)])
    return out


def check_same_length(fn: str, **lists: Sequence[Any]) -> None:
    lengths = {name: len(v) for name, v in lists.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"{fn}() needs lists of equal length, got {shown}")


def check_choice(value: str, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(map(repr, choices))}")
    return value


def check_top_k(top_k: int | None) -> int | None:
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None (all candidates), got {top_k!r}")
    return top_k


def check_positive(value: int | None, what: str) -> int | None:
    """``value`` if it is None or a positive int, else a ``ValueError`` naming ``what``."""
    return None if value is None else positive_int(value, what, " or None")


def positive_int(value: int, what: str, _alt: str = "") -> int:
    """``value`` if it is a positive int, else a ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int{_alt}, got {value!r}")
    return value


def check_top_n(top_n: int | None) -> int | None:
    """How many reranked items to keep: a positive int, or None for all of them."""
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise ValueError(f"top_n must be >= 1 or None (keep all), got {top_n!r}")
    return top_n

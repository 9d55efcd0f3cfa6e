"""Result objects: frozen dataclasses, no attribute magic."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class RankedCandidate:
    """One candidate of a ranking: its index in the input list, its text, score and rank (1 = best)."""

    index: int
    text: str
    score: float
    rank: int


@dataclass(frozen=True)
class Ranking:
    """The ranking of one prompt's candidates.

    Attributes:
        scores: (n,) float scores, higher is better; an order only for ``full`` (:attr:`scores_order`).
        ranks: (n,) int ranks, 1 = best; tied scores share the better rank.
        order: candidate indices, best first.
        best: index of the best candidate (``order[0]``).
        strategy: the strategy that produced it.
        aggregation: how the comparison matrix became scores (``full`` only), else ``None``.
        n_forward: number of model forward passes (ordered comparisons) it cost.
        matrix: (n, n) comparison matrix for ``full`` (M[i, j] = logit of i in slot 1 vs j in slot 2),
            else ``None``.
        usage: token usage the ranking cost (an LLM judge's calls), else ``None``.
        issues: what went wrong without stopping the ranking (e.g. a judge verdict that could not be read,
            counted as a tie), for the caller to report.
        scores_order: whether the scores order the candidates (``ranks`` follow them): a ``full`` matrix's
            and absolute rewards do; a tournament's (``knockout``, ``bubble``, ``sort``) do not: each score
            is a candidate's mean margin over the matches it played, against the opponents it met, and
            ``ranks`` / ``order`` come from the tournament.
    """

    scores: np.ndarray
    ranks: np.ndarray
    order: tuple[int, ...]
    best: int
    strategy: str
    aggregation: str | None = None
    n_forward: int = 0
    matrix: np.ndarray | None = field(default=None, repr=False)
    usage: Mapping[str, int] | None = None
    issues: tuple[str, ...] = ()
    scores_order: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "scores", _frozen(np.asarray(self.scores, dtype=np.float64)))
        object.__setattr__(self, "ranks", _frozen(np.asarray(self.ranks, dtype=np.int64)))
        if self.matrix is not None:
            object.__setattr__(self, "matrix", _frozen(self.matrix))

    def top(self, k: int) -> list[int]:
        """Indices of the ``k`` best candidates, best first."""
        return list(self.order[:k])

    def candidates(self, texts: list[str]) -> list[RankedCandidate]:
        """The candidates in ranked order, given their texts."""
        return [RankedCandidate(i, texts[i], float(self.scores[i]), int(self.ranks[i])) for i in self.order]

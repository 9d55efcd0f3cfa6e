"""From a comparison matrix to scores and ranks (the reference's max_logits / max_wins)."""

from __future__ import annotations

from typing import Literal

import numpy as np

Aggregation = Literal["max_logits", "max_wins"]
AGGREGATIONS: tuple[str, ...] = ("max_logits", "max_wins")


def scores_from_matrix(matrix: np.ndarray, aggregation: str = "max_logits") -> np.ndarray:
    """Scores of n candidates from their (n, n) matrix M (M[i, j]: logit of i in slot 1 vs j in slot 2).

    - ``max_logits``: s_i = mean_j (M[i, j] - M[j, i]), the mean including the zero diagonal (reference).
    - ``max_wins``: s_i = #{j: M[i, j] > 0} + #{j: M[j, i] < 0}, wins in either slot.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"expected a square comparison matrix, got shape {m.shape}")
    if aggregation == "max_logits":
        return (m - m.T).mean(axis=-1)
    if aggregation == "max_wins":
        return ((m > 0).sum(axis=-1) + (m < 0).sum(axis=-2)).astype(np.float64)
    raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")


def ranks_from_scores(scores: np.ndarray) -> np.ndarray:
    """1 = best; tied scores share the better rank (rank_i = 1 + #{j: s_j > s_i})."""
    s = np.asarray(scores)
    return 1 + (s[None, :] > s[:, None]).sum(axis=1)


def order_from_scores(scores: np.ndarray) -> tuple[int, ...]:
    """Indices best first; ties keep input order."""
    return tuple(int(i) for i in np.argsort(-np.asarray(scores), kind="stable"))

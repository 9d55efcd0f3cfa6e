"""From a comparison matrix to scores and ranks, on hand-computed matrices."""

from __future__ import annotations

import numpy as np
import pytest

from blender_core.ranking.aggregation import order_from_scores, ranks_from_scores, scores_from_matrix

# M[i, j]: logit of candidate i in slot 1 vs j in slot 2.
M = np.array(
    [
        [0.0, 1.0, -2.0],
        [3.0, 0.0, 0.5],
        [-1.0, 2.0, 0.0],
    ]
)


def test_max_logits_is_the_mean_margin_including_the_diagonal() -> None:
    # s_0 = (0 + (1 - 3) + (-2 + 1)) / 3; s_1 = ((3 - 1) + 0 + (0.5 - 2)) / 3; s_2 = ((-1 + 2) + (2 - 0.5) + 0) / 3
    assert scores_from_matrix(M, "max_logits") == pytest.approx([-1.0, 1 / 6, 5 / 6])
    assert scores_from_matrix(M) == pytest.approx([-1.0, 1 / 6, 5 / 6])  # the default


def test_max_logits_divides_by_n_not_n_minus_1() -> None:
    two = np.array([[0.0, 1.5], [-0.5, 0.0]])
    assert scores_from_matrix(two, "max_logits") == pytest.approx([1.0, -1.0])  # (1.5 + 0.5) / 2


def test_max_wins_counts_wins_in_either_slot() -> None:
    # 0: beats 1 in slot 1 (M01 > 0), beats 2 in slot 2 (M20 < 0); 1: M10 > 0, M12 > 0; 2: M21 > 0, M02 < 0
    assert scores_from_matrix(M, "max_wins") == pytest.approx([2.0, 2.0, 2.0])
    lopsided = np.array([[0.0, 1.0, 1.0], [-1.0, 0.0, 0.0], [-1.0, 2.0, 0.0]])
    # 0: M01, M02 > 0 and M10, M20 < 0 -> 4; 1: nothing -> 0; 2: M21 > 0 -> 1 (a zero logit is no win)
    assert scores_from_matrix(lopsided, "max_wins") == pytest.approx([4.0, 0.0, 1.0])


def test_ranks_share_the_better_rank_on_ties() -> None:
    assert ranks_from_scores(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [1, 4, 1, 3]
    assert ranks_from_scores(np.array([2.0, 2.0, 2.0])).tolist() == [1, 1, 1]
    assert ranks_from_scores(scores_from_matrix(M)).tolist() == [3, 2, 1]


def test_order_is_best_first_and_stable_on_ties() -> None:
    assert order_from_scores(np.array([3.0, 1.0, 3.0, 2.0])) == (0, 2, 3, 1)
    assert order_from_scores(scores_from_matrix(M)) == (2, 1, 0)


def test_not_a_square_matrix() -> None:
    with pytest.raises(ValueError, match=r"expected a square comparison matrix, got shape \(2, 3\)"):
        scores_from_matrix(np.zeros((2, 3)))


def test_unknown_aggregation() -> None:
    with pytest.raises(ValueError, match="unknown aggregation 'borda'; choose one of max_logits, max_wins"):
        scores_from_matrix(M, "borda")

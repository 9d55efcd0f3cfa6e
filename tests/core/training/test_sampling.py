"""Pair sampling on crafted candidate sets: all_pair / top_bottom / random, dedupe, swap, score gaps."""

from __future__ import annotations

import itertools
import random

import pytest

from blender_core.training.ranker.config import TrainConfig
from blender_core.training.ranker.sampling import dedupe_indices, sample_pairs

SCORES = [0.1, 0.9, 0.5, 0.3]


def test_top_bottom_pairs_the_best_with_the_worst() -> None:
    pairs = sample_pairs(SCORES, mode="top_bottom", num_pos=1, num_neg=2, rng=random.Random(0), random_swap=False)
    assert pairs == [(1, 3), (1, 0)]  # best (0.9) first, against the two worst (0.3, 0.1)
    every = sample_pairs(SCORES, mode="top_bottom", num_pos=4, num_neg=4, rng=random.Random(0), random_swap=False)
    assert sorted(every) == sorted((max(p, key=lambda i: SCORES[i]), min(p, key=lambda i: SCORES[i]))
                                   for p in itertools.combinations(range(4), 2))  # overlap pairs once


def test_all_pair_draws_min_of_num_pos_num_neg_distinct_pairs() -> None:
    for seed in range(20):
        pairs = sample_pairs(SCORES, mode="all_pair", num_pos=3, num_neg=5, rng=random.Random(seed), random_swap=False)
        assert len(pairs) == 3
        assert len({frozenset(p) for p in pairs}) == 3
        assert all(SCORES[i] > SCORES[j] for i, j in pairs)
    seen = {frozenset(p) for s in range(50) for p in
            sample_pairs(SCORES, mode="all_pair", num_pos=1, num_neg=1, rng=random.Random(s))}
    assert len(seen) == 6  # every one of the C(4, 2) pairs gets drawn


def test_random_mode_draws_max_of_num_pos_num_neg() -> None:
    pairs = sample_pairs(SCORES, mode="random", num_pos=2, num_neg=7, rng=random.Random(1), random_swap=False)
    assert len(pairs) == 7
    assert all(i != j and SCORES[i] > SCORES[j] for i, j in pairs)


def test_random_swap_puts_the_better_one_second_about_half_the_time() -> None:
    rng = random.Random(0)
    firsts = [SCORES[i] > SCORES[j] for _ in range(400)
              for i, j in sample_pairs(SCORES, mode="all_pair", num_pos=2, num_neg=2, rng=rng)]
    assert 0.4 < sum(firsts) / len(firsts) < 0.6


def test_equal_scores_and_small_gaps_are_never_paired() -> None:
    assert sample_pairs([1.0, 1.0, 1.0], mode="all_pair", rng=random.Random(0)) == []
    assert sample_pairs([1.0, 1.0, 1.0], mode="random", rng=random.Random(0)) == []
    pairs = sample_pairs([1.0, 1.2, 2.0], mode="top_bottom", num_pos=3, num_neg=3, rng=random.Random(0),
                         random_swap=False, min_gap=0.5)
    assert sorted(pairs) == [(2, 0), (2, 1)]


def test_dedupe_drops_repeated_texts_keeping_the_best_copy() -> None:
    texts = ["same", "other", " same ", "third"]
    scores = [0.2, 0.5, 0.9, 0.1]
    assert dedupe_indices(texts, scores) == [1, 2, 3]
    pairs = sample_pairs(scores, mode="top_bottom", num_pos=4, num_neg=4, rng=random.Random(0), texts=texts,
                         random_swap=False)
    assert all(0 not in p for p in pairs)
    assert len(pairs) == 3


def _shorter_wins_share(share: float) -> float:
    # The better answer is the longer in 4 of the 6 pairs (scores rise with length except for index 3).
    scores, lengths = [0.1, 0.5, 0.9, 0.7], [10, 20, 30, 5]
    rng, hits, n = random.Random(0), 0, 0
    for _ in range(300):
        for i, j in sample_pairs(scores, mode="all_pair", num_pos=2, num_neg=2, rng=rng, lengths=lengths,
                                 shorter_share=share, random_swap=False):
            n += 1
            hits += lengths[i] < lengths[j]
    return hits / n


def test_shorter_share_sets_how_often_the_better_answer_is_the_shorter() -> None:
    uniform = _shorter_wins_share(0.0)
    assert 0.25 < uniform < 0.42  # 2 of 6 pairs
    assert 0.45 < _shorter_wins_share(0.5) < 0.55
    assert 0.6 < _shorter_wins_share(0.9) <= 1.0  # capped: a set has only 2 such pairs for 2 draws
    with pytest.raises(ValueError, match="shorter_share needs mode='all_pair' and the candidates' lengths"):
        sample_pairs(SCORES, rng=random.Random(0), shorter_share=0.5)
    with pytest.raises(ValueError, match=r"shorter_share works with sampling='all_pair', not 'top_bottom'"):
        TrainConfig(shorter_share=0.5, sampling="top_bottom")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"unknown sampling mode 'best'; choose one of 'all_pair', 'top_bottom', 'random'"):
        sample_pairs(SCORES, mode="best", rng=random.Random(0))
    with pytest.raises(ValueError, match="num_pos and num_neg must be >= 1"):
        sample_pairs(SCORES, num_pos=0, rng=random.Random(0))

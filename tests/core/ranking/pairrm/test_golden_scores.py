"""Golden scores of the tiny reference checkpoint (seed 0, limits 24 / 16), recorded once with this package.

They pin the whole path (sanitising, truncation, layout, pooling, head, aggregation) against silent changes;
agreement with the reference package itself is checked in test_compat.py.
"""

from __future__ import annotations

import pytest

from blender_core.ranking.pairrm.pair_ranker import PairRanker

LONG = "the answer is good and the question is bad and the world is good " * 3
PROMPTS = ["write a poem", "What is 2+2?", "explain: " + LONG]  # the last one is cut to 24 tokens
CANDIDATES = [
    ["a good poem", "bad", "the answer is yes"],
    ["4", "five", "It is 4.", LONG],  # LONG is cut to its budget
    ["yes", LONG, "no"],
]
GOLDEN_SCORES = [
    [0.637935, -0.815116, 0.177181],
    [0.0638932, 0.206891, -0.607206, 0.336421],
    [-0.0646833, 0.317194, -0.252511],
]
GOLDEN_ORDERS = [(0, 2, 1), (3, 1, 0, 2), (1, 0, 2)]
GOLDEN_COMPARE = [2.1052149, -1.0975615, -0.1991190]


def test_golden_rank_scores(tiny_ranker: PairRanker) -> None:
    assert [len(ids) for ids in tiny_ranker.encoder.encode_sources(PROMPTS)] == [6, 12, 24]
    rankings = tiny_ranker.rank(PROMPTS, CANDIDATES)
    for r, scores, order in zip(rankings, GOLDEN_SCORES, GOLDEN_ORDERS, strict=True):
        assert r.scores == pytest.approx(scores, rel=1e-4, abs=1e-5)
        assert r.order == order


def test_golden_compare(tiny_ranker: PairRanker) -> None:
    got = tiny_ranker.compare(PROMPTS, ["a good poem", "4", "yes"], ["bad", LONG, LONG])
    assert got == pytest.approx(GOLDEN_COMPARE, rel=1e-4, abs=1e-5)

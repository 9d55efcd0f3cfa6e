from __future__ import annotations

from blender_core.ranking.pairrm.pair_ranker import PairRanker


def test_rank_orders_candidates(tiny_ranker: PairRanker) -> None:
    (r,) = tiny_ranker.rank(["write a poem"], [["a good poem", "bad", "the answer is yes"]])
    assert sorted(r.order) == [0, 1, 2]
    assert r.ranks[r.best] == 1

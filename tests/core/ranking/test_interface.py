"""The ranker interface: PairRanker implements it, rank_one is rank for one prompt, and a ranker written
from rank() alone gets rank_one and best_of_n."""

from __future__ import annotations

import pytest

from blender_core.ranking import PairRanker, Ranker
from blender_core.ranking.interface import rank_one
from tests.helpers.core_fakes import LengthRanker

PROMPT = "write a poem about the sea"
CANDS = ["a good poem", "bad", "the answer is yes", "poem poem poem", "a poem about the sea waves"]


def test_pair_ranker_is_a_ranker(tiny_ranker: PairRanker) -> None:
    assert isinstance(tiny_ranker, Ranker)
    assert isinstance(LengthRanker(), Ranker)
    assert not isinstance(object(), Ranker)


@pytest.mark.parametrize("strategy", ["full", "knockout", "sort"])
def test_rank_one_is_rank_for_one_prompt(tiny_ranker: PairRanker, strategy: str) -> None:
    (ranking,) = tiny_ranker.rank([PROMPT], [CANDS], strategy=strategy)
    ranked = tiny_ranker.rank_one(PROMPT, CANDS, strategy=strategy)
    assert [c.index for c in ranked] == list(ranking.order)
    assert [c.text for c in ranked] == [CANDS[i] for i in ranking.order]
    assert [c.score for c in ranked] == pytest.approx([float(ranking.scores[i]) for i in ranking.order])
    assert [c.rank for c in ranked] == [int(ranking.ranks[i]) for i in ranking.order]
    top2 = tiny_ranker.rank_one(PROMPT, CANDS, top_k=2, strategy=strategy)
    assert top2 == ranked[:2]


def test_rank_one_from_rank_alone() -> None:
    ranker = LengthRanker()
    assert [c.text for c in ranker.rank_one(PROMPT, CANDS, top_k=2)] == [
        "a poem about the sea waves",
        "the answer is yes",
    ]
    assert ranker.best_of_n([PROMPT, "x"], [CANDS, ["one"]]) == [4, 0]
    assert rank_one(ranker, PROMPT, CANDS) == ranker.rank_one(PROMPT, CANDS)  # the free function, any Ranker


@pytest.mark.parametrize(
    ("prompt", "candidates", "top_k", "error", "message"),
    [
        (["p"], CANDS, None, TypeError, r"rank_one\(\): prompt is a list, not a str"),
        (PROMPT, "abc", None, TypeError, r"candidates for prompt 0 must be a list of str, got str"),
        (PROMPT, [], None, ValueError, r"rank_one\(\) got 0 candidate\(s\) for prompt 0; at least 1 is needed"),
        (PROMPT, CANDS, 0, ValueError, r"top_k must be a positive int or None"),
    ],
)
def test_rank_one_bad_input(
    prompt: object, candidates: object, top_k: int | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        LengthRanker().rank_one(prompt, candidates, top_k=top_k)  # type: ignore[arg-type]

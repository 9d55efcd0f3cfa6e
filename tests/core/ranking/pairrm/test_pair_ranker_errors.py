"""Bad input to PairRanker: each error says what was received and what to do."""

from __future__ import annotations

from typing import Any

import pytest

from blender_core.ranking.pairrm.pair_ranker import PairRanker

P = "write a poem"
PAIR = ["yes", "no"]


def turns(*pairs: tuple[str, str], roles: tuple[str, str] = ("USER", "ASSISTANT")) -> list[dict[str, str]]:
    out = []
    for user, assistant in pairs:
        out += [{"role": roles[0], "content": user}, {"role": roles[1], "content": assistant}]
    return out


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ([PAIR, []], r"rank\(\) got 0 candidate\(s\) for prompt 1; at least 1 is needed"),
        ([[], PAIR], r"rank\(\) got 0 candidate\(s\) for prompt 0; at least 1 is needed"),
        ([PAIR], r"rank\(\) got 2 prompts but 1 candidate lists; pass one list of candidates per prompt"),
    ],
)
def test_rank_candidate_counts(tiny_ranker: PairRanker, candidates: list[list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_ranker.rank([P, "hello"], candidates)


@pytest.mark.parametrize(
    ("prompts", "candidates", "message"),
    [
        (P, [PAIR], r"rank\(\) takes a list of prompts, got a single str; wrap it in a list"),
        (None, [PAIR], r"rank\(\) takes a list of prompts, got NoneType"),
        ([None], [PAIR], r"rank\(\): prompt 0 is a NoneType, not a str"),
        ([P], "yes", r"rank\(\) takes one list of candidate texts per prompt, got str"),
        ([P], {"a": PAIR}, r"rank\(\) takes one list of candidate texts per prompt, got dict"),
        (
            [P],
            ["yes no"],
            r"candidates for prompt 0 must be a list of str, got str; for a single prompt pass \[\[",
        ),
        ([P], [["yes", None]], r"rank\(\): candidate 1 of prompt 0 is a NoneType, not a str"),
        ([P], [[3, "no"]], r"rank\(\): candidate 0 of prompt 0 is a int, not a str"),
        ([P], [["yes", {"content": "no"}]], r"candidate 1 of prompt 0 is a dict, not a str; .*\.content"),
    ],
)
def test_rank_types(tiny_ranker: PairRanker, prompts: Any, candidates: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        tiny_ranker.rank(prompts, candidates)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"strategy": "best"},
            r"unknown strategy 'best'; choose one of 'full', 'bubble', 'knockout', 'sort'",
        ),
        ({"aggregation": "borda"}, r"unknown aggregation 'borda'; choose one of 'max_logits', 'max_wins'"),
    ],
)
def test_rank_unknown_choices(tiny_ranker: PairRanker, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_ranker.rank([P], [PAIR], **kwargs)


@pytest.mark.parametrize("strategy", ["full", "bubble", "knockout", "sort"])
def test_a_single_candidate_is_a_trivial_ranking(tiny_ranker: PairRanker, strategy: str) -> None:
    """One candidate needs no comparison: rank 1, score 0, no forward pass, next to a real ranking."""
    lone, pair = tiny_ranker.rank([P, "hello"], [["only one"], PAIR], strategy=strategy)
    assert (lone.order, lone.best, list(lone.ranks), list(lone.scores), lone.n_forward) == ((0,), 0, [1], [0.0], 0)
    assert sorted(pair.order) == [0, 1]
    assert pair.n_forward == 2  # n(n-1) and 2(n-1) agree for two candidates
    (only,) = tiny_ranker.rank_one(P, ["only one"], strategy=strategy)
    assert (only.index, only.text, only.score, only.rank) == (0, "only one", 0.0, 1)


def test_best_of_n_needs_a_candidate(tiny_ranker: PairRanker) -> None:
    with pytest.raises(
        ValueError, match=r"best_of_n\(\) got 0 candidate\(s\) for prompt 0; at least 1 is needed"
    ):
        tiny_ranker.best_of_n([P], [[]])
    with pytest.raises(ValueError, match="unknown strategy 'top'"):
        tiny_ranker.best_of_n([P], [PAIR], strategy="top")


@pytest.mark.parametrize(
    ("a", "b", "error", "message"),
    [
        (
            ["yes"],
            PAIR,
            ValueError,
            r"compare\(\) needs lists of equal length, got prompts=1, candidates_a=1, candidates_b=2",
        ),
        (
            "y",
            ["n"],
            TypeError,
            r"compare\(\): candidates_a must be a list of str, got str; for one text pass \[text\]",
        ),
        (["y"], None, TypeError, r"compare\(\): candidates_b must be a list of str, got NoneType"),
        ([1.5], ["n"], TypeError, r"compare\(\): candidates_a\[0\] is a float, not a str"),
    ],
)
def test_compare_bad_input(
    tiny_ranker: PairRanker, a: Any, b: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        tiny_ranker.compare([P], a, b)


def test_score_matrix_bad_input(tiny_ranker: PairRanker) -> None:
    with pytest.raises(TypeError, match=r"score_matrix\(\): prompt is a list, not a str"):
        tiny_ranker.score_matrix([P], PAIR)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"score_matrix\(\) got 0 candidate\(s\) for prompt 0"):
        tiny_ranker.score_matrix(P, [])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"ref_mode": "random"}, ValueError, r"unknown ref_mode 'random'; choose one of 'longest', 'shortest', 'median_length'"),
        ({"ref_candidates": ["a", "b"]}, ValueError, r"rank_with_ref\(\) needs lists of equal length, got prompts=1, ref_candidates=2"),
        ({"ref_candidates": "ref"}, TypeError, r"rank_with_ref\(\): ref_candidates must be a list of str, got str"),
        ({"ref_candidates": [None]}, TypeError, r"rank_with_ref\(\): ref_candidates\[0\] is a NoneType, not a str"),
    ],
)  # fmt: skip
def test_rank_with_ref_bad_input(
    tiny_ranker: PairRanker, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        tiny_ranker.rank_with_ref([P], [PAIR], **kwargs)


@pytest.mark.parametrize(
    ("conv_a", "conv_b", "error", "message"),
    [
        ([turns(("hi", "a"))], [], ValueError, r"needs lists of equal length, got conversations_a=1, conversations_b=0"),
        (turns(("hi", "a")), turns(("hi", "b")), TypeError, r"conversations_a\[0\] must be a list of \{'role', 'content'\} turns, got dict"),
        ("hi", [turns(("hi", "b"))], TypeError, r"takes a list of conversations for conversations_a, got str"),
        ([turns(("hi", "a"))[:1]], [turns(("hi", "b"))[:1]], ValueError, r"conversations_a\[0\] has 1 turns; it needs user/assistant pairs"),
        ([[]], [[]], ValueError, r"conversations_a\[0\] has 0 turns"),
        ([turns(("hi", "a"), roles=("ASSISTANT", "USER"))], [turns(("hi", "b"))], ValueError, r"conversations_a\[0\] turn 0 has role 'ASSISTANT'; turns must alternate USER, ASSISTANT"),
        ([turns(("hi", "a"))], [turns(("hi", "b"), roles=("user", "system"))], ValueError, r"conversations_b\[0\] turn 1 has role 'system'"),
        ([[{"role": "USER"}, {"role": "ASSISTANT", "content": "a"}]], [turns(("hi", "b"))], TypeError, r"conversations_a\[0\] turn 0 must be a dict with 'role' and 'content'"),
        ([turns(("hi", None))], [turns(("hi", "b"))], TypeError, r"conversations_a\[0\] turn 1 content is a NoneType, not a str"),
        ([turns(("hi", "a"))], [turns(("hello", "b"))], ValueError, r"conversations_a\[0\] and conversations_b\[0\] must have the same user turns"),
        ([turns(("hi", "a"))], [turns(("hi", "b"), ("more", "c"))], ValueError, "must have the same user turns"),
    ],
)  # fmt: skip
def test_bad_conversations(
    tiny_ranker: PairRanker, conv_a: Any, conv_b: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        tiny_ranker.compare_conversations(conv_a, conv_b)


def test_batch_size_must_be_positive(tiny_ranker: PairRanker) -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        PairRanker(tiny_ranker.model, tiny_ranker.tokenizer, device="cpu", batch_size=0)


def test_empty_strings_are_valid_input(tiny_ranker: PairRanker) -> None:
    (r,) = tiny_ranker.rank([""], [["", ""]])
    assert r.scores.tolist() == [0.0, 0.0]  # identical candidates: both-order margins cancel exactly
    assert r.ranks.tolist() == [1, 1]
    assert len(tiny_ranker.compare([""], [""], ["yes"])) == 1
    assert tiny_ranker.best_of_n([""], [[""]]) == [0]
    (ref,) = tiny_ranker.rank_with_ref([""], [["", "x"]], ref_mode="shortest")
    assert ref.scores[0] == 0.0
    assert len(tiny_ranker.compare_conversations([turns(("", ""))], [turns(("", "x"))])) == 1

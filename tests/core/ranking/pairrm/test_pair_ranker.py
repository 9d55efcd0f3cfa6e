"""PairRanker's verbs on the tiny reference checkpoint: rank, score_matrix, compare, best_of_n, rank_with_ref, …"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from blender_core.ranking.pairrm.conversations import CONVERSATION_INSTRUCTION, conversations_to_pairs
from blender_core.ranking.pairrm.pair_ranker import PairRanker

PROMPT = "write a poem"
CANDIDATES = ["a good poem", "bad", "the answer is yes", "yes"]
# For this prompt the tiny checkpoint has a Condorcet winner (candidate 6 beats every other in both orders).
CLEAR_PROMPT = "Write a haiku about the sea."
CLEAR_CANDIDATES = [
    "the sea is good",
    "four",
    "It is 4.",
    "a poem about the world",
    "no thanks",
    "python code is data",
    "yes please",
]


def sibling(ranker: PairRanker, **kwargs: object) -> PairRanker:
    """Another ranker on the same model and tokenizer (the fixture's is shared by the whole session)."""
    return PairRanker(ranker.model, ranker.tokenizer, device="cpu", **kwargs)  # type: ignore[arg-type]


@contextmanager
def forwarded_rows(ranker: PairRanker) -> Iterator[list[torch.Tensor]]:
    """Record the input_ids of every forward pass of the ranker's model (a hook, not a mock)."""
    seen: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        seen.append(kwargs["input_ids"].clone())

    handle = ranker.model.register_forward_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def n_rows(seen: list[torch.Tensor]) -> int:
    return sum(t.shape[0] for t in seen)


def test_ranker_feeds_the_encoders_layout_to_the_model(tiny_ranker: PairRanker) -> None:
    enc = tiny_ranker.encoder
    with forwarded_rows(tiny_ranker) as seen:
        tiny_ranker.compare([PROMPT, PROMPT], ["yes", "the answer is yes"], ["bad", "bad"], both_orders=False)
    (src,) = enc.encode_sources([PROMPT])
    yes, long, bad = enc.encode_candidates(["yes", "the answer is yes", "bad"])
    rows = [enc.build(src, long, bad), enc.build(src, yes, bad)]  # longest first
    assert len(rows[0]) != len(rows[1])
    # On CPU only sequences of one length share a batch, so nothing is padded.
    assert [ids.tolist() for ids in seen] == [[rows[0]], [rows[1]]]
    # Padded batches (the GPU default) hold both rows, padded on the right, and give the same logits.
    padded = sibling(tiny_ranker, exact_batches=False)
    with forwarded_rows(padded) as seen_padded:
        values = padded.compare(
            [PROMPT, PROMPT], ["yes", "the answer is yes"], ["bad", "bad"], both_orders=False
        )
    (ids,) = seen_padded
    assert ids.tolist() == [rows[0], rows[1] + [padded.pad_id] * (len(rows[0]) - len(rows[1]))]
    exact = tiny_ranker.compare(
        [PROMPT, PROMPT], ["yes", "the answer is yes"], ["bad", "bad"], both_orders=False
    )
    assert values == pytest.approx(exact, abs=1e-4)


def test_variable_numbers_of_candidates(tiny_ranker: PairRanker) -> None:
    rankings = tiny_ranker.rank(
        [PROMPT, "hello", CLEAR_PROMPT], [CANDIDATES[:2], CANDIDATES, CLEAR_CANDIDATES]
    )
    assert [len(r.scores) for r in rankings] == [2, 4, 7]
    assert [r.n_forward for r in rankings] == [2, 12, 42]
    for r in rankings:
        assert sorted(r.order) == list(range(len(r.scores)))
        assert r.best == r.order[0]
        assert r.ranks[r.best] == 1
        assert np.sum(r.scores) == pytest.approx(0.0, abs=1e-5)  # max_logits margins cancel out
    # a prompt's ranking does not depend on the other prompts of the call
    (alone,) = tiny_ranker.rank(["hello"], [CANDIDATES])
    assert alone.scores == pytest.approx(rankings[1].scores, abs=1e-6)


def test_strategies_agree_on_a_clear_winner(tiny_ranker: PairRanker) -> None:
    ranker = sibling(tiny_ranker, cache_size=1000)  # every strategy reuses the matrix's comparisons
    m = ranker.score_matrix(CLEAR_PROMPT, CLEAR_CANDIDATES)
    margins = m - m.T
    winner = 6
    assert all(margins[winner, j] > 0 for j in range(7) if j != winner)  # precondition: a Condorcet winner
    n = len(CLEAR_CANDIDATES)
    for strategy, cost in [
        ("full", n * (n - 1)),
        ("bubble", 2 * (n - 1)),
        ("knockout", 2 * (n - 1)),
        ("sort", None),
    ]:
        for seed in (0, 1):
            (r,) = ranker.rank([CLEAR_PROMPT], [CLEAR_CANDIDATES], strategy=strategy, seed=seed)
            assert r.best == winner, strategy
            assert r.strategy == strategy
            if cost is not None:
                assert r.n_forward == cost
            else:
                assert r.n_forward <= 2 * (n * math.ceil(math.log2(n)) - n + 1)
    (wins,) = ranker.rank([CLEAR_PROMPT], [CLEAR_CANDIDATES], aggregation="max_wins")
    assert wins.aggregation == "max_wins"
    assert wins.scores[winner] == max(wins.scores)


def test_sort_finds_the_order_of_a_transitive_tournament(tiny_ranker: PairRanker) -> None:
    cands = [*CANDIDATES, "the sea is good", "no thanks"]
    ranker = sibling(tiny_ranker, cache_size=1000)
    m = ranker.score_matrix(PROMPT, cands)
    both_order_wins = ((m - m.T) > 0).sum(axis=1)
    # precondition: 5, 4, 3, 2, 1, 0 wins, i.e. the both-order comparisons are transitive
    assert sorted(both_order_wins.tolist()) == [0, 1, 2, 3, 4, 5]
    expected = tuple(int(i) for i in np.argsort(-both_order_wins))
    (merged,) = ranker.rank([PROMPT], [cands], strategy="sort")
    assert merged.order == expected
    assert merged.ranks.tolist() == [6 - w for w in both_order_wins.tolist()]
    (knockout,) = ranker.rank([PROMPT], [cands], strategy="knockout")
    assert knockout.best == expected[0]


def test_bubble_is_reproducible_with_a_seed(tiny_ranker: PairRanker) -> None:
    runs = [tiny_ranker.rank([PROMPT], [CANDIDATES], strategy="bubble", seed=7)[0] for _ in range(2)]
    assert runs[0].order == runs[1].order
    assert runs[0].scores.tolist() == runs[1].scores.tolist()


def test_score_matrix(tiny_ranker: PairRanker) -> None:
    m = tiny_ranker.score_matrix(PROMPT, CANDIDATES)
    assert m.shape == (4, 4)
    assert np.diag(m).tolist() == [0.0] * 4
    (r,) = tiny_ranker.rank([PROMPT], [CANDIDATES])
    assert r.matrix is not None
    assert r.matrix.ravel() == pytest.approx(m.ravel(), abs=1e-6)
    assert r.scores == pytest.approx((m - m.T).mean(axis=1), abs=1e-6)
    assert tiny_ranker.score_matrix(PROMPT, ["only one"]).tolist() == [[0.0]]


def test_compare(tiny_ranker: PairRanker) -> None:
    m = tiny_ranker.score_matrix(PROMPT, CANDIDATES)
    a, b = [0, 1, 2, 3, 0], [1, 2, 3, 0, 2]
    texts_a, texts_b = [CANDIDATES[i] for i in a], [CANDIDATES[j] for j in b]
    prompts = [PROMPT] * len(a)
    both = tiny_ranker.compare(prompts, texts_a, texts_b)
    assert both == pytest.approx([m[i, j] - m[j, i] for i, j in zip(a, b, strict=True)], abs=1e-6)
    assert tiny_ranker.compare(prompts, texts_b, texts_a) == pytest.approx([-x for x in both], abs=1e-5)
    one = tiny_ranker.compare(prompts, texts_a, texts_b, both_orders=False)
    assert one == pytest.approx([m[i, j] for i, j in zip(a, b, strict=True)], abs=1e-6)
    assert tiny_ranker.compare([PROMPT], ["same"], ["same"]) == [0.0]
    # any sequence of str works, numpy arrays of str too
    as_arrays = tiny_ranker.compare(tuple(prompts), np.array(texts_a), tuple(texts_b))
    assert as_arrays == pytest.approx(both, abs=1e-5)
    assert tiny_ranker.compare([], [], []) == []


def test_batch_size_does_not_change_scores(tiny_ranker: PairRanker) -> None:
    prompts, cands = (
        [PROMPT, CLEAR_PROMPT],
        [CANDIDATES, CLEAR_CANDIDATES[:3]],
    )  # 18 comparisons of mixed lengths
    one = sibling(tiny_ranker, batch_size=1).rank(prompts, cands)
    many = sibling(tiny_ranker, batch_size=64).rank(prompts, cands)
    by_call = tiny_ranker.rank(prompts, cands, batch_size=3)
    for x, y, z in zip(one, many, by_call, strict=True):
        assert x.scores == pytest.approx(y.scores, abs=1e-5)
        assert z.scores == pytest.approx(y.scores, abs=1e-5)
        assert x.order == y.order


def test_cache_returns_identical_values_without_forwards(tiny_ranker: PairRanker) -> None:
    cached = sibling(tiny_ranker, cache_size=100)
    with forwarded_rows(cached) as seen:
        first = cached.rank([PROMPT], [CANDIDATES])[0]
        assert n_rows(seen) == 12
        second = cached.rank([PROMPT], [CANDIDATES])[0]
        assert n_rows(seen) == 12  # no new forward pass
        # a new candidate only costs its own comparisons: 2 x 4 ordered pairs
        cached.rank([PROMPT], [[*CANDIDATES, "hello world"]])
        assert n_rows(seen) == 20
    assert second.scores.tolist() == first.scores.tolist()
    assert second.matrix is not None
    assert first.matrix is not None
    assert second.matrix.tolist() == first.matrix.tolist()
    uncached = tiny_ranker.rank([PROMPT], [CANDIDATES])[0]
    assert first.scores == pytest.approx(uncached.scores, abs=1e-6)


def test_cache_is_bounded(tiny_ranker: PairRanker) -> None:
    small = sibling(tiny_ranker, cache_size=2)
    with forwarded_rows(small) as seen:
        small.rank([PROMPT], [CANDIDATES])
        small.rank([PROMPT], [CANDIDATES])
    assert n_rows(seen) == 12 + 10  # only the last 2 of 12 comparisons were remembered


def test_repeated_comparisons_in_one_call_run_once(tiny_ranker: PairRanker) -> None:
    with forwarded_rows(tiny_ranker) as seen:
        values = tiny_ranker.compare([PROMPT] * 3, ["yes"] * 3, ["bad"] * 3)
    assert n_rows(seen) == 2
    assert values[0] == values[1] == values[2]


def test_best_of_n(tiny_ranker: PairRanker) -> None:
    ranker = sibling(tiny_ranker, cache_size=1000)
    with forwarded_rows(ranker) as seen:
        assert ranker.best_of_n([PROMPT], [["the only one"]]) == [0]
    assert seen == []  # a single candidate needs no comparison
    best = ranker.best_of_n([PROMPT, "hello", CLEAR_PROMPT], [["alone"], CANDIDATES, CLEAR_CANDIDATES])
    knockout = ranker.rank(["hello"], [CANDIDATES], strategy="knockout")[0].best
    assert best == [0, knockout, 6]
    assert ranker.best_of_n([CLEAR_PROMPT], [CLEAR_CANDIDATES], strategy="full") == [6]


@pytest.mark.parametrize(
    ("ref_mode", "ref_index"),
    # lengths 11, 3, 17, 3: ties on length go to the first; the median is the upper one for even n
    [("longest", 2), ("shortest", 1), ("median_length", 0), ("first", 0), ("last", 3)],
)
def test_rank_with_ref_modes(tiny_ranker: PairRanker, ref_mode: str, ref_index: int) -> None:
    (r,) = tiny_ranker.rank_with_ref([PROMPT], [CANDIDATES], ref_mode=ref_mode)
    ref = CANDIDATES[ref_index]
    expected = [-x for x in tiny_ranker.compare([PROMPT] * 4, [ref] * 4, CANDIDATES)]
    assert r.scores == pytest.approx(expected, abs=1e-6)
    assert r.scores[ref_index] == 0.0
    assert r.strategy == "ref"
    assert r.n_forward == 8
    assert r.order[0] == int(np.argmax(r.scores))


def test_rank_with_given_refs(tiny_ranker: PairRanker) -> None:
    refs = ["hello world", "no"]
    rankings = tiny_ranker.rank_with_ref([PROMPT, "hello"], [CANDIDATES, CANDIDATES[:2]], ref_candidates=refs)
    for r, ref, prompt, cands in zip(
        rankings, refs, [PROMPT, "hello"], [CANDIDATES, CANDIDATES[:2]], strict=True
    ):
        m = tiny_ranker.score_matrix(prompt, [ref, *cands])
        assert r.scores == pytest.approx([m[j, 0] - m[0, j] for j in range(1, len(cands) + 1)], abs=1e-6)
    (alone,) = tiny_ranker.rank_with_ref([PROMPT], [["just one"]], ref_candidates=["just one"])
    assert alone.scores.tolist() == [0.0]


CONV_A = [
    {"role": "USER", "content": "hi"},
    {"role": "ASSISTANT", "content": "hello"},
    {"role": "USER", "content": "2+2?"},
    {"role": "ASSISTANT", "content": "4"},
]
CONV_B = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hey there"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "5"},
]


def test_conversations_to_pairs_builds_the_reference_texts() -> None:
    sources, a, b = conversations_to_pairs([CONV_A], [CONV_B])
    assert CONVERSATION_INSTRUCTION == (
        "Finish the following coversation in each i-th turn by filling in <Response i> with your response."
    )
    assert sources == [
        "Finish the following coversation in each i-th turn by filling in <Response i> with your response."
        "USER: hi\nAssistant: <Response 1>\nUSER: 2+2?\nAssistant: <Response 2>"
    ]
    assert a == ["<Response 1>: hello\n<Response 2>: 4"]
    assert b == ["<Response 1>: hey there\n<Response 2>: 5"]


def test_compare_conversations(tiny_ranker: PairRanker) -> None:
    sources, a, b = conversations_to_pairs([CONV_A, CONV_A[:2]], [CONV_B, CONV_B[:2]])
    got = tiny_ranker.compare_conversations([CONV_A, CONV_A[:2]], [CONV_B, CONV_B[:2]])
    assert got == pytest.approx(tiny_ranker.compare(sources, a, b), abs=1e-5)
    assert tiny_ranker.compare_conversations([CONV_B], [CONV_A]) == pytest.approx([-got[0]], abs=1e-5)
    one_order = tiny_ranker.compare_conversations([CONV_A], [CONV_B], both_orders=False)
    assert one_order == pytest.approx(
        tiny_ranker.compare(sources[:1], a[:1], b[:1], both_orders=False), abs=1e-5
    )


def test_show_progress(tiny_ranker: PairRanker, capsys: pytest.CaptureFixture[str]) -> None:
    (quiet,) = tiny_ranker.rank([PROMPT], [CANDIDATES])
    assert capsys.readouterr().err == ""
    (loud,) = tiny_ranker.rank([PROMPT], [CANDIDATES], show_progress=True)
    err = capsys.readouterr().err
    assert "rank (full)" in err
    assert "12/12" in err
    assert loud.scores.tolist() == quiet.scores.tolist()
    tiny_ranker.best_of_n([PROMPT], [CANDIDATES], strategy="sort", show_progress=True)
    assert "rank (sort)" in capsys.readouterr().err


def test_ranking_results_are_frozen(tiny_ranker: PairRanker) -> None:
    (r,) = tiny_ranker.rank([PROMPT], [CANDIDATES])
    with pytest.raises(ValueError, match="read-only"):
        r.scores[0] = 1.0
    with pytest.raises(AttributeError):
        r.best = 3  # type: ignore[misc]
    ranked = r.candidates(CANDIDATES)
    assert [c.index for c in ranked] == list(r.order)
    assert [c.text for c in ranked] == [CANDIDATES[i] for i in r.order]
    assert [c.rank for c in ranked] == sorted(c.rank for c in ranked)
    assert r.top(2) == list(r.order[:2])


@pytest.mark.parametrize(("strategy", "orders"), [("full", True), ("knockout", False), ("bubble", False), ("sort", False)])
def test_a_ranking_says_whether_its_scores_order_the_candidates(tiny_ranker: PairRanker, strategy: str, orders: bool) -> None:
    (r,) = tiny_ranker.rank(["2 + 2?"], [["4", "five", "four", "22"]], strategy=strategy)
    assert r.scores_order is orders

"""JudgeRanker over scripted judges on the plain call interface: both orders, position bias, verdicts,
failures and timeouts as reported ties, concurrency, usage, dedupe, strategy costs, async."""

from __future__ import annotations

import time

import numpy as np
import pytest

from blender_core.ranking.interface import Ranker
from blender_core.ranking.judge import JudgeRanker
from blender_core.ranking.judge.chat import CallableChat, ChatReply
from blender_core.ranking.judge.prompts import MT_BENCH_PAIR, MT_BENCH_SYSTEM, JudgePrompt, judge_messages
from blender_core.ranking.judge.verdict import parse_verdict
from tests.helpers.core_fakes import ScriptedJudge, always, judged_answers, prefers_longer
from tests.helpers.event_loop import ticking

Q = "Name a prime number."
FIVE = ["2", "seven", "three", "eleven!", "5."]  # lengths 1, 5, 5, 7, 2
BY_LENGTH = [3, 1, 2, 4, 0]  # a longest-first order (ties between "seven" and "three" aside)


def ordered(calls: list[tuple[str, str, str]]) -> set[tuple[str, str]]:
    return {(a, b) for _, a, b in calls}


# ---------------------------------------------------------------------------- verdicts and prompt
@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("A is right. [[A]]", "A"),
        ("[[B]]", "B"),
        ("Equally good: [[C]].", "C"),
        ('The format is "[[A]]" or "[[B]]". Final verdict: [[B]]', "B"),  # the last tag wins
        ("[[B]] at first, but on reflection [[A]]", "A"),
        ("Assistant A is better.", None),
        ("[A]", None),
        ("[[a]]", None),
        ("[[ A ]]", None),
        ("[[D]]", None),
        ("", None),
    ],
)
def test_the_verdict_is_the_last_exact_tag(reply: str, verdict: str | None) -> None:
    assert parse_verdict(reply) == verdict


def test_the_prompt_is_mt_bench_with_both_answers_verbatim() -> None:
    messages = judge_messages(MT_BENCH_PAIR, "What is {x}?", "x is {answer_b}", "B")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == MT_BENCH_SYSTEM
    assert '"[[A]]" if assistant A is better' in MT_BENCH_SYSTEM
    assert judged_answers(messages) == ("What is {x}?", "x is {answer_b}", "B")  # braces in texts stay as is
    own = JudgePrompt(system="", template="Q: {question}\nA: {answer_a}\nB: {answer_b}")
    assert judge_messages(own, "q", "a", "b") == [{"role": "user", "content": "Q: q\nA: a\nB: b"}]


@pytest.mark.parametrize(
    "template", ["{question} {answer_a}", "{question} {answer_a} {answer_b} {extra}", "{question} {answer_a} {answer_a}"]
)
def test_a_prompt_needs_each_field_once(template: str) -> None:
    with pytest.raises(ValueError, match=r"exactly once and no other field, got \["):
        JudgePrompt(template=template)


def test_bad_settings_say_what_was_received() -> None:
    with pytest.raises(TypeError, match=r"must be a JudgeChat .* got int"):
        JudgeRanker(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrency must be a positive int, got 0"):
        JudgeRanker(ScriptedJudge(), max_concurrency=0)
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds or None, got 0"):
        JudgeRanker(ScriptedJudge(), timeout=0)
    with pytest.raises(ValueError, match="unknown strategy 'best'"):
        JudgeRanker(ScriptedJudge()).rank([Q], [FIVE], strategy="best")
    with pytest.raises(TypeError, match="must be an async function"):
        CallableChat(lambda m: "[[A]]", acomplete=lambda m: "[[A]]")  # type: ignore[arg-type,return-value]


# ---------------------------------------------------------------------------- judging
def test_both_orders_are_asked_and_fill_the_matrix() -> None:
    judge = ScriptedJudge()
    ranker = JudgeRanker(judge)
    assert isinstance(ranker, Ranker)
    (r,) = ranker.rank([Q], [["2", "eleven"]])
    assert sorted(judge.calls) == [(Q, "2", "eleven"), (Q, "eleven", "2")]
    assert r.matrix is not None
    assert r.matrix.tolist() == [[0.0, -1.0], [1.0, 0.0]]  # M[i, j]: i as A; +1 A wins, -1 B wins
    assert (r.order, r.best, r.n_forward, r.issues) == ((1, 0), 1, 2, ())


def test_a_position_biased_judge_cancels_to_ties() -> None:
    judge = ScriptedJudge(always("[[A]]"))
    for aggregation in ("max_logits", "max_wins"):
        (r,) = JudgeRanker(judge).rank([Q], [FIVE], aggregation=aggregation)
        assert np.all(r.scores == r.scores[0])
        assert r.ranks.tolist() == [1] * 5
        assert r.issues == ()


@pytest.mark.parametrize("strategy", ["full", "sort"])
def test_a_judge_that_prefers_longer_answers_gives_that_order(strategy: str) -> None:
    (r,) = JudgeRanker(ScriptedJudge()).rank([Q], [FIVE], strategy=strategy)
    assert [len(FIVE[i]) for i in r.order] == [7, 5, 5, 2, 1]
    assert r.best == 3


@pytest.mark.parametrize("strategy", ["knockout", "bubble"])
def test_the_tournaments_find_the_longest(strategy: str) -> None:
    assert JudgeRanker(ScriptedJudge()).rank([Q], [FIVE], strategy=strategy, seed=3)[0].best == 3


def test_an_unparseable_verdict_is_a_reported_tie() -> None:
    def vague_about_a_short_first(a: str, b: str) -> str:
        return "Both have merit; A is shorter." if (a, b) == ("2", "eleven!") else prefers_longer(a, b)

    (r,) = JudgeRanker(ScriptedJudge(vague_about_a_short_first)).rank([Q], [["2", "eleven!"]])
    assert r.matrix is not None
    assert r.matrix.tolist() == [[0.0, 0.0], [1.0, 0.0]]
    assert r.issues == (
        "judge call with candidate 0 as A and 1 as B: no verdict ([[A]], [[B]] or [[C]]) in the reply "
        "'Both have merit; A is shorter.'; counted as a tie",
    )
    assert r.best == 1  # the readable order still decides


def test_a_failing_judge_gives_ties_and_issues_never_a_crash() -> None:
    (r,) = JudgeRanker(ScriptedJudge(error="judge down")).rank([Q], [["a", "bb", "ccc"]])
    assert r.scores.tolist() == [0.0, 0.0, 0.0]
    assert len(r.issues) == 6
    assert all(i.endswith("RuntimeError: judge down; counted as a tie") for i in r.issues)
    assert r.usage is None
    bad_type = JudgeRanker(CallableChat(lambda m: 42))  # type: ignore[arg-type,return-value]
    (r,) = bad_type.rank([Q], [["a", "bb"]])
    assert "TypeError: the judge returned a int; return a ChatReply(text, usage) or a str" in r.issues[0]


def test_a_judge_past_its_timeout_is_a_tie_within_about_the_timeout() -> None:
    judge = ScriptedJudge(delay=10.0)
    ranker = JudgeRanker(judge, timeout=0.3)
    start = time.perf_counter()
    (r,) = ranker.rank([Q], [["a", "bb", "ccc"]])
    assert 0.25 < time.perf_counter() - start < 1.5
    assert len(r.issues) == 6
    assert all("TimeoutError: no answer within 0.3 s; counted as a tie" in i for i in r.issues)
    judge.release()


def test_a_hung_judge_is_skipped_once_it_holds_max_stuck_calls_then_asked_again() -> None:
    judge = ScriptedJudge(delay=10.0)
    ranker = JudgeRanker(judge, timeout=0.3, max_concurrency=4, max_stuck_calls=4)  # the 4 first-round calls may all hang
    start = time.perf_counter()
    (r,) = ranker.rank([Q], [["a", "bb", "ccc", "dddd"]], strategy="knockout")
    assert time.perf_counter() - start < 1.5  # the final's round is skipped, not waited for
    assert len(judge.calls) == 4  # the two first-round matches, both orders
    assert sum("TimeoutError" in i for i in r.issues) == 4
    assert sum("skipped without calling it" in i for i in r.issues) == 2
    judge.release()  # the stuck calls end; the judge is asked again
    judge.delay = 0.0
    deadline = time.perf_counter() + 3.0
    while (r := ranker.rank([Q], [["a", "bb"]])[0]).issues and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert (r.issues, r.best) == ((), 1)


def test_calls_run_concurrently_up_to_max_concurrency() -> None:
    judge = ScriptedJudge(delay=0.05)
    start = time.perf_counter()
    JudgeRanker(judge, max_concurrency=3).rank([Q], [FIVE])
    elapsed = time.perf_counter() - start
    assert len(judge.calls) == 20
    assert judge.max_active == 3
    assert elapsed < 20 * 0.05 * 0.75, elapsed  # far from one call at a time


def test_usage_is_summed_per_prompt() -> None:
    rankings = JudgeRanker(ScriptedJudge(usage=(10, 2))).rank(["q1", "q2"], [["a", "bb", "ccc"], ["x", "yy"]])
    assert [dict(r.usage or {}) for r in rankings] == [
        {"input_tokens": 60, "output_tokens": 12, "total_tokens": 72},
        {"input_tokens": 20, "output_tokens": 4, "total_tokens": 24},
    ]
    (silent,) = JudgeRanker(ScriptedJudge(usage=None)).rank([Q], [["a", "bb"]])
    assert silent.usage is None


def test_identical_comparisons_are_asked_once() -> None:
    judge = ScriptedJudge(usage=(10, 2))
    rankings = JudgeRanker(judge).rank([Q, Q], [["a", "bb", "ccc"], ["a", "bb", "ccc"]])
    assert len(judge.calls) == 6  # one prompt's worth
    assert rankings[0].order == rankings[1].order == (2, 1, 0)
    assert rankings[0].usage is not None
    assert rankings[0].usage["total_tokens"] == 72  # each call is charged once, to the first prompt
    assert rankings[1].usage is None

    judge = ScriptedJudge()
    (r,) = JudgeRanker(judge).rank([Q], [["a", "bb", "a"]])
    assert sorted(judge.calls) == [(Q, "a", "bb"), (Q, "bb", "a")]  # a vs a: a tie without a call
    assert r.n_forward == 6
    assert r.best == 1


@pytest.mark.parametrize(("strategy", "cost"), [("knockout", 8), ("bubble", 8), ("full", 20)])
def test_judge_calls_per_strategy_for_five_candidates(strategy: str, cost: int) -> None:
    judge = ScriptedJudge()
    (r,) = JudgeRanker(judge).rank([Q], [FIVE], strategy=strategy)
    assert len(judge.calls) == len(set(judge.calls)) == r.n_forward == cost
    assert all((b, a) in ordered(judge.calls) for a, b in ordered(judge.calls))  # every pair both ways


def test_best_of_5_costs_eight_judge_calls() -> None:
    judge = ScriptedJudge()
    assert JudgeRanker(judge).best_of_n([Q], [FIVE]) == [3]
    assert len(judge.calls) == 2 * (5 - 1)


def test_a_single_candidate_needs_no_call() -> None:
    judge = ScriptedJudge()
    for strategy in ("full", "knockout", "bubble", "sort"):
        (r,) = JudgeRanker(judge).rank([Q], [["only"]], strategy=strategy)
        assert (r.best, r.ranks.tolist(), r.usage, r.issues) == (0, [1], None, ())
    assert judge.calls == []


def test_a_plain_function_is_a_judge() -> None:
    def judge(messages: list[dict[str, str]]) -> ChatReply:
        _, a, b = judged_answers(messages)
        return ChatReply(prefers_longer(a, b), {"input_tokens": 1, "output_tokens": 1})

    ranker = JudgeRanker(judge)
    assert ranker.name == "judge:judge"
    (r,) = ranker.rank([Q], [["a", "bbb", "cc"]])
    assert (r.order, dict(r.usage or {})) == ((1, 2, 0), {"input_tokens": 6, "output_tokens": 6, "total_tokens": 12})


# ---------------------------------------------------------------------------- async
@pytest.mark.parametrize("strategy", ["full", "knockout", "bubble", "sort"])
async def test_arank_gives_the_same_rankings_through_acomplete(strategy: str) -> None:
    prompts, cands = [Q, "Say hi."], [FIVE, ["hi", "hello", "hey"]]
    sync_judge, async_judge = ScriptedJudge(), ScriptedJudge()
    expected = JudgeRanker(sync_judge).rank(prompts, cands, strategy=strategy, seed=1)
    got = await JudgeRanker(async_judge).arank(prompts, cands, strategy=strategy, seed=1)
    for e, g in zip(expected, got, strict=True):
        assert (g.order, g.scores.tolist(), g.ranks.tolist(), g.issues) == (
            e.order, e.scores.tolist(), e.ranks.tolist(), e.issues
        )
        assert dict(g.usage or {}) == dict(e.usage or {})
        assert (g.matrix is None and e.matrix is None) or np.array_equal(g.matrix, e.matrix)  # type: ignore[arg-type]
    assert sorted(async_judge.calls) == sorted(sync_judge.calls)
    assert async_judge.async_calls == len(async_judge.calls) > 0


async def test_arank_bounds_concurrency_and_times_out() -> None:
    judge = ScriptedJudge(delay=0.05)
    await JudgeRanker(judge, max_concurrency=3).arank([Q], [FIVE])
    assert (len(judge.calls), judge.max_active) == (20, 3)

    slow = ScriptedJudge(delay=10.0)
    start = time.perf_counter()
    (r,) = await JudgeRanker(slow, timeout=0.3).arank([Q], [["a", "bb", "ccc"]])
    assert time.perf_counter() - start < 1.5
    assert len(r.issues) == 6
    assert all("TimeoutError: no answer within 0.3 s" in i for i in r.issues)


async def test_arank_runs_a_sync_only_judge_in_threads_without_blocking_the_loop() -> None:
    def slow(messages: list[dict[str, str]]) -> str:
        time.sleep(0.3)
        _, a, b = judged_answers(messages)
        return prefers_longer(a, b)

    async with ticking(0.02) as ticks:
        start = time.perf_counter()
        (r,) = await JudgeRanker(CallableChat(slow)).arank([Q], [["a", "bb", "ccc"]])
        elapsed = time.perf_counter() - start
    assert r.order == (2, 1, 0)
    assert elapsed < 1.0  # six calls of 0.3 s at once
    assert ticks.count >= 5  # the loop kept running meanwhile
    (late,) = await JudgeRanker(CallableChat(slow), timeout=0.1).arank([Q], [["a", "bb"]])
    assert len(late.issues) == 2


async def test_arank_reports_a_failing_judge() -> None:
    (r,) = await JudgeRanker(ScriptedJudge(error="judge down")).arank([Q], [["a", "bb"]])
    assert r.scores.tolist() == [0.0, 0.0]
    assert all(i.endswith("RuntimeError: judge down; counted as a tie") for i in r.issues)

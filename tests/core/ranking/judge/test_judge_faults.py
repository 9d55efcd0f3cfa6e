"""A hung judge holds at most ``max_stuck_calls`` threads, as its skip message says, however the calls of a
ranking are scheduled (one call timing out frees a slot that another call would take)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from blender_core.ranking.judge import JudgeRanker
from blender_core.ranking.judge.chat import CallableChat
from tests.helpers.core_fakes import ScriptedJudge

Q = "Name a prime number."
SIX = ["2", "seven", "three", "eleven!", "5.", "thirteen"]


def judge_threads() -> int:
    return sum(t.name.startswith("blender-judge") and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize(("max_concurrency", "max_stuck_calls"), [(8, 8), (2, 4), (1, 3)])
def test_a_hung_judge_holds_at_most_max_stuck_calls_threads(max_concurrency: int, max_stuck_calls: int) -> None:
    judge = ScriptedJudge(delay=30.0)
    ranker = JudgeRanker(judge, timeout=0.2, max_concurrency=max_concurrency, max_stuck_calls=max_stuck_calls)
    before = judge_threads()
    try:
        for _ in range(2):
            (r,) = ranker.rank([Q], [SIX])  # 30 calls, all hanging
            assert len(r.issues) == 30
            assert judge_threads() - before <= max_stuck_calls
        skipped = [i for i in r.issues if "skipped without calling it" in i]
        assert f"(at most {max_stuck_calls}" in skipped[0]
    finally:
        judge.release()


async def test_the_async_ranking_holds_at_most_max_stuck_calls_threads() -> None:
    release = threading.Event()
    chat = CallableChat(lambda messages: release.wait(30) and "[[A]]", name="hung")
    ranker = JudgeRanker(chat, timeout=0.2, max_concurrency=2, max_stuck_calls=3)
    before = judge_threads()
    try:
        for _ in range(2):
            (r,) = await asyncio.wait_for(ranker.arank([Q], [SIX]), 20)
            assert len(r.issues) == 30
            assert judge_threads() - before <= 3
    finally:
        release.set()


def test_a_bound_below_the_calls_in_flight_is_refused() -> None:
    with pytest.raises(ValueError, match=r"max_stuck_calls \(2\) must be >= max_concurrency \(4\)"):
        JudgeRanker(ScriptedJudge(), max_concurrency=4, max_stuck_calls=2)

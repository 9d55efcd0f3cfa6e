"""The engine under faults: hung backends (threads bounded, no starvation, the process still exits),
blocking calls from async code, a fuser that stalls mid-answer, empty answers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from blender_core.base.threads import BackendThreads
from blender_core.ensemble import (
    BackendAnswer,
    Blocking,
    Delta,
    Ensemble,
    EnsembleConfig,
    EnsembleError,
    EnsembleOutcome,
    acall_backends,
    call_backends,
)
from tests.helpers.core_fakes import LengthRanker, ScriptedFuser, aanswering, answering
from tests.helpers.event_loop import ticking


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of a test: the hung calls return, so no thread outlives the test for long."""
    event = threading.Event()
    yield event
    event.set()


def hanging(release: threading.Event) -> Callable[[], BackendAnswer]:
    def call() -> BackendAnswer:
        release.wait(60)
        return BackendAnswer("too late")

    return call


def backend_threads() -> int:
    return sum(t.name.startswith("blender-backend") for t in threading.enumerate())


def engine(fuser: ScriptedFuser | None = None, **settings: object) -> Ensemble:
    return Ensemble(LengthRanker(), fuser, EnsembleConfig(**settings))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- hung backends
def test_a_hung_backend_holds_a_bounded_number_of_threads(release: threading.Event) -> None:
    e = engine(timeout=0.5, max_stuck_calls=2)
    before = backend_threads()
    outcomes = [e.run("q", {"hang": hanging(release), "ok": answering("fine")}) for _ in range(50)]
    assert all(o.text == "fine" for o in outcomes)
    assert backend_threads() - before <= 2  # not 50
    errors = [o.records[0].error for o in outcomes]
    assert errors[:2] == ["TimeoutError: no answer within 0.5 s"] * 2
    assert all(err is not None and err.startswith("BackendStuck: skipped without calling it: 2 earlier call(s)") for err in errors[2:])
    assert e.threads.stuck("hang") == 2
    release.set()  # the stuck calls end (late): the backend is called again
    deadline = time.monotonic() + 5
    while e.threads.stuck("hang") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert e.threads.stuck("hang") == 0
    assert e.run("q", {"hang": answering("back, and longer"), "ok": answering("fine")}).text == "back, and longer"


def test_a_hung_backend_does_not_starve_the_others_under_max_concurrency(release: threading.Event) -> None:
    start = time.perf_counter()
    records = call_backends(
        {"hang": hanging(release), "ok1": answering("one", delay=0.1), "ok2": answering("two", delay=0.1)},
        timeout=0.5,
        max_concurrency=1,
    )
    elapsed = time.perf_counter() - start
    assert [r.error for r in records] == ["TimeoutError: no answer within 0.5 s", None, None]
    assert [r.answer.text for r in records[1:] if r.answer] == ["one", "two"]
    assert all(r.latency_s < 0.3 for r in records[1:])  # waiting for the slot is not charged
    assert elapsed < 1.2  # 0.5 (the hung one's timeout) + 0.1 + 0.1, not 3 x 0.5


async def test_async_queueing_is_not_charged_and_blocking_calls_run_in_threads(release: threading.Event) -> None:
    slow = Blocking(answering("blocking but fine", delay=0.3))
    start = time.perf_counter()
    records = await acall_backends(
        {"a": aanswering("x", delay=0.3), "b": slow, "hang": Blocking(hanging(release)), "c": aanswering("y", delay=0.3)},
        timeout=0.5,
        max_concurrency=2,
    )
    assert [r.error for r in records] == [None, None, "TimeoutError: no answer within 0.5 s", None]
    assert records[1].answer is not None
    assert records[1].answer.text == "blocking but fine"
    assert all(r.latency_s < 0.45 for r in (records[0], records[1], records[3]))
    assert time.perf_counter() - start < 1.5


async def test_a_blocking_call_does_not_freeze_the_event_loop() -> None:
    async with ticking(0.02) as ticks:
        outcome = await engine(timeout=2).arun("q", {"blocking": Blocking(answering("slow answer", delay=0.4))})
    assert outcome.text == "slow answer"
    assert ticks.count >= 10


def test_the_process_exits_although_a_backend_hangs_forever(tmp_path: object) -> None:
    script = textwrap.dedent(
        """
        import time
        from blender_core.ensemble import BackendAnswer, Ensemble
        from tests.helpers.core_fakes import LengthRanker

        def hang():
            time.sleep(3600)
            return BackendAnswer("never")

        engine = Ensemble(LengthRanker(), timeout=0.2)
        outcome = engine.run("q", {"hang": hang, "ok": lambda: BackendAnswer("done")})
        print(outcome.text, outcome.records[0].error)
        """
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False, cwd=_repo_root()
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done TimeoutError: no answer within 0.2 s"
    assert time.monotonic() - start < 30  # a non-daemon thread would keep it alive for an hour


def _repo_root() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[3])


def test_stuck_counts_across_threads_are_exact() -> None:
    threads = BackendThreads(max_stuck=1)
    gate = threading.Event()
    job = threads.start("b", lambda: gate.wait(5))
    threads.abandon(job)
    assert threads.stuck("b") == 1
    assert threads.refuses("b") is not None
    gate.set()
    job.done.wait(5)
    time.sleep(0.05)
    assert threads.stuck("b") == 0
    assert threads.refuses("b") is None
    done = threads.start("b", lambda: 1)
    done.done.wait(5)
    threads.abandon(done)  # abandoning a finished job counts nothing
    assert threads.stuck("b") == 0


# ---------------------------------------------------------------------------- a fuser that stalls
def test_a_fuser_that_stalls_mid_answer_ends_the_stream_at_the_deadline() -> None:
    e = engine(ScriptedFuser(stall_after_first=30), timeout=5, fusion_timeout=0.4, top_k=2)
    start = time.perf_counter()
    events = list(e.stream("q", {"a": answering("alpha beta"), "b": answering("gamma delta epsilon")}))
    assert time.perf_counter() - start < 2.0
    *pieces, last = events
    assert [p.text for p in pieces if isinstance(p, Delta)] == ["gamma"]
    assert isinstance(last, EnsembleOutcome)
    assert last.blend.fused
    assert last.text == "gamma"
    assert last.blend.fuser_error == "StreamDeadline: the stream passed its 0.4 s deadline and was stopped; the answer is cut there"


def test_run_falls_back_when_the_fuser_stalls_and_the_deadline_defaults_to_the_timeout() -> None:
    e = engine(ScriptedFuser(stall_after_first=30), timeout=0.4, top_k=2)
    assert e.config.fusion_deadline == 0.4
    start = time.perf_counter()
    outcome = e.run("q", {"a": answering("alpha beta"), "b": answering("gamma delta epsilon")})
    assert time.perf_counter() - start < 2.0
    assert (outcome.text, outcome.blend.fused) == ("gamma delta epsilon", False)
    assert outcome.blend.fuser_error is not None
    assert outcome.blend.fuser_error.startswith("StreamDeadline: the stream passed its 0.4 s deadline")


async def test_async_stalled_fuser_is_cut_too() -> None:
    e = engine(ScriptedFuser(stall_after_first=30), timeout=5, fusion_timeout=0.4, top_k=2)
    calls = {"a": aanswering("alpha beta"), "b": aanswering("gamma delta epsilon")}
    start = time.perf_counter()
    events = [ev async for ev in e.astream("q", calls)]
    assert time.perf_counter() - start < 2.0
    assert isinstance(events[-1], EnsembleOutcome)
    assert events[-1].text == "gamma"
    fell_back = await e.arun("q", calls)
    assert (fell_back.text, fell_back.blend.fused) == ("gamma delta epsilon", False)


# ---------------------------------------------------------------------------- empty answers
def test_empty_answers_are_failures_not_candidates() -> None:
    outcome = engine().run("q", {"empty": answering(""), "blank": answering(" \n "), "ok": answering("an answer")})
    assert outcome.text == "an answer"
    errors = [r.error for r in outcome.records]
    assert errors == [
        "EmptyAnswerError: the backend answered with empty text (nothing to rank or fuse)",
        "EmptyAnswerError: the backend answered with empty text (nothing to rank or fuse)",
        None,
    ]
    with pytest.raises(EnsembleError, match=r"only 0 of 2 backends answered.*EmptyAnswerError"):
        engine().run("q", {"empty": answering(""), "blank": answering("  ")})
    tool_call = BackendAnswer("", rank_text="add(1, 2)")  # no text, but a tool call to rank: an answer
    assert engine().run("q", {"tool": lambda: tool_call}).best.backend == "tool"


def test_config_refuses_bad_deadlines() -> None:
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fusion_timeout must be a positive, finite number"):
            EnsembleConfig(fusion_timeout=bad)
    with pytest.raises(ValueError, match="max_stuck_calls must be an int >= 1"):
        EnsembleConfig(max_stuck_calls=0)

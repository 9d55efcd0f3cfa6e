"""The engine's sinks: every answered request reaches each sink once, whole or streamed, sync or async; a
failed request reaches none; a sink that raises never fails the request."""

from __future__ import annotations

import asyncio
import logging

import pytest

from blender_core.ensemble import EnsembleError, EnsembleOutcome
from blender_core.ensemble.engine import Ensemble
from blender_core.ensemble.sinks import Answered
from tests.helpers.core_fakes import LengthRanker, ScriptedFuser, aanswering, answering, failing

CHAT = [{"role": "user", "content": "2 + 2?"}]


def calls() -> dict[str, object]:
    return {"short": answering("four"), "long": answering("it is four, 2 + 2"), "down": failing("no")}


def acalls() -> dict[str, object]:
    return {"short": aanswering("four"), "long": aanswering("it is four, 2 + 2")}


def test_run_hands_the_answered_request_to_every_sink() -> None:
    first: list[Answered] = []
    second: list[Answered] = []
    engine = Ensemble(LengthRanker(), sinks=[first.append, second.append])
    outcome = engine.run("2 + 2?", calls(), messages=CHAT)
    assert len(first) == len(second) == 1
    got = first[0]
    assert got is second[0]
    assert got.outcome is outcome
    assert (got.prompt, got.messages, got.ranker) == ("2 + 2?", tuple(CHAT), "length")
    assert got.outcome.best.backend == "long"
    assert [r.backend for r in got.outcome.records] == ["short", "long", "down"]
    assert got.time > 0


def test_the_fused_outcome_reaches_the_sink_from_a_stream() -> None:
    seen: list[Answered] = []
    engine = Ensemble(LengthRanker(), ScriptedFuser(), top_k=2, sinks=[seen.append])
    events = list(engine.stream("2 + 2?", calls()))
    assert isinstance(events[-1], EnsembleOutcome)
    assert len(seen) == 1
    assert seen[0].outcome is events[-1]
    assert seen[0].outcome.blend.fused
    assert seen[0].outcome.text == "".join(e.text for e in events[:-1])
    assert seen[0].messages is None  # none given


async def test_async_calls_reach_the_sinks_too() -> None:
    seen: list[Answered] = []
    engine = Ensemble(LengthRanker(), ScriptedFuser(), top_k=2, sinks=[seen.append])
    outcome = await engine.arun("2 + 2?", acalls(), messages=CHAT)
    events = [e async for e in engine.astream("2 + 2?", acalls())]
    assert [a.outcome for a in seen] == [outcome, events[-1]]


def test_a_failed_request_reaches_no_sink() -> None:
    seen: list[Answered] = []
    engine = Ensemble(LengthRanker(), min_successes=2, sinks=[seen.append])
    with pytest.raises(EnsembleError):
        engine.run("q", {"ok": answering("a"), "bad": failing("no")})
    assert seen == []


def test_a_sink_that_raises_never_fails_the_request_and_is_logged_once_per_burst(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[Answered] = []
    broken = {"on": True}

    def flaky(answered: Answered) -> None:
        if broken["on"]:
            raise OSError(28, "No space left on device")

    engine = Ensemble(LengthRanker(), sinks=[flaky, seen.append])
    with caplog.at_level(logging.WARNING, logger="blender_core.ensemble.sinks"):
        for _ in range(3):
            assert engine.run("2 + 2?", calls()).text == "it is four, 2 + 2"
        broken["on"] = False
        engine.run("2 + 2?", calls())
    assert engine.sinks.errors == 3
    assert len(seen) == 4  # the sink after the failing one still gets every request
    failures = [r for r in caplog.records if "failed: OSError" in r.getMessage()]
    assert len(failures) == 1
    assert "works again after 3 failed calls" in caplog.text


async def test_a_sink_that_raises_never_fails_a_stream() -> None:
    def broken(answered: Answered) -> None:
        raise RuntimeError("boom")

    engine = Ensemble(LengthRanker(), sinks=[broken])
    events = [e async for e in engine.astream("2 + 2?", acalls())]
    assert events[-1].text == "it is four, 2 + 2"
    assert engine.sinks.errors == 1


def test_a_sink_must_be_callable() -> None:
    # a sink of this test's own: `print` may be patched by the time this runs (Ray wraps it in its drivers)
    def sink(answered: object) -> None: ...

    with pytest.raises(TypeError, match=r"sinks\[1\] is a str, not callable"):
        Ensemble(LengthRanker(), sinks=[sink, "traffic/"])
    with pytest.raises(TypeError, match=r"got a single function; pass sinks=\[sink\]"):
        Ensemble(LengthRanker(), sinks=sink)  # type: ignore[arg-type]


def test_no_sink_costs_nothing_and_changes_nothing() -> None:
    engine = Ensemble(LengthRanker())
    assert len(engine.sinks) == 0
    assert asyncio.run(engine.arun("q", acalls())).best.backend == "long"

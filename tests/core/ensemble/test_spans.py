"""The engine's OpenTelemetry spans, caught by the SDK's in-memory exporter on a provider of each test's own:
the tree and its attributes for a whole, a streamed, a failing-backend and an adaptive request (cascade,
quorum, samples, layers), sync and async; spans under the caller's span and the backends', ranker's and
fuser's own spans under the engine's; no prompt or answer text unless ``trace_content`` is on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode

from blender_core.ensemble import (
    BackendAnswer,
    BackendRequest,
    BackendSettings,
    Blocking,
    Delta,
    Ensemble,
    EnsembleError,
    EnsembleOutcome,
)
from blender_core.ensemble.spans import NO_SPANS, request_spans
from blender_core.observability.tracing import get_tracer
from tests.helpers.core_fakes import LengthRanker, ScriptedFuser, aanswering, afailing, answering, failing
from tests.helpers.tracing import Traced, by_backend, is_child

PROMPT = "What is two plus two? (secret prompt)"
U = {"input_tokens": 10, "output_tokens": 3}


@pytest.fixture
def traced() -> Traced:
    return Traced()


def engine(traced: Traced, fuser: Any = None, ranker: Any = None, **settings: Any) -> Ensemble:
    backends = settings.pop("backends", None)
    return Ensemble(
        ranker or LengthRanker(), fuser, backends=backends, tracer_provider=traced.provider, **settings
    )


def three() -> dict[str, Callable[[], BackendAnswer]]:
    return {"a": answering("4", usage=U), "b": answering("four", usage=U), "c": answering("it is 4", usage=U)}


def assert_no_text(traced: Traced, *texts: str) -> None:
    for span in traced.spans:
        for value in (span.attributes or {}).values():
            for text in texts:
                assert text not in str(value), (span.name, value)


# ------------------------------------------------------------------------------- a whole request
def test_a_request_is_one_span_with_a_child_per_call_the_ranking_and_the_fusion(traced: Traced) -> None:
    e = engine(traced, ScriptedFuser(usage=(7, 5)), top_k=2)
    with traced.parent() as app:
        outcome = e.run(PROMPT, three())
    request = traced.one("chat blender-llm")
    assert request.parent is not None
    assert request.parent.span_id == app.get_span_context().span_id
    assert traced.child_names(request) == ["blender.fuse", "blender.rank", "chat a", "chat b", "chat c"]
    assert {s.context.trace_id for s in traced.spans} == {app.get_span_context().trace_id}

    attrs = request.attributes or {}
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "blender_llm"
    assert attrs["blender.best"] == outcome.best.backend == "c"  # the longest
    assert list(attrs["blender.chosen"]) == ["c", "b"]
    assert attrs["blender.fused"] is True
    assert attrs["blender.margin"] == pytest.approx(len("it is 4") - len("four"))
    assert attrs["gen_ai.usage.input_tokens"] == 3 * 10 + 7  # the backends' and the fuser's
    assert attrs["gen_ai.usage.output_tokens"] == 3 * 3 + 5
    assert request.kind is SpanKind.INTERNAL
    assert request.status.status_code is StatusCode.UNSET

    calls = by_backend(traced.spans)
    assert calls["c"].name == "chat c"
    assert calls["c"].kind is SpanKind.CLIENT
    ranks = {name: (s.attributes or {})["blender.rank"] for name, s in calls.items()}
    assert ranks == {"c": 1, "b": 2, "a": 3}
    c, b, a = ((calls[n].attributes or {}) for n in "cba")
    assert c["blender.score"] == 7.0
    assert c["blender.margin"] == 3.0
    assert c["blender.chosen"] is True
    assert b["blender.margin"] == 3.0
    assert a["blender.chosen"] is False
    assert "blender.margin" not in a
    assert c["gen_ai.request.model"] == "c"
    assert c["gen_ai.usage.input_tokens"] == 10
    assert (c["blender.tier"], c["blender.layer"], c["blender.sample"]) == (1, 1, 1)

    fuse = traced.one("blender.fuse")
    assert (fuse.attributes or {})["blender.fuser"] == "scripted"
    assert (fuse.attributes or {})["gen_ai.usage.output_tokens"] == 5
    rank = traced.one("blender.rank")
    assert (rank.attributes or {})["blender.ranker"] == "length"
    assert (rank.attributes or {})["blender.candidates"] == 3
    # the request spans its children
    assert request.start_time <= min(s.start_time for s in traced.children(request))
    assert request.end_time >= max(s.end_time for s in traced.children(request))
    assert_no_text(traced, "secret prompt", "it is 4")


def test_a_streamed_request_ends_its_span_after_the_last_piece(traced: Traced) -> None:
    e = engine(traced, ScriptedFuser(), top_k=2)
    with traced.parent() as app:
        events = e.stream(PROMPT, three())
        first = next(events)
        assert isinstance(first, Delta)
        assert traced.named("chat blender-llm") == []  # still streaming: not ended
        *_, last = events
    assert isinstance(last, EnsembleOutcome)
    request = traced.one("chat blender-llm")
    assert is_child(request, traced.one("app"))
    assert app is not None
    assert traced.child_names(request) == ["blender.fuse", "blender.rank", "chat a", "chat b", "chat c"]
    fuse = traced.one("blender.fuse")
    assert (fuse.attributes or {})["blender.first_token_s"] >= 0
    assert (request.attributes or {})["blender.fused"] is True


def test_a_stream_the_caller_stops_reading_ends_its_spans_without_an_error(traced: Traced) -> None:
    e = engine(traced, ScriptedFuser(), top_k=2)
    events = e.stream(PROMPT, three())
    next(events)
    events.close()
    request = traced.one("chat blender-llm")
    assert (request.attributes or {})["blender.abandoned"] is True
    assert request.status.status_code is StatusCode.UNSET
    assert len(traced.named("blender.fuse")) == 1


def test_without_fusion_there_is_no_fusion_span(traced: Traced) -> None:
    engine(traced).run(PROMPT, three())
    assert traced.child_names(traced.one("chat blender-llm")) == ["blender.rank", "chat a", "chat b", "chat c"]
    assert (traced.one("chat blender-llm").attributes or {})["blender.fused"] is False


# ------------------------------------------------------------------------------- failures
def test_a_failing_backend_has_an_error_span_and_the_request_does_not(traced: Traced) -> None:
    calls = {"a": answering("4"), "b": answering("four"), "down": failing("503 from upstream")}
    engine(traced).run(PROMPT, calls)
    down = by_backend(traced.spans)["down"]
    assert down.status.status_code is StatusCode.ERROR
    assert down.status.description == "RuntimeError: 503 from upstream"
    assert (down.attributes or {})["error.type"] == "RuntimeError"
    assert "blender.rank" not in (down.attributes or {})
    request = traced.one("chat blender-llm")
    assert request.status.status_code is StatusCode.UNSET
    assert (request.attributes or {})["blender.answered"] == 2


def test_a_timed_out_backend_is_an_error_of_type_timeout_ended_at_its_timeout(traced: Traced) -> None:
    calls = {"a": answering("4"), "slow": answering("late", delay=1.0)}
    engine(traced, timeout=0.2).run(PROMPT, calls)
    slow = by_backend(traced.spans)["slow"]
    assert (slow.attributes or {})["error.type"] == "TimeoutError"
    assert 0.15 < (slow.end_time - slow.start_time) / 1e9 < 0.8


def test_a_request_that_fails_has_an_error_span(traced: Traced) -> None:
    with pytest.raises(EnsembleError):
        engine(traced, min_successes=2).run(PROMPT, {"a": answering("4"), "b": failing("down")})
    request = traced.one("chat blender-llm")
    assert request.status.status_code is StatusCode.ERROR
    assert (request.attributes or {})["error.type"] == "EnsembleError"
    assert [e.name for e in request.events] == ["exception"]
    assert len(by_backend(traced.spans)) == 2  # the calls' spans ended too


def test_a_failing_fuser_has_an_error_span_and_the_request_falls_back(traced: Traced) -> None:
    outcome = engine(traced, ScriptedFuser(fail_before="fuser down")).run(PROMPT, three())
    assert not outcome.blend.fused
    fuse = traced.one("blender.fuse")
    assert fuse.status.status_code is StatusCode.ERROR
    assert (fuse.attributes or {})["error.type"] == "RuntimeError"
    request = traced.one("chat blender-llm")
    assert request.status.status_code is StatusCode.UNSET
    assert (request.attributes or {})["blender.fused"] is False


# ------------------------------------------------------------------------------- adaptive requests
class RewardLike(LengthRanker):
    absolute_scores = True


TIERS = {"small": BackendSettings(tier=1), "medium": BackendSettings(tier=1), "large": BackendSettings(tier=2)}


def tiered() -> dict[str, Callable[[], BackendAnswer]]:
    return {"small": answering("4"), "medium": answering("four"), "large": answering("four, exactly")}


def test_a_cascade_shows_each_tier_its_rankings_and_its_acceptance_checks(traced: Traced) -> None:
    e = engine(traced, ranker=RewardLike(), backends=TIERS, accept_score=10.0)  # "four" (4) is not accepted
    e.run(PROMPT, tiered())
    request = traced.one("chat blender-llm")
    assert traced.child_names(request) == [
        "blender.accept", "blender.rank", "blender.rank", "chat large", "chat medium", "chat small"
    ]
    calls = by_backend(traced.spans)
    assert {n: (s.attributes or {})["blender.tier"] for n, s in calls.items()} == {"small": 1, "medium": 1, "large": 2}
    accept = traced.one("blender.accept")
    assert (accept.attributes or {})["blender.accepted"] is False
    assert (accept.attributes or {})["blender.tier"] == 1
    tiers = sorted((s.attributes or {})["blender.tier"] for s in traced.named("blender.rank"))
    assert tiers == [1, 2]
    assert (calls["large"].attributes or {})["blender.rank"] == 1  # the last ranking's ranks
    assert list((request.attributes or {})["blender.tiers"]) == [1, 2]
    assert (request.attributes or {})["blender.stop"] == "the last tier answered"


def test_an_accepted_tier_stops_the_cascade_and_says_so(traced: Traced) -> None:
    engine(traced, ranker=RewardLike(), backends=TIERS, accept_score=3.0).run(PROMPT, tiered())
    assert (traced.one("blender.accept").attributes or {})["blender.accepted"] is True
    assert "large" not in by_backend(traced.spans)
    assert (traced.one("chat blender-llm").attributes or {})["blender.stop"] == "tier 1 accepted"


@pytest.mark.parametrize("run", ["sync", "async"])
def test_a_call_cancelled_by_a_quorum_is_marked_cancelled_not_failed(traced: Traced, run: str) -> None:
    e = engine(traced, quorum=2, timeout=10)
    if run == "sync":
        e.run(PROMPT, {"a": answering("4"), "b": answering("four"), "slow": answering("late", delay=2.0)})
    else:
        calls = {"a": aanswering("4"), "b": aanswering("four"), "slow": aanswering("late", delay=2.0)}
        asyncio.run(e.arun(PROMPT, calls))
    slow = by_backend(traced.spans)["slow"]
    assert (slow.attributes or {})["blender.cancelled"] is True
    assert (slow.attributes or {})["blender.cancel_reason"] == "a quorum of 2 answers was reached"
    assert slow.status.status_code is StatusCode.UNSET
    assert "error.type" not in (slow.attributes or {})
    assert (slow.end_time - slow.start_time) / 1e9 < 1.5  # ended at the cancellation, not the answer
    assert (traced.one("chat blender-llm").attributes or {})["blender.cancelled_calls"] == 1


def sampled(request: BackendRequest) -> BackendAnswer:
    return BackendAnswer("x" * request.sample)


def test_samples_are_one_span_each_with_their_sample_and_seed(traced: Traced) -> None:
    e = engine(traced, backends={"a": BackendSettings(samples=3)})
    e.run(PROMPT, {"a": sampled, "b": answering("yy")})
    calls = by_backend(traced.spans)
    assert sorted(calls) == ["a#1", "a#2", "a#3", "b"]
    a2 = calls["a#2"].attributes or {}
    assert (a2["blender.sample"], a2["gen_ai.request.seed"], a2["gen_ai.request.model"]) == (2, 2, "a")
    assert calls["a#2"].name == "chat a"
    assert (calls["a#3"].attributes or {})["blender.rank"] == 1


def test_layers_are_one_span_per_call_of_each_layer(traced: Traced) -> None:
    e = engine(traced, layers=2, top_k=1)
    e.run(PROMPT, {"a": sampled, "b": sampled})
    calls = [s.attributes or {} for s in traced.spans if "blender.backend" in (s.attributes or {})]
    layers = sorted((a["blender.backend"], a["blender.layer"]) for a in calls)
    assert layers == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert sorted((s.attributes or {})["blender.layer"] for s in traced.named("blender.rank")) == [1, 2]


# ------------------------------------------------------------------------------- context propagation
def opening(traced: Traced, text: str, seen: list[Any]) -> Callable[[], BackendAnswer]:
    """A sync backend that opens its own span (as an instrumented HTTP client would)."""

    def call() -> BackendAnswer:
        with traced.provider.get_tracer("http").start_as_current_span(f"POST {text}"):
            seen.append(threading.current_thread().name)
        return BackendAnswer(text)

    return call


def aopening(traced: Traced, text: str) -> Callable[[], Awaitable[BackendAnswer]]:
    async def call() -> BackendAnswer:
        with traced.provider.get_tracer("http").start_as_current_span(f"POST {text}"):
            await asyncio.sleep(0)
        return BackendAnswer(text)

    return call


def test_a_backends_own_spans_nest_under_its_call_span_in_its_thread(traced: Traced) -> None:
    seen: list[str] = []
    engine(traced).run(PROMPT, {"a": opening(traced, "4", seen), "b": opening(traced, "four", seen)})
    assert all(name.startswith("blender-backend") for name in seen)  # ran in the engine's threads
    calls = by_backend(traced.spans)
    assert is_child(traced.one("POST 4"), calls["a"])
    assert is_child(traced.one("POST four"), calls["b"])


async def test_async_and_blocking_backends_spans_nest_under_their_call_spans(traced: Traced) -> None:
    seen: list[str] = []
    calls = {"a": aopening(traced, "4"), "b": Blocking(opening(traced, "four", seen))}
    with traced.parent() as app:
        await engine(traced).arun(PROMPT, calls)
    spans = by_backend(traced.spans)
    assert is_child(traced.one("POST 4"), spans["a"])
    assert is_child(traced.one("POST four"), spans["b"])
    request = traced.one("chat blender-llm")
    assert request.parent is not None
    assert request.parent.span_id == app.get_span_context().span_id


class TracingRanker(LengthRanker):
    def __init__(self, traced: Traced) -> None:
        super().__init__()
        self.traced = traced

    def rank(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]], **kwargs: Any) -> Any:
        with self.traced.provider.get_tracer("judge").start_as_current_span("judge call"):
            return super().rank(prompts, candidates, **kwargs)


class TracingFuser(ScriptedFuser):
    def __init__(self, traced: Traced) -> None:
        super().__init__()
        self.traced = traced

    def stream(self, instruction: str, candidates: Sequence[str], **kwargs: Any) -> Iterator[str]:
        with self.traced.provider.get_tracer("llm").start_as_current_span("fuser call"):
            yield from super().stream(instruction, candidates, **kwargs)


@pytest.mark.parametrize("timeout", [5.0, None])  # the fuser in a thread of its own, or in the caller's
def test_the_rankers_and_the_fusers_own_spans_nest_under_theirs(traced: Traced, timeout: float | None) -> None:
    e = engine(traced, TracingFuser(traced), TracingRanker(traced), timeout=timeout)
    *_, last = e.stream(PROMPT, three())
    assert isinstance(last, EnsembleOutcome)
    assert last.blend.fused
    assert is_child(traced.one("judge call"), traced.one("blender.rank"))
    assert is_child(traced.one("fuser call"), traced.one("blender.fuse"))


def test_async_streaming_nests_the_fusers_spans_too(traced: Traced) -> None:
    class AsyncTracingFuser(ScriptedFuser):
        async def astream(self, instruction: str, candidates: Sequence[str], **kwargs: Any) -> Any:
            with traced.provider.get_tracer("llm").start_as_current_span("fuser call"):
                async for piece in super().astream(instruction, candidates, **kwargs):
                    yield piece

    async def go() -> list[Any]:
        calls = {"a": aanswering("4"), "b": aanswering("four"), "c": afailing("down")}
        return [event async for event in engine(traced, AsyncTracingFuser()).astream(PROMPT, calls)]

    events = asyncio.run(go())
    assert isinstance(events[-1], EnsembleOutcome)
    assert is_child(traced.one("fuser call"), traced.one("blender.fuse"))
    assert by_backend(traced.spans)["c"].status.status_code is StatusCode.ERROR


# ------------------------------------------------------------------------------- content, off and on
def test_content_goes_into_the_spans_only_when_turned_on(traced: Traced) -> None:
    engine(traced, ScriptedFuser(), trace_content=True).run(PROMPT, three())
    request = traced.one("chat blender-llm").attributes or {}
    assert "secret prompt" in str(request["gen_ai.input.messages"])
    assert '"role": "assistant"' in str(request["gen_ai.output.messages"])
    assert "it is 4" in str((by_backend(traced.spans)["c"].attributes or {})["gen_ai.output.messages"])
    assert "it is 4" in str((traced.one("blender.fuse").attributes or {})["gen_ai.output.messages"])


# ------------------------------------------------------------------------------- nothing records
def test_a_tracer_that_does_not_record_makes_no_spans_at_all() -> None:
    tracer = get_tracer(NoOpTracerProvider())
    assert request_spans(tracer, PROMPT, content=False, ranker="r", strategy="full") is NO_SPANS
    assert request_spans(None, PROMPT, content=False, ranker="r", strategy="full") is NO_SPANS


async def test_a_request_whose_caller_went_away_ends_its_spans_without_an_error(traced: Traced) -> None:
    task = asyncio.ensure_future(engine(traced).arun(PROMPT, {"a": aanswering("4"), "slow": aanswering("x", delay=5)}))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    request = traced.one("chat blender-llm")
    assert (request.attributes or {})["blender.abandoned"] is True
    assert request.status.status_code is StatusCode.UNSET
    assert sorted(by_backend(traced.spans)) == ["a", "slow"]  # the calls' spans ended with it

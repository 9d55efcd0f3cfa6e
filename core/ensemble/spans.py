"""The engine's OpenTelemetry spans: one per request, with a child per backend call, ranking, acceptance check
and fusion.

The tree of one request (names after OpenTelemetry's GenAI conventions where they define one: the
``{gen_ai.operation.name} {gen_ai.request.model}`` span name, ``gen_ai.*`` attributes, ``error.type``;
``blender.*`` for the rest)::

    chat blender-llm        the request, from its first call to the last piece of its answer (INTERNAL)
    ├── chat {backend}      each backend call: every sample (backend#k), tier and layer (CLIENT)
    ├── blender.rank        each ranking (a cascade ranks after a tier, layers after each layer)
    ├── blender.accept      each acceptance check of a cascade's tier
    └── blender.fuse        the fusion, streamed or not, when there is a fuser

A backend call's span is opened by the call itself, in its thread or task, and is the current span while
it runs, so that the backend's own spans (an instrumented HTTP client, a framework's instrumentation) nest
under it. The engine ends it once the request is decided, timed from the call's start to its end, its
timeout or its cancellation, with its rank and score. A failed call's span has status ERROR and
``error.type``; a call cancelled by a quorum is no error (``blender.cancelled``). The ranking's span is
current while the ranker runs, the fusion's while the fuser produces each piece.

No text of the prompt or the answers goes into a span unless ``content`` is on (the ``trace_content``
setting): then ``gen_ai.input.messages`` / ``gen_ai.output.messages`` hold them, as JSON.

:data:`NO_SPANS` is what the engine uses when nothing records (no ``opentelemetry-api``, no SDK, or the
request not sampled): every method does nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

from blender_core.base.calls import Blocking
from blender_core.ensemble.outcome import EnsembleOutcome
from blender_core.ensemble.policy import AcceptRound, CallRound, RankRound
from blender_core.ensemble.records import BackendRequest, CandidateRecord
from blender_core.observability.tracing import Otel, ain_context, in_context, otel

T = TypeVar("T")

#: the request span's name and its attributes known at its start
REQUEST_SPAN = "chat blender-llm"
REQUEST_ATTRIBUTES = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "blender_llm",
    "gen_ai.request.model": "blender-llm",
}
RANK_SPAN = "blender.rank"
ACCEPT_SPAN = "blender.accept"
FUSE_SPAN = "blender.fuse"


def _same(value: T) -> T:
    return value


class Fusion:
    """The fusion's span, as the engine's :meth:`~blender_core.ensemble.Ensemble.finish` drives it; this
    base does nothing."""

    def source(self, make: Callable[[], Any]) -> Callable[[], Any]:
        """``make`` (the fuser's pieces), each piece produced under the fusion's span."""
        return make

    def asource(self, make: Callable[[], Any]) -> Callable[[], Any]:
        """Async :meth:`source`."""
        return make

    def ended(self, outcome: EnsembleOutcome) -> EnsembleOutcome:
        """Record how the fusion ended (fused, fell back, cut) and its usage."""
        return outcome


class Spans:
    """A request's spans when nothing records: every method does nothing (see :class:`RequestSpans`)."""

    def request(self) -> AbstractContextManager[None]:
        """The request's span, ended on leaving (an exception recorded as its error)."""
        return nullcontext()

    def calls(self, step: CallRound, bound: Mapping[str, Any], *, aio: bool) -> Mapping[str, Any]:
        """A round's calls, each opening its span when it starts (``aio``: coroutine functions or
        :class:`Blocking`; else blocking functions)."""
        return bound

    def called(self, step: CallRound, records: list[CandidateRecord]) -> list[CandidateRecord]:
        """What each call of a round came to (an answer, an error, a cancellation, its cost)."""
        return records

    def ranking(self, step: RankRound) -> AbstractContextManager[Callable[[EnsembleOutcome], EnsembleOutcome]]:
        """A ranking's span; the value it gives records the ranking's outcome."""
        return nullcontext(_same)

    def accepting(self, step: AcceptRound) -> AbstractContextManager[Callable[[bool], bool]]:
        """An acceptance check's span; the value it gives records whether the tier was accepted."""
        return nullcontext(_same)

    def decided(self, outcome: EnsembleOutcome) -> EnsembleOutcome:
        """The request is decided: every call's span ends, with its rank and score."""
        return outcome

    def fusing(self, fuser: str) -> AbstractContextManager[Fusion]:
        """The fusion's span, ended on leaving."""
        return nullcontext(NO_FUSION)

    def answered(self, outcome: EnsembleOutcome) -> EnsembleOutcome:
        """The request's answer: the choice, the margin, the usage and cost."""
        return outcome


NO_FUSION = Fusion()
NO_SPANS = Spans()


def request_spans(tracer: Any, prompt: str, *, content: bool, ranker: str, strategy: str) -> Spans:
    """The spans of a request starting now, under the caller's current span; :data:`NO_SPANS` when
    ``tracer`` is None or its span does not record."""
    if tracer is None:
        return NO_SPANS
    api = otel()
    assert api is not None  # a tracer means the API is there
    span = tracer.start_span(REQUEST_SPAN, kind=api.span_kind.INTERNAL, attributes=REQUEST_ATTRIBUTES)
    if not span.is_recording():
        return NO_SPANS
    span.set_attributes({"blender.ranker": ranker, "blender.strategy": strategy})
    if content:
        span.set_attribute("gen_ai.input.messages", _messages("user", prompt))
    return RequestSpans(api, tracer, span, content=content, ranker=ranker, strategy=strategy)


def _messages(role: str, text: str) -> str:
    """Text as GenAI's message list (``gen_ai.input.messages`` / ``gen_ai.output.messages``), as JSON."""
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}], ensure_ascii=False)


def _error_type(error: str) -> str:
    """A low-cardinality ``error.type`` from an error's text: the exception's name before its message."""
    return error.split(":", 1)[0].strip() or "error"


def _usage(usage: Mapping[str, int] | None) -> dict[str, int]:
    if not usage:
        return {}
    out = {}
    for key in ("input_tokens", "output_tokens"):
        if usage.get(key) is not None:
            out[f"gen_ai.usage.{key}"] = int(usage[key])
    return out


def _margins(outcome: EnsembleOutcome) -> dict[int, float]:
    """Each ranked candidate's score minus the next one's in rank order (when the scores order them)."""
    ranking = outcome.blend.ranking
    if not ranking.scores_order:
        return {}
    order = ranking.order
    return {i: float(ranking.scores[i] - ranking.scores[j]) for i, j in itertools.pairwise(order)}


class _CallSpan:
    """One backend call's span: opened by the call when it starts (in its thread or task), or by the engine
    when the call never started; ended by the engine."""

    def __init__(self, api: Otel, tracer: Any, parent: Any, request: BackendRequest, candidate: str, tier: int) -> None:
        self.api, self.tracer, self.parent = api, tracer, parent
        self.name = f"chat {request.backend}"
        self.attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": request.backend,
            "blender.backend": candidate,
            "blender.tier": tier,
            "blender.layer": request.layer,
            "blender.sample": request.sample,
        }
        if request.seed is not None:
            self.attributes["gen_ai.request.seed"] = request.seed
        self.record: CandidateRecord | None = None
        self.span: Any = None
        self.start_ns = 0
        self._closed = False
        self._lock = threading.Lock()

    def _start(self) -> Any:
        self.start_ns = time.time_ns()
        self.span = self.tracer.start_span(
            self.name,
            self.parent,
            kind=self.api.span_kind.CLIENT,
            attributes=self.attributes,
            start_time=self.start_ns,
        )
        return self.span

    def open(self) -> Any:
        """The call starts: its span, or None when the engine already closed it (the call came too late)."""
        with self._lock:
            return None if self._closed else self._start()

    def close(self) -> Any:
        """No more opening: the span (opened now when the call never started)."""
        with self._lock:
            self._closed = True
            return self.span if self.span is not None else self._start()

    def wrap(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            span = self.open()
            if span is None:
                return fn()
            token = self.api.context.attach(self.api.trace.set_span_in_context(span, self.parent))
            try:
                return fn()
            finally:
                self.api.context.detach(token)

        return run

    def awrap(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        async def run() -> Any:
            span = self.open()
            if span is None:
                return await fn()
            token = self.api.context.attach(self.api.trace.set_span_in_context(span, self.parent))
            try:
                return await fn()
            finally:
                self.api.context.detach(token)

        return run


class _FuseSpan(Fusion):
    def __init__(self, api: Otel, span: Any, parent: Any, content: bool) -> None:
        self.api, self.span, self.content = api, span, content
        self.ctx = api.trace.set_span_in_context(span, parent)

    def source(self, make: Callable[[], Any]) -> Callable[[], Any]:
        return lambda: in_context(self.ctx, make)

    def asource(self, make: Callable[[], Any]) -> Callable[[], Any]:
        return lambda: ain_context(self.ctx, make)

    def ended(self, outcome: EnsembleOutcome) -> EnsembleOutcome:
        blend, span = outcome.blend, self.span
        span.set_attribute("blender.fused", blend.fused)
        first = blend.timings.get("fuse_first_token_s")
        if first is not None:
            span.set_attribute("blender.first_token_s", first)
        span.set_attributes(_usage(outcome.fuser_usage))
        if outcome.fuser_cost is not None:
            span.set_attribute("blender.cost", outcome.fuser_cost)
        if blend.fuser_error is not None:
            _failed(self.api, span, _error_type(blend.fuser_error), blend.fuser_error)
        if self.content and blend.fused:
            span.set_attribute("gen_ai.output.messages", _messages("assistant", blend.text))
        return outcome


def _failed(api: Otel, span: Any, error_type: str, description: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(api.status(api.status_code.ERROR, description))


class RequestSpans(Spans):
    """The spans of one recorded request (made by :func:`request_spans`)."""

    def __init__(self, api: Otel, tracer: Any, span: Any, *, content: bool, ranker: str, strategy: str) -> None:
        self.api, self.tracer, self.span = api, tracer, span
        self.content, self.ranker, self.strategy = content, ranker, strategy
        self.ctx = api.trace.set_span_in_context(span)
        self._calls: dict[tuple[int, str], _CallSpan] = {}

    def _child(self, name: str, attributes: Mapping[str, Any]) -> Any:
        return self.tracer.start_span(name, self.ctx, kind=self.api.span_kind.INTERNAL, attributes=attributes)

    def _raised(self, span: Any, exc: BaseException) -> None:
        span.record_exception(exc)
        _failed(self.api, span, type(exc).__name__, f"{type(exc).__name__}: {exc}")

    @contextmanager
    def _current(self, span: Any) -> Iterator[None]:
        """``span`` is the current span inside (no yield of the caller's in between), ended on leaving."""
        token = self.api.context.attach(self.api.trace.set_span_in_context(span, self.ctx))
        try:
            yield
        except BaseException as exc:
            self._raised(span, exc)
            raise
        finally:
            self.api.context.detach(token)
            span.end()

    # ------------------------------------------------------------------ the request
    @contextmanager
    def request(self) -> Iterator[None]:
        try:
            yield
        except GeneratorExit:  # the caller stopped reading the stream: no error of the ensemble's
            self.span.set_attribute("blender.abandoned", True)
            raise
        except asyncio.CancelledError:  # the caller went away
            self.span.set_attribute("blender.abandoned", True)
            raise
        except BaseException as exc:
            self._raised(self.span, exc)
            raise
        finally:
            self._end_calls(None)
            self.span.end()

    def answered(self, outcome: EnsembleOutcome) -> EnsembleOutcome:
        margins = _margins(outcome)
        attributes: dict[str, Any] = {
            "blender.best": outcome.best.backend,
            "blender.chosen": list(outcome.chosen_backends),
            "blender.fused": outcome.blend.fused,
            "blender.candidates": len(outcome.records),
            "blender.answered": sum(r.ok for r in outcome.records),
            **_usage(outcome.usage),
        }
        if outcome.blend.best in margins:
            attributes["blender.margin"] = margins[outcome.blend.best]
        if outcome.cost is not None:
            attributes["blender.cost"] = outcome.cost
        if outcome.policy is not None:
            p = outcome.policy
            attributes.update(
                {
                    "blender.tiers": list(p.tiers),
                    "blender.layers": p.layers,
                    "blender.stop": p.stop,
                    "blender.cancelled_calls": p.cancelled,
                }
            )
        if self.content:
            attributes["gen_ai.output.messages"] = _messages("assistant", outcome.text)
        self.span.set_attributes(attributes)
        return outcome

    # ------------------------------------------------------------------ backend calls
    def calls(self, step: CallRound, bound: Mapping[str, Any], *, aio: bool) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        for candidate, request in step.calls:
            call = self._calls[(step.layer, candidate)] = _CallSpan(
                self.api, self.tracer, self.ctx, request, candidate, step.tier
            )
            fn = bound[candidate]
            if isinstance(fn, Blocking):
                out[candidate] = Blocking(call.wrap(fn.call))
            else:
                out[candidate] = call.awrap(fn) if aio else call.wrap(fn)
        return out

    def called(self, step: CallRound, records: list[CandidateRecord]) -> list[CandidateRecord]:
        for record in records:
            self._calls[(step.layer, record.backend)].record = record
        return records

    def decided(self, outcome: EnsembleOutcome) -> EnsembleOutcome:
        self._end_calls(outcome)
        return outcome

    def _end_calls(self, outcome: EnsembleOutcome | None) -> None:
        ranked: dict[int, tuple[int, float, float | None, bool]] = {}
        if outcome is not None:
            margins, blend = _margins(outcome), outcome.blend
            for i, r in enumerate(outcome.successes):
                ranked[id(r)] = (int(blend.ranking.ranks[i]), float(blend.scores[i]), margins.get(i), i in blend.chosen)
        for call in self._calls.values():
            self._end_call(call, ranked)
        self._calls.clear()

    def _end_call(self, call: _CallSpan, ranked: Mapping[int, tuple[int, float, float | None, bool]]) -> None:
        span = call.close()
        record, now = call.record, time.time_ns()
        if record is None:  # its round never ended (the request failed or was abandoned meanwhile)
            span.end(end_time=now)
            return
        attributes: dict[str, Any] = {}
        if record.answer is not None:
            attributes.update(_usage(record.answer.usage))
            if self.content:
                attributes["gen_ai.output.messages"] = _messages("assistant", record.answer.text)
        if record.cost is not None:
            attributes["blender.cost"] = record.cost
        if record.cancelled is not None:
            attributes["blender.cancelled"] = True
            attributes["blender.cancel_reason"] = record.cancelled
        if id(record) in ranked:
            rank, score, margin, chosen = ranked[id(record)]
            attributes.update({"blender.rank": rank, "blender.score": score, "blender.chosen": chosen})
            if margin is not None:
                attributes["blender.margin"] = margin
        span.set_attributes(attributes)
        if record.error is not None:
            _failed(self.api, span, _error_type(record.error), record.error)
        span.end(end_time=min(now, call.start_ns + int(record.latency_s * 1e9)))

    # ------------------------------------------------------------------ ranking, acceptance, fusion
    @contextmanager
    def ranking(self, step: RankRound) -> Iterator[Callable[[EnsembleOutcome], EnsembleOutcome]]:
        successes: Sequence[CandidateRecord] = step.successes
        span = self._child(
            RANK_SPAN,
            {
                "blender.ranker": self.ranker,
                "blender.strategy": self.strategy,
                "blender.candidates": len(successes),
                "blender.tier": max((r.tier for r in successes), default=1),
                "blender.layer": max((r.layer for r in successes), default=1),
            },
        )

        def ranked(outcome: EnsembleOutcome) -> EnsembleOutcome:
            span.set_attribute("blender.best", outcome.best.backend)
            margin = _margins(outcome).get(outcome.blend.best)
            if margin is not None:
                span.set_attribute("blender.margin", margin)
            span.set_attributes(_usage(outcome.blend.ranking.usage))
            return outcome

        with self._current(span):
            yield ranked

    @contextmanager
    def accepting(self, step: AcceptRound) -> Iterator[Callable[[bool], bool]]:
        span = self._child(ACCEPT_SPAN, {"blender.tier": step.tier, "blender.best": step.outcome.best.backend})

        def accepted(ok: bool) -> bool:
            span.set_attribute("blender.accepted", ok)
            return ok

        with self._current(span):
            yield accepted

    @contextmanager
    def fusing(self, fuser: str) -> Iterator[Fusion]:
        # not made current here: the engine's stream yields inside, in the caller's context; the fuser's
        # pieces are produced under it (Fusion.source)
        span = self._child(FUSE_SPAN, {"blender.fuser": fuser, "gen_ai.request.model": fuser})
        try:
            yield _FuseSpan(self.api, span, self.ctx, self.content)
        except GeneratorExit:
            span.set_attribute("blender.abandoned", True)
            raise
        except BaseException as exc:
            self._raised(span, exc)
            raise
        finally:
            span.end()

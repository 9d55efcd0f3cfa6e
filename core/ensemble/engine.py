"""The ensemble engine: ask every backend, keep those that answered, rank them, fuse the top K.

One engine serves every front end (the LangChain and LlamaIndex adapters, the agent middleware): they
turn their framework's models into calls returning a :class:`BackendAnswer` and turn the engine's
:class:`Delta` pieces and :class:`EnsembleOutcome` back into their own messages. Everything else is here,
once: concurrent calls (threads or asyncio), per-backend timeouts, ``min_successes``, ranking, fusion
streamed with a time limit on its first token and a fallback to the top-ranked answer, timings, the
account of every candidate and the summed usage.

Example:
    >>> engine = Ensemble("builtin:pairrm-minilm-l6", fuser, EnsembleConfig(top_k=2, timeout=30))  # doctest: +SKIP
    >>> outcome = engine.run("2+2?", {"a": call_a, "b": call_b, "c": call_c})  # doctest: +SKIP
    >>> outcome.text, outcome.metadata()["chosen"]  # doctest: +SKIP
    ('4', ['b', 'a'])
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeAlias

from blender_core.base.calls import Blocking
from blender_core.base.threads import BackendThreads
from blender_core.base.usage import UsageSink, sum_usage
from blender_core.ensemble.backends import acall_backends, call_backends
from blender_core.ensemble.outcome import Delta, EnsembleOutcome
from blender_core.ensemble.pipeline import BlendPipeline, FusionError
from blender_core.ensemble.policy import (
    AcceptRound,
    CallRound,
    Decision,
    RankRound,
    accept_peers,
    check_backends,
    flow,
    holds_on_matrix,
    holds_on_pair,
)
from blender_core.ensemble.records import BackendAnswer, BackendRequest, CandidateRecord, EnsembleError
from blender_core.ensemble.requests import bind_request, priced
from blender_core.ensemble.settings import BackendSettings, EnsembleConfig
from blender_core.ensemble.sinks import OutcomeSink, Sinks
from blender_core.ensemble.spans import NO_SPANS, Spans, request_spans
from blender_core.ensemble.streaming import StreamDeadline, StreamReport, aguarded_stream, guarded_stream
from blender_core.fusion.base import BaseFuser
from blender_core.observability.tracing import get_tracer
from blender_core.ranking.gathering import Gathering
from blender_core.ranking.registry import RankerSpec, spec_name

#: backend name -> a call that returns its answer (sync), or a coroutine function (async)
logger = logging.getLogger(__name__)

#: backend name -> its call: of the :class:`BackendRequest` (as the adapters give), or of nothing
Calls: TypeAlias = Mapping[str, Callable[[BackendRequest], BackendAnswer] | Callable[[], BackendAnswer]]
#: the same, async: coroutine functions, or :class:`Blocking` calls
AsyncCalls: TypeAlias = Mapping[str, Callable[..., Awaitable[BackendAnswer]] | Blocking]
#: what a stream yields: pieces of the answer, then the finished outcome
Event: TypeAlias = Delta | EnsembleOutcome
#: the chat a prompt was rendered from, as role/content dicts (handed to the sinks)
Messages: TypeAlias = Sequence[Mapping[str, Any]] | None


class Ensemble:
    """Call several backends for one prompt, keep those that answered, rank them and fuse the top K.

    Args:
        ranker: a ranker, a folder / hub id / built-in name (loaded on first use), or None for the default.
        fuser: a fuser, or None to answer with the top-ranked backend.
        config: the settings (default :class:`EnsembleConfig`); or give them as keyword arguments.
        tracer_provider: the OpenTelemetry ``TracerProvider`` its spans go to (None: the global one); see
            :mod:`blender_core.ensemble.spans`.
        sinks: called with every answered request (:mod:`blender_core.ensemble.sinks`); one that raises is
            logged and counted, never fails the request.
    """

    def __init__(
        self,
        ranker: RankerSpec = None,
        fuser: BaseFuser | None = None,
        config: EnsembleConfig | None = None,
        *,
        backends: Mapping[str, BackendSettings] | None = None,
        fuser_settings: BackendSettings | None = None,
        tracer_provider: Any = None,
        sinks: Sequence[OutcomeSink] | None = (),
        **settings: Any,
    ) -> None:
        if config is not None and settings:
            raise TypeError(f"Ensemble() got both a config and settings {sorted(settings)}; pass one of them")
        self.config = config if config is not None else EnsembleConfig(**settings)
        c = self.config
        # per-backend settings (tier, samples, prices) by backend name; a backend not named has the defaults
        self.backends: dict[str, BackendSettings] = dict(backends or {})
        # the fuser's prices, when it is a priced model
        self.fuser_settings = fuser_settings
        if self.backends:
            check_backends(list(self.backends), self.backends, c)
        self.pipeline = BlendPipeline(
            ranker,
            fuser,
            top_k=c.top_k,
            strategy=c.strategy,
            fallback_on_fuser_error=c.fallback_on_fuser_error,
            gathering=Gathering(c.rank_batch_window_ms / 1000, c.rank_max_batch),
        )
        # shared by every call of this engine: each backend's stuck calls are counted across calls
        self.threads = BackendThreads(max_stuck=c.max_stuck_calls)
        # None without opentelemetry-api: then no span is ever made
        self.tracer = get_tracer(tracer_provider)
        # every answered request is handed to these (a recorder, ...)
        self.sinks = Sinks(sinks)
        self._ranker_name = spec_name(ranker)  # once: the spans and the sinks of every request name it

    @classmethod
    def from_settings(cls, owner: Any, fuser: BaseFuser | None) -> Ensemble:
        """The engine of an adapter: its ``ranker``, its :class:`EnsembleSettings` (which it inherits),
        checked against its number of ``backends``."""
        engine = cls(
            owner.ranker,
            fuser,
            EnsembleConfig.of(owner),
            backends=getattr(owner, "backend_settings", None) or None,
            fuser_settings=getattr(owner, "fuser_settings", None),
            tracer_provider=getattr(owner, "tracer_provider", None),
            sinks=getattr(owner, "sinks", None),
        )
        engine.check_backend_count(len(owner.backends))
        return engine

    @property
    def fuser(self) -> BaseFuser | None:
        return self.pipeline.fuser

    def check_backend_count(self, n_backends: int) -> None:
        """Raise when ``min_successes`` can never be met by ``n_backends`` backends."""
        if self.config.min_successes > n_backends:
            raise ValueError(
                f"min_successes={self.config.min_successes} but only {n_backends} backends; "
                "lower min_successes or add backends"
            )

    # ------------------------------------------------------------------ backends
    def call(self, calls: Calls) -> list[CandidateRecord]:
        """Call every backend once, concurrently (threads), each within the timeout; failures become
        records (one plain round: :meth:`gather` runs the adaptive ones)."""
        c = self.config
        plain = {name: bind_request(call, BackendRequest(name)) for name, call in calls.items()}
        return _logged(
            call_backends(plain, timeout=c.timeout, max_concurrency=c.max_concurrency, threads=self.threads)
        )

    async def acall(self, calls: AsyncCalls) -> list[CandidateRecord]:
        """Await every backend once, concurrently, each within the timeout; failures become records."""
        c = self.config
        plain = {name: bind_request(call, BackendRequest(name)) for name, call in calls.items()}
        records = await acall_backends(
            plain, timeout=c.timeout, max_concurrency=c.max_concurrency, threads=self.threads
        )
        return _logged(records)

    # ------------------------------------------------------------------ ranking
    def _successes(
        self, candidates: list[CandidateRecord], records: list[CandidateRecord]
    ) -> tuple[CandidateRecord, ...]:
        successes = tuple(r for r in candidates if r.ok)
        if len(successes) < self.config.min_successes:
            raise EnsembleError(records, self.config.min_successes)
        return successes

    def select(
        self,
        prompt: str,
        records: list[CandidateRecord],
        *,
        successes: Sequence[CandidateRecord] | None = None,
    ) -> EnsembleOutcome:
        """Rank the answers of ``records`` (or the given ``successes`` among them: a layer's); the best one
        answers, the top K are chosen for fusion.

        Raises:
            EnsembleError: fewer answers than ``min_successes``.
        """
        ranked = self._successes(records if successes is None else list(successes), records)
        texts = [r.answer.ranked_text for r in ranked if r.answer is not None]
        (blend,) = self.pipeline.rank([prompt], [texts])
        return EnsembleOutcome(tuple(records), blend, ranked)

    async def aselect(
        self,
        prompt: str,
        records: list[CandidateRecord],
        *,
        successes: Sequence[CandidateRecord] | None = None,
    ) -> EnsembleOutcome:
        """Async :meth:`select`: the ranker runs in a worker thread."""
        ranked = self._successes(records if successes is None else list(successes), records)
        texts = [r.answer.ranked_text for r in ranked if r.answer is not None]
        (blend,) = await self.pipeline.arank([prompt], [texts])
        return EnsembleOutcome(tuple(records), blend, ranked)

    # ------------------------------------------------------------------ adaptive rounds
    def _settings(self, calls: Mapping[str, Any]) -> dict[str, BackendSettings]:
        settings = {name: self.backends.get(name, BackendSettings()) for name in calls}
        if self.backends:
            check_backends(list(calls), {n: s for n, s in self.backends.items() if n in calls}, self.config)
        return settings

    def _round_calls(self, step: CallRound, calls: Mapping[str, Any]) -> dict[str, Any]:
        return {candidate: bind_request(calls[req.backend], req) for candidate, req in step.calls}

    def _round_kwargs(self, step: CallRound) -> dict[str, Any]:
        c = self.config
        owners = {candidate: req.backend for candidate, req in step.calls}
        return {
            "timeout": c.timeout,
            "max_concurrency": c.max_concurrency,
            "threads": self.threads,
            "owner": owners.__getitem__,  # a backend's samples share its stuck-call bound
            "quorum": c.quorum,
            "quorum_grace": c.quorum_grace,
        }

    def _priced(self, step: CallRound, records: list[CandidateRecord], settings: Mapping[str, BackendSettings]) -> list[CandidateRecord]:
        requests = [req for _, req in step.calls]
        return _logged(priced(records, requests, settings, tier=step.tier, layer=step.layer))

    def _accepts(self, prompt: str, outcome: EnsembleOutcome) -> bool:
        """The acceptance rule of a cascade (``accept_score``; see :mod:`blender_core.ensemble.policy`)."""
        margin = self.config.accept_score
        if margin is None:  # no rule: a tier that answered is accepted, the next one is a fallback
            return True
        ranker = self.pipeline.ranker
        blend = outcome.blend
        if getattr(ranker, "absolute_scores", False):
            return bool(blend.scores[blend.best] >= margin)
        peers = accept_peers(outcome)
        if not peers:  # nothing to agree with: a lone candidate of a pairwise ranker never accepts
            return False
        if blend.ranking.matrix is not None:
            return holds_on_matrix(blend.ranking.matrix, blend.best, peers, margin)
        top = blend.candidates[blend.best]
        pairs = [[top, blend.candidates[j]] for j in peers]
        return all(holds_on_pair(r, margin) for r in ranker.rank([prompt] * len(pairs), pairs, strategy="full"))

    def gather(self, prompt: str, calls: Calls, *, spans: Spans = NO_SPANS) -> EnsembleOutcome:
        """Call the backends in the rounds the settings ask for (tiers, samples, layers, quorum) and rank
        the answers: the outcome :meth:`finish` answers from, with the policy's report (``spans``: the
        request's, from :meth:`run` / :meth:`stream`).

        Raises:
            EnsembleError: fewer answers than ``min_successes``.
        """
        settings = self._settings(calls)
        rounds = flow(list(calls), settings, self.config)
        value: Any = None
        while True:
            try:
                step = rounds.send(value)
            except StopIteration as stop:
                return spans.decided(self._decided(prompt, stop.value))
            if isinstance(step, CallRound):
                round_calls = spans.calls(step, self._round_calls(step, calls), aio=False)
                got = call_backends(round_calls, **self._round_kwargs(step))
                value = spans.called(step, self._priced(step, got, settings))
            elif isinstance(step, RankRound):
                with spans.ranking(step) as ranked:
                    value = ranked(self.select(prompt, list(step.records), successes=step.successes))
            else:
                assert isinstance(step, AcceptRound)
                with spans.accepting(step) as accepted:
                    value = accepted(self._accepts(prompt, step.outcome))

    async def agather(self, prompt: str, calls: AsyncCalls, *, spans: Spans = NO_SPANS) -> EnsembleOutcome:
        """Async :meth:`gather`: coroutine calls are awaited (a quorum cancels the rest: their HTTP requests
        are closed), the ranker runs in a worker thread."""
        settings = self._settings(calls)
        rounds = flow(list(calls), settings, self.config)
        value: Any = None
        while True:
            try:
                step = rounds.send(value)
            except StopIteration as stop:
                return spans.decided(self._decided(prompt, stop.value))
            if isinstance(step, CallRound):
                round_calls = spans.calls(step, self._round_calls(step, calls), aio=True)
                got = await acall_backends(round_calls, **self._round_kwargs(step))
                value = spans.called(step, self._priced(step, got, settings))
            elif isinstance(step, RankRound):
                with spans.ranking(step) as ranked:
                    value = ranked(await self.aselect(prompt, list(step.records), successes=step.successes))
            else:
                assert isinstance(step, AcceptRound)
                with spans.accepting(step) as accepted:
                    value = accepted(await asyncio.to_thread(self._accepts, prompt, step.outcome))

    def _decided(self, prompt: str, decision: Decision) -> EnsembleOutcome:
        outcome, records, report = decision
        if outcome is None:
            raise EnsembleError(list(records), self.config.min_successes)
        return replace(outcome, records=records, policy=report)

    # ------------------------------------------------------------------ fusion
    def fuses(self, outcome: EnsembleOutcome) -> bool:
        """Whether the answer is fused: there is a fuser and every answer may be fused (no tool calls)."""
        return self.fuser is not None and all(r.answer.fusible for r in outcome.successes if r.answer)

    def _fallback(self, outcome: EnsembleOutcome) -> Callable[[], list[Delta]] | None:
        if not self.config.fallback_on_fuser_error:
            return None
        return lambda: [Delta(outcome.best_answer.text, outcome.best_answer)]

    def _fuser_name(self) -> str:
        return self.fuser.name if self.fuser is not None else "fuser"

    def _fusion_error(self, exc: BaseException) -> FusionError:
        return FusionError(f"the fuser {self._fuser_name()!r} failed: {type(exc).__name__}: {exc}")

    def _ended(
        self, outcome: EnsembleOutcome, text: str, report: StreamReport, sink: UsageSink
    ) -> EnsembleOutcome:
        """The outcome once the fuser's stream ended, or fell back to the top-ranked answer."""
        timings = {**outcome.blend.timings, "fuse_s": report.elapsed_s}
        if report.first_item_s is not None:
            timings["fuse_first_token_s"] = report.first_item_s
        usage = sum_usage(sink) if sink else None
        name = self.fuser.name if self.fuser is not None else None
        if report.fell_back:
            ended = outcome.answered_by_best(fuser=name, fuser_error=report.error, timings=timings)
        else:
            blend = replace(
                outcome.blend, text=text, fused=True, fuser=name, fuser_error=report.error, timings=timings
            )
            ended = replace(outcome, blend=blend)
        return replace(ended, fuser_usage=usage)

    def finish(
        self,
        prompt: str,
        outcome: EnsembleOutcome,
        *,
        fuse_kwargs: Mapping[str, Any] | None = None,
        cut_at_deadline: bool = True,
        spans: Spans = NO_SPANS,
    ) -> Iterator[Event]:
        """Stream the final answer of a selected outcome: :class:`Delta` pieces, then the ended outcome.

        With fusion the fuser's pieces stream; its first must come within the timeout, and a failure
        before it streams the top-ranked answer instead (or raises :class:`FusionError` with the fallback
        off). After the first piece there is no way back: a fuser error is raised, and a fusion that passes
        its deadline (:attr:`EnsembleConfig.fusion_deadline`) is stopped and the stream ends where it
        stands, the outcome saying so in ``fuser_error`` (with ``cut_at_deadline=False`` it is raised
        instead). Without fusion the chosen answer comes as one piece. ``fuse_kwargs`` go to the fuser
        (e.g. a callback config).
        """
        if not self.fuses(outcome):
            ended = spans.answered(outcome.answered_by_best())
            yield Delta(ended.text, ended.best_answer)
            yield ended
            return
        sink: UsageSink = []
        report = StreamReport()
        kwargs = dict(fuse_kwargs or {})
        with spans.fusing(self._fuser_name()) as fusion:
            pieces = guarded_stream(
                fusion.source(
                    lambda: (
                        Delta(p)
                        for p in self.pipeline.stream_fuse(prompt, outcome.blend, usage_sink=sink, **kwargs)
                    )
                ),
                timeout=self.config.timeout,
                fallback=self._fallback(outcome),
                report=report,
                deadline=self.config.fusion_deadline,
            )
            text = ""
            try:
                for piece in pieces:
                    text += piece.text
                    yield piece
            except StreamDeadline as exc:
                if not cut_at_deadline:
                    raise
                report.error = f"{type(exc).__name__}: {exc}; the answer is cut there"
            except Exception as exc:
                if report.first_item_s is None:  # failed before any output, with the fallback off
                    raise self._fusion_error(exc) from exc
                raise
            ended = fusion.ended(self._ended(outcome, text, report, sink))
        yield spans.answered(ended)

    async def afinish(
        self,
        prompt: str,
        outcome: EnsembleOutcome,
        *,
        fuse_kwargs: Mapping[str, Any] | None = None,
        cut_at_deadline: bool = True,
        spans: Spans = NO_SPANS,
    ) -> AsyncIterator[Event]:
        """Async :meth:`finish`, from the fuser's ``astream``."""
        if not self.fuses(outcome):
            ended = spans.answered(outcome.answered_by_best())
            yield Delta(ended.text, ended.best_answer)
            yield ended
            return
        sink: UsageSink = []
        report = StreamReport()
        kwargs = dict(fuse_kwargs or {})

        async def fused() -> AsyncIterator[Delta]:
            async for p in self.pipeline.astream_fuse(prompt, outcome.blend, usage_sink=sink, **kwargs):
                yield Delta(p)

        with spans.fusing(self._fuser_name()) as fusion:
            text = ""
            try:
                async for piece in aguarded_stream(
                    fusion.asource(fused),
                    timeout=self.config.timeout,
                    fallback=self._fallback(outcome),
                    report=report,
                    deadline=self.config.fusion_deadline,
                ):
                    text += piece.text
                    yield piece
            except StreamDeadline as exc:
                if not cut_at_deadline:
                    raise
                report.error = f"{type(exc).__name__}: {exc}; the answer is cut there"
            except Exception as exc:
                if report.first_item_s is None:
                    raise self._fusion_error(exc) from exc
                raise
            ended = fusion.ended(self._ended(outcome, text, report, sink))
        yield spans.answered(ended)

    def _after_error(self, outcome: EnsembleOutcome, exc: Exception, start: float) -> EnsembleOutcome:
        """Not streamed, nothing was shown yet: a fuser that failed mid-answer falls back too."""
        if isinstance(exc, FusionError):
            raise exc
        if not self.config.fallback_on_fuser_error:
            raise self._fusion_error(exc) from exc
        name = self.fuser.name if self.fuser is not None else None
        timings = {**outcome.blend.timings, "fuse_s": time.perf_counter() - start}
        return outcome.answered_by_best(
            fuser=name, fuser_error=f"{type(exc).__name__}: {exc}", timings=timings
        )

    # ------------------------------------------------------------------ whole calls
    def _answered(self, prompt: str, outcome: EnsembleOutcome, messages: Messages) -> None:
        """Hand the answered request to the sinks (never raises)."""
        if len(self.sinks):
            self.sinks.answered(prompt, outcome, messages, self._ranker_name)

    def stream(
        self,
        prompt: str,
        calls: Calls,
        *,
        fuse_kwargs: Mapping[str, Any] | None = None,
        messages: Messages = None,
    ) -> Iterator[Event]:
        """Call, rank, then stream the answer (see :meth:`finish`); ends with the :class:`EnsembleOutcome`.
        ``messages``: the chat ``prompt`` was rendered from, for the sinks."""
        spans = self._spans(prompt)
        with spans.request():
            outcome = self.gather(prompt, calls, spans=spans)
            for event in self.finish(prompt, outcome, fuse_kwargs=fuse_kwargs, spans=spans):
                if isinstance(event, EnsembleOutcome):
                    self._answered(prompt, event, messages)
                yield event

    async def astream(
        self,
        prompt: str,
        calls: AsyncCalls,
        *,
        fuse_kwargs: Mapping[str, Any] | None = None,
        messages: Messages = None,
    ) -> AsyncIterator[Event]:
        """Async :meth:`stream`."""
        spans = self._spans(prompt)
        with spans.request():
            outcome = await self.agather(prompt, calls, spans=spans)
            async for event in self.afinish(prompt, outcome, fuse_kwargs=fuse_kwargs, spans=spans):
                if isinstance(event, EnsembleOutcome):
                    self._answered(prompt, event, messages)
                yield event

    def run(
        self,
        prompt: str,
        calls: Calls,
        *,
        fuse_kwargs: Mapping[str, Any] | None = None,
        messages: Messages = None,
    ) -> EnsembleOutcome:
        """Call, rank and fuse; the finished outcome (a fuser failing at any point falls back, unless the
        fallback is off). ``messages``: the chat ``prompt`` was rendered from, for the sinks."""
        spans = self._spans(prompt)
        with spans.request():
            outcome = self.gather(prompt, calls, spans=spans)
            start = time.perf_counter()
            try:
                *_, last = self.finish(
                    prompt, outcome, fuse_kwargs=fuse_kwargs, cut_at_deadline=False, spans=spans
                )
            except Exception as exc:
                last = spans.answered(self._after_error(outcome, exc, start))
            assert isinstance(last, EnsembleOutcome)
        self._answered(prompt, last, messages)
        return last

    async def arun(
        self,
        prompt: str,
        calls: AsyncCalls,
        *,
        fuse_kwargs: Mapping[str, Any] | None = None,
        messages: Messages = None,
    ) -> EnsembleOutcome:
        """Async :meth:`run`."""
        spans = self._spans(prompt)
        with spans.request():
            outcome = await self.agather(prompt, calls, spans=spans)
            start = time.perf_counter()
            try:
                *_, last = [
                    event
                    async for event in self.afinish(
                        prompt, outcome, fuse_kwargs=fuse_kwargs, cut_at_deadline=False, spans=spans
                    )
                ]
            except Exception as exc:
                last = spans.answered(self._after_error(outcome, exc, start))
            assert isinstance(last, EnsembleOutcome)
        self._answered(prompt, last, messages)
        return last

    def _spans(self, prompt: str) -> Spans:
        """The spans of a request starting now (:data:`NO_SPANS` when nothing records)."""
        c = self.config
        return request_spans(
            self.tracer, prompt, content=c.trace_content, ranker=self._ranker_name, strategy=c.strategy
        )


def _logged(records: list[CandidateRecord]) -> list[CandidateRecord]:
    for r in records:
        if r.error is not None:
            logger.warning("backend %r dropped after %.2f s: %s", r.backend, r.latency_s, r.error)
    return records


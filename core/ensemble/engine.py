"""The ensemble logic both framework adapters share: call backends concurrently, drop failures, rank, fuse.

The adapters turn their framework's models into callables returning a :class:`BackendAnswer`; everything
else (concurrency, per-backend timeouts, ``min_successes``, ranking, fusion, metadata, usage sums) is here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

from blender_core.ensemble.pipeline import Blender, BlendResult

USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")


@dataclass(frozen=True)
class BackendAnswer:
    """What one backend answered.

    Attributes:
        text: the answer text.
        rank_text: the text the ranker reads (e.g. a canonical form of tool calls); defaults to ``text``.
        usage: token usage with keys among ``input_tokens``, ``output_tokens``, ``total_tokens``.
        payload: the framework's own message object, returned as is if this answer is chosen.
    """

    text: str
    rank_text: str | None = None
    usage: Mapping[str, int] | None = None
    payload: Any = None

    @property
    def ranked_text(self) -> str:
        return self.text if self.rank_text is None else self.rank_text


@dataclass(frozen=True)
class CandidateRecord:
    """One backend's outcome: an answer, or the error that dropped it; latency in seconds."""

    backend: str
    answer: BackendAnswer | None
    latency_s: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.answer is not None


class EnsembleError(RuntimeError):
    """Fewer backends answered than ``min_successes``; ``records`` says what each one did."""

    def __init__(self, records: Sequence[CandidateRecord], min_successes: int) -> None:
        self.records = tuple(records)
        ok = sum(r.ok for r in records)
        detail = "; ".join(f"{r.backend}: {r.error or 'ok'}" for r in records)
        super().__init__(
            f"only {ok} of {len(records)} backends answered, fewer than min_successes={min_successes} ({detail}). "
            "Check the failing backends, raise their timeout, or lower min_successes"
        )


def _error_text(exc: BaseException, timeout: float | None) -> str:
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return f"TimeoutError: no answer within {timeout} s"
    return f"{type(exc).__name__}: {exc}"


def _answer(value: Any, backend: str) -> BackendAnswer:
    if not isinstance(value, BackendAnswer):
        raise TypeError(f"backend {backend!r} returned {type(value).__name__}, expected a BackendAnswer")
    return value


async def acall_backends(
    calls: Mapping[str, Callable[[], Awaitable[BackendAnswer]]],
    *,
    timeout: float | None = None,
    max_concurrency: int | None = None,
) -> list[CandidateRecord]:
    """Await every backend concurrently (at most ``max_concurrency`` at once), each within ``timeout`` s.

    A backend that raises or times out becomes a record with ``error`` set; nothing is raised here.
    """
    gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    async def one(name: str, call: Callable[[], Awaitable[BackendAnswer]]) -> CandidateRecord:
        if gate is not None:
            await gate.acquire()
        start = time.perf_counter()
        try:
            answer = _answer(await asyncio.wait_for(call(), timeout), name)
            return CandidateRecord(name, answer, time.perf_counter() - start)
        except Exception as exc:
            return CandidateRecord(name, None, time.perf_counter() - start, _error_text(exc, timeout))
        finally:
            if gate is not None:
                gate.release()

    return list(await asyncio.gather(*(one(n, c) for n, c in calls.items())))


def call_backends(
    calls: Mapping[str, Callable[[], BackendAnswer]],
    *,
    timeout: float | None = None,
    max_concurrency: int | None = None,
) -> list[CandidateRecord]:
    """The sync twin of :func:`acall_backends`: backends run concurrently in threads.

    A thread cannot be killed, so a backend past its timeout is recorded as timed out and left to finish
    in the background; the call returns without waiting for it.
    """
    if not calls:
        return []
    names = list(calls)
    pool = ThreadPoolExecutor(max_workers=max_concurrency or len(names), thread_name_prefix="blender-backend")
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}

    def run(name: str) -> BackendAnswer:
        starts[name] = time.perf_counter()
        try:
            return _answer(calls[name](), name)
        finally:
            ends[name] = time.perf_counter()

    submitted = time.perf_counter()
    futures = {name: pool.submit(run, name) for name in names}
    # With a bounded pool, a backend's clock starts when it starts running, so queueing is not timed.
    deadline_wait = None if timeout is None else timeout * -(-len(names) // (max_concurrency or len(names)))
    wait(futures.values(), timeout=deadline_wait)
    pool.shutdown(wait=False, cancel_futures=True)
    records = []
    for name, fut in futures.items():
        start = starts.get(name, submitted)
        if fut.done() and not fut.cancelled() and (timeout is None or ends[name] - start <= timeout):
            exc = fut.exception()
            latency = ends[name] - start
            if exc is None:
                records.append(CandidateRecord(name, fut.result(), latency))
            else:
                records.append(CandidateRecord(name, None, latency, _error_text(exc, timeout)))
        else:
            records.append(
                CandidateRecord(name, None, time.perf_counter() - start, _error_text(TimeoutError(), timeout))
            )
    return records


def sum_usage(usages: Sequence[Mapping[str, int] | None]) -> dict[str, int]:
    """Add token usages key by key (missing keys count 0); total = input + output when not given."""
    total = dict.fromkeys(USAGE_KEYS, 0)
    for u in usages:
        if not u:
            continue
        for key in USAGE_KEYS:
            total[key] += int(u.get(key, 0) or 0)
        if not u.get("total_tokens"):
            total["total_tokens"] += int(u.get("input_tokens", 0) or 0) + int(u.get("output_tokens", 0) or 0)
    return total


@dataclass(frozen=True)
class EnsembleOutcome:
    """The result of one ensemble call.

    Attributes:
        records: every backend's record, in backend order (failures included).
        blend: ranking/fusion of the successful answers (indices refer to ``successes``).
        successes: the records that answered, in backend order.
        text: the final answer (fused, or the best answer's text).
        fuser_usage: token usage of the fuser, if it reported any.
    """

    records: tuple[CandidateRecord, ...]
    blend: BlendResult
    successes: tuple[CandidateRecord, ...]
    text: str
    fuser_usage: Mapping[str, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> CandidateRecord:
        """The top-ranked successful backend's record."""
        return self.successes[self.blend.best]

    @property
    def chosen_backends(self) -> tuple[str, ...]:
        return tuple(self.successes[i].backend for i in self.blend.chosen)

    @property
    def usage(self) -> dict[str, int]:
        """Summed usage of the backends and the fuser."""
        return sum_usage([*(r.answer.usage for r in self.successes if r.answer), self.fuser_usage])

    def metadata(self) -> dict[str, Any]:
        """A JSON-serialisable account: every candidate (backend, score, rank, latency, error), the choice,
        the fuser and per-backend usage."""
        position = {r.backend: i for i, r in enumerate(self.successes)}
        ranks = self.blend.ranking.ranks if self.blend.ranking is not None else [1]
        candidates = []
        for r in self.records:
            i = position.get(r.backend)
            candidates.append(
                {
                    "backend": r.backend,
                    "text": r.answer.text if r.answer else None,
                    "score": float(self.blend.scores[i]) if i is not None else None,
                    "rank": int(ranks[i]) if i is not None else None,
                    "latency_s": round(r.latency_s, 4),
                    "error": r.error,
                    "usage": dict(r.answer.usage) if r.answer and r.answer.usage else None,
                }
            )
        return {
            "candidates": candidates,
            "chosen": list(self.chosen_backends),
            "best": self.best.backend,
            "fused": self.blend.fused,
            "fuser": self.blend.fuser,
            "fuser_error": self.blend.fuser_error,
            "strategy": self.blend.ranking.strategy if self.blend.ranking is not None else None,
            "timings": dict(self.blend.timings),
            "usage_by_backend": {
                r.backend: dict(r.answer.usage) for r in self.successes if r.answer and r.answer.usage
            },
        }


class Ensemble:
    """Call several backends for one prompt, keep those that answered, rank them and fuse the top-K.

    Args:
        blender: the ranker/fuser pipeline (its ``top_k`` and ``strategy`` apply).
        timeout: seconds each backend may take (``None``: no limit).
        min_successes: fewer answers than this is an :class:`EnsembleError`.
        max_concurrency: at most this many backend calls at once (``None``: all).
    """

    def __init__(
        self,
        blender: Blender,
        *,
        timeout: float | None = None,
        min_successes: int = 1,
        max_concurrency: int | None = None,
    ) -> None:
        if min_successes < 1:
            raise ValueError(f"min_successes must be >= 1, got {min_successes}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive seconds or None, got {timeout}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1 or None, got {max_concurrency}")
        self.blender = blender
        self.timeout = timeout
        self.min_successes = min_successes
        self.max_concurrency = max_concurrency

    def _check(self, records: list[CandidateRecord]) -> tuple[CandidateRecord, ...]:
        successes = tuple(r for r in records if r.ok)
        if len(successes) < self.min_successes:
            raise EnsembleError(records, self.min_successes)
        return successes

    def _texts(self, successes: tuple[CandidateRecord, ...]) -> list[str]:
        return [r.answer.ranked_text for r in successes if r.answer is not None]

    def _finish(
        self, records: list[CandidateRecord], successes: tuple[CandidateRecord, ...], blend: BlendResult
    ) -> EnsembleOutcome:
        if not blend.fused:  # the chosen answer's own text (not its ranking form) is the answer
            best = successes[blend.best].answer
            assert best is not None
            blend = replace(blend, text=best.text)
        return EnsembleOutcome(tuple(records), blend, successes, blend.text)

    def select(
        self, prompt: str, records: list[CandidateRecord], *, fuse: bool = True, **generate_kwargs: Any
    ) -> EnsembleOutcome:
        """Rank (and fuse) already collected records; raises :class:`EnsembleError` below min_successes."""
        successes = self._check(records)
        (blend,) = self.blender.rank_and_fuse(
            [prompt], [self._texts(successes)], fuse=fuse, **generate_kwargs
        )
        return self._finish(records, successes, blend)

    async def aselect(
        self, prompt: str, records: list[CandidateRecord], *, fuse: bool = True, **generate_kwargs: Any
    ) -> EnsembleOutcome:
        """Async :meth:`select`: ranking in a worker thread, fusion through the fuser's async path."""
        successes = self._check(records)
        (blend,) = await self.blender.arank_and_fuse(
            [prompt], [self._texts(successes)], fuse=fuse, **generate_kwargs
        )
        return self._finish(records, successes, blend)

    def run(
        self, prompt: str, calls: Mapping[str, Callable[[], BackendAnswer]], *, fuse: bool = True
    ) -> EnsembleOutcome:
        """Sync: call the backends concurrently (threads), then rank and fuse."""
        records = call_backends(calls, timeout=self.timeout, max_concurrency=self.max_concurrency)
        return self.select(prompt, records, fuse=fuse)

    async def arun(
        self, prompt: str, calls: Mapping[str, Callable[[], Awaitable[BackendAnswer]]], *, fuse: bool = True
    ) -> EnsembleOutcome:
        """Async: await the backends concurrently, then rank and fuse off the event loop."""
        records = await acall_backends(calls, timeout=self.timeout, max_concurrency=self.max_concurrency)
        return await self.aselect(prompt, records, fuse=fuse)


def render_prompt(turns: Sequence[tuple[str, str]]) -> str:
    """The text the ranker reads as "instruction" for a chat: a lone user turn (with any system text
    before it) as is; a longer chat as ``ROLE: text`` lines."""
    system = [t for r, t in turns if r == "system" and t]
    rest = [(r, t) for r, t in turns if r != "system"]
    if len(rest) == 1 and rest[0][0] == "user":
        return "\n".join([*system, rest[0][1]])
    lines = [f"SYSTEM: {t}" for t in system] + [f"{r.upper()}: {t}" for r, t in rest]
    return "\n".join(lines)

"""Calling the backends: all at once (daemon threads for blocking calls, asyncio for async ones), each
within its timeout, every outcome recorded (an error, an empty answer or a timeout drops that backend, never
the call); and naming them uniquely.

What a timeout covers: a backend's clock starts when its call starts, not while it waits for a
``max_concurrency`` slot; a call past its timeout frees its slot at once, so a hung backend never starves
the others. A blocking call cannot be killed: it is left to finish in its daemon thread (which never keeps
the process alive) and counts as stuck (see :mod:`blender_core.base.threads`).
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from blender_core.base.threads import BackendThreads, Job
from blender_core.ensemble.records import BackendAnswer, CandidateRecord

T = TypeVar("T")


def name_backends(backends: Mapping[str, T] | Iterable[tuple[str, T]]) -> dict[str, T]:
    """Backends by unique name: a mapping keeps its names; ``(base name, backend)`` pairs are named
    ``base``, ``base#2``, ``base#3``, … in order (``#``: model ids often end in ``-2``).

    Raises:
        ValueError: no backend, or an empty name.
    """
    named: dict[str, T] = {}
    if isinstance(backends, Mapping):
        named = {str(k): v for k, v in backends.items()}
    else:
        for base, backend in backends:
            name, n = base, 1
            while name in named:
                n += 1
                name = f"{base}#{n}"
            named[name] = backend
    if not named:
        raise ValueError("backends is empty; pass at least one model (two or more to have something to rank)")
    if any(not name for name in named):
        raise ValueError("backend names must be non-empty strings")
    return named


class EmptyAnswerError(ValueError):
    """A backend answered, but with nothing: no text and nothing else to rank."""


@dataclass(frozen=True)
class Blocking:
    """A blocking call for the async engine, which runs it in a daemon thread: a backend whose async API
    would block the event loop (an async method that calls the sync one), or one with no async API."""

    call: Callable[[], BackendAnswer]


#: an async backend call: a coroutine function, or a :class:`Blocking` call
AsyncCall: TypeAlias = Callable[[], Awaitable[BackendAnswer]] | Blocking


def _error_text(exc: BaseException, timeout: float | None) -> str:
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return f"TimeoutError: no answer within {timeout} s"
    return f"{type(exc).__name__}: {exc}"


def _answer(value: Any, backend: str) -> BackendAnswer:
    """The backend's answer, checked: a BackendAnswer with something to rank (an empty answer is a failure)."""
    if not isinstance(value, BackendAnswer):
        raise TypeError(f"backend {backend!r} returned {type(value).__name__}, expected a BackendAnswer")
    if not value.ranked_text.strip():
        raise EmptyAnswerError("the backend answered with empty text (nothing to rank or fuse)")
    return value


def _record(name: str, job: Job, timeout: float | None) -> CandidateRecord:
    latency = (job.ended or time.perf_counter()) - job.started
    if job.error is not None:
        return CandidateRecord(name, None, latency, _error_text(job.error, timeout))
    try:
        return CandidateRecord(name, _answer(job.value, name), latency)
    except (TypeError, EmptyAnswerError) as exc:
        return CandidateRecord(name, None, latency, _error_text(exc, timeout))


def call_backends(
    calls: Mapping[str, Callable[[], BackendAnswer]],
    *,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    threads: BackendThreads | None = None,
) -> list[CandidateRecord]:
    """Run every blocking backend call concurrently in daemon threads, each within ``timeout`` seconds.

    At most ``max_concurrency`` run at once; a queued call's clock starts when it starts. A call past its
    timeout is recorded as timed out, frees its slot and is left to finish (a stuck call); a backend
    holding ``threads.max_stuck`` stuck calls is skipped at once. Records come in ``calls`` order.
    """
    threads = threads if threads is not None else BackendThreads(max_stuck=2)
    waiting = list(calls)
    limit = max_concurrency or len(waiting) or 1
    running: dict[str, Job] = {}
    records: dict[str, CandidateRecord] = {}
    ended: queue.Queue[Job] = queue.Queue()
    while waiting or running:
        while waiting and len(running) < limit:
            name = waiting.pop(0)
            refusal = threads.refuses(name)
            if refusal is not None:
                records[name] = CandidateRecord(name, None, 0.0, refusal)
                continue
            job = threads.start(name, calls[name])
            job.add_done_callback(ended.put)
            running[name] = job
        if not running:  # every backend left was skipped (stuck)
            continue
        next_deadline = min(j.started for j in running.values()) + timeout if timeout is not None else None
        try:
            job = ended.get(
                timeout=None if next_deadline is None else max(0.0, next_deadline - time.perf_counter())
            )
            if running.get(job.name) is job:
                del running[job.name]
                records[job.name] = _record(job.name, job, timeout)
        except queue.Empty:
            pass
        if timeout is not None:
            now = time.perf_counter()
            for name, job in list(running.items()):
                if now - job.started >= timeout and not job.done.is_set():
                    threads.abandon(job)
                    del running[name]
                    records[name] = CandidateRecord(
                        name, None, now - job.started, _error_text(TimeoutError(), timeout)
                    )
    return [records[name] for name in calls]


async def _blocking(
    name: str, call: Blocking, threads: BackendThreads, timeout: float | None
) -> CandidateRecord:
    """A blocking call from async code: in a daemon thread, awaited without blocking the event loop."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()

    def resolve() -> None:
        if not finished.done():
            finished.set_result(None)

    def wake(_: Job) -> None:
        loop.call_soon_threadsafe(resolve)

    job = threads.start(name, call.call)
    job.add_done_callback(wake)
    try:
        await asyncio.wait_for(asyncio.shield(finished), timeout)
    except (TimeoutError, asyncio.TimeoutError):
        threads.abandon(job)
        return CandidateRecord(
            name, None, time.perf_counter() - job.started, _error_text(TimeoutError(), timeout)
        )
    except asyncio.CancelledError:
        threads.abandon(job)
        raise
    return _record(name, job, timeout)


async def acall_backends(
    calls: Mapping[str, AsyncCall],
    *,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    threads: BackendThreads | None = None,
) -> list[CandidateRecord]:
    """Await every backend concurrently (at most ``max_concurrency`` at once), each within ``timeout`` s.

    Coroutine calls are cancelled at their timeout; :class:`Blocking` calls run in daemon threads, as in
    :func:`call_backends`. A failure becomes a record with ``error`` set; nothing is raised here.
    """
    threads = threads if threads is not None else BackendThreads(max_stuck=2)
    gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    async def one(name: str, call: AsyncCall) -> CandidateRecord:
        if gate is not None:
            await gate.acquire()  # waiting for a slot is not charged to the backend
        try:
            if isinstance(call, Blocking):
                refusal = threads.refuses(name)
                if refusal is not None:
                    return CandidateRecord(name, None, 0.0, refusal)
                return await _blocking(name, call, threads, timeout)
            start = time.perf_counter()
            try:
                return CandidateRecord(
                    name, _answer(await asyncio.wait_for(call(), timeout), name), time.perf_counter() - start
                )
            except Exception as exc:
                return CandidateRecord(name, None, time.perf_counter() - start, _error_text(exc, timeout))
        finally:
            if gate is not None:
                gate.release()

    return list(await asyncio.gather(*(one(n, c) for n, c in calls.items())))

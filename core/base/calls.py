"""Running a batch of calls (backends, judge calls) concurrently, each within its timeout, every outcome
recorded and nothing raised: the one scheduler the engine and the LLM judge share.

What a timeout covers: a call's clock starts when it starts, not while it waits for a ``max_concurrency``
slot; a call past its timeout frees its slot at once, so a hung call never starves the others. Blocking
calls run in daemon threads (:mod:`blender_core.base.threads`): one past its timeout is abandoned and
counts as stuck for its owner, and an owner holding ``threads.max_stuck`` stuck calls is refused at once.
Coroutine calls are cancelled at their timeout.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from blender_core.base.threads import BackendThreads, Job

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Blocking:
    """A blocking call for async code, which runs it in a daemon thread: a backend or judge whose async API
    would block the event loop (an async method that calls the sync one), or one with no async API."""

    call: Callable[[], Any]


#: an async call: a coroutine function, or a :class:`Blocking` call
AsyncCall: TypeAlias = Callable[[], Awaitable[Any]] | Blocking


@dataclass(frozen=True)
class CallResult:
    """One call's outcome: its value, the error it raised, that it timed out, or why it was not made.

    Attributes:
        value: what the call returned (when it ended in time without an error).
        error: what it raised.
        timed_out: it passed its timeout (a blocking one is left running, as a stuck call).
        refused: why it was not made at all (its owner holds too many stuck calls).
        latency_s: seconds from its start to its end (or to the timeout).
    """

    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    refused: str | None = None
    latency_s: float = 0.0


def _ended(job: Job) -> CallResult:
    return CallResult(job.value, job.error, latency_s=(job.ended or time.perf_counter()) - job.started)


def run_calls(
    calls: Mapping[K, Callable[[], Any]],
    *,
    owner: Callable[[K], str],
    timeout: float | None,
    max_concurrency: int | None,
    threads: BackendThreads,
) -> dict[K, CallResult]:
    """Run blocking ``calls`` in daemon threads, at most ``max_concurrency`` at once, each within ``timeout``
    seconds; ``owner(key)`` names whose stuck calls a call counts among. Results come in ``calls`` order."""
    waiting = deque(calls)
    limit = max_concurrency or len(waiting) or 1
    running: dict[K, Job] = {}
    out: dict[K, CallResult] = {}
    ended: queue.Queue[tuple[K, Job]] = queue.Queue()

    def report_to(key: K) -> Callable[[Job], None]:
        return lambda job: ended.put((key, job))

    while waiting or running:
        while waiting and len(running) < limit:
            key = waiting.popleft()
            job = threads.try_start(owner(key), calls[key])
            if isinstance(job, str):
                out[key] = CallResult(refused=job)
                continue
            job.add_done_callback(report_to(key))
            running[key] = job
        if not running:  # every call left was refused
            continue
        deadline = None if timeout is None else min(j.started for j in running.values()) + timeout
        try:
            key, job = ended.get(
                timeout=None if deadline is None else max(0.0, deadline - time.perf_counter())
            )
            if running.get(key) is job:  # not the late end of an abandoned call
                del running[key]
                out[key] = _ended(job)
        except queue.Empty:
            pass
        if timeout is not None:
            now = time.perf_counter()
            for key, job in list(running.items()):
                if now - job.started >= timeout and not job.done.is_set():
                    threads.abandon(job)
                    del running[key]
                    out[key] = CallResult(timed_out=True, latency_s=now - job.started)
    return {key: out[key] for key in calls}


async def _in_thread(name: str, call: Blocking, threads: BackendThreads, timeout: float | None) -> CallResult:
    """A blocking call from async code: in a daemon thread, awaited without blocking the event loop (or
    refused at once when its owner holds too many stuck calls)."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()

    def resolve() -> None:
        if not finished.done():
            finished.set_result(None)

    def wake(_: Job) -> None:
        loop.call_soon_threadsafe(resolve)

    job = threads.try_start(name, call.call)
    if isinstance(job, str):
        return CallResult(refused=job)
    job.add_done_callback(wake)
    try:
        await asyncio.wait_for(asyncio.shield(finished), timeout)
    except (TimeoutError, asyncio.TimeoutError):
        threads.abandon(job)
        return CallResult(timed_out=True, latency_s=time.perf_counter() - job.started)
    except asyncio.CancelledError:
        threads.abandon(job)
        raise
    return _ended(job)


async def arun_calls(
    calls: Mapping[K, AsyncCall],
    *,
    owner: Callable[[K], str],
    timeout: float | None,
    max_concurrency: int | None,
    threads: BackendThreads,
) -> dict[K, CallResult]:
    """Async :func:`run_calls`: coroutine calls are awaited (cancelled at their timeout), :class:`Blocking`
    calls run in daemon threads; at most ``max_concurrency`` at once."""
    gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    async def one(key: K, call: AsyncCall) -> CallResult:
        if gate is not None:
            await gate.acquire()  # waiting for a slot is not charged to the call
        try:
            if isinstance(call, Blocking):
                return await _in_thread(owner(key), call, threads, timeout)
            start = time.perf_counter()
            try:
                value = await asyncio.wait_for(call(), timeout)
            except (TimeoutError, asyncio.TimeoutError):
                return CallResult(timed_out=True, latency_s=time.perf_counter() - start)
            except Exception as exc:
                return CallResult(error=exc, latency_s=time.perf_counter() - start)
            return CallResult(value, latency_s=time.perf_counter() - start)
        finally:
            if gate is not None:
                gate.release()

    keys = list(calls)
    results = await asyncio.gather(*(one(k, calls[k]) for k in keys))
    return dict(zip(keys, results, strict=True))

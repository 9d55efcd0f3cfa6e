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

    call: Callable[..., Any]


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
        cancelled: why no one waited for it any more though it had not failed (a quorum of answers was in);
            a blocking one is left to end in its thread, counted as running until its timeout.
        latency_s: seconds from its start to its end (or to the timeout, or to its cancellation).
    """

    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    refused: str | None = None
    cancelled: str | None = None
    latency_s: float = 0.0

    @property
    def ended(self) -> bool:
        """Whether the call ran to its end (with a value or an error)."""
        return not (self.timed_out or self.refused or self.cancelled)


@dataclass(frozen=True)
class Quorum:
    """Stop waiting once ``size`` calls succeeded (``succeeded(result)``), after ``grace`` more seconds for
    further answers; the calls still running are cancelled and those not started are never made."""

    size: int
    grace: float = 0.0
    succeeded: Callable[[CallResult], bool] = lambda r: r.ended and r.error is None

    @property
    def reason(self) -> str:
        return f"a quorum of {self.size} answers was reached"


def _ended(job: Job) -> CallResult:
    return CallResult(job.value, job.error, latency_s=(job.ended or time.perf_counter()) - job.started)


def run_calls(
    calls: Mapping[K, Callable[[], Any]],
    *,
    owner: Callable[[K], str],
    timeout: float | None,
    max_concurrency: int | None,
    threads: BackendThreads,
    quorum: Quorum | None = None,
) -> dict[K, CallResult]:
    """Run blocking ``calls`` in daemon threads, at most ``max_concurrency`` at once, each within ``timeout``
    seconds; ``owner(key)`` names whose stuck calls a call counts among. With a ``quorum``, stop once it is
    met (and its grace is over). Results come in ``calls`` order."""
    waiting = deque(calls)
    limit = max_concurrency or len(waiting) or 1
    running: dict[K, Job] = {}
    out: dict[K, CallResult] = {}
    ended: queue.Queue[tuple[K, Job]] = queue.Queue()
    successes = 0
    quorum_ends: float | None = None  # when the quorum's grace is over

    def report_to(key: K) -> Callable[[Job], None]:
        return lambda job: ended.put((key, job))

    while waiting or running:
        if quorum_ends is not None and time.perf_counter() >= quorum_ends:
            break
        while quorum_ends is None and waiting and len(running) < limit:
            key = waiting.popleft()
            job = threads.try_start(owner(key), calls[key])
            if isinstance(job, str):
                out[key] = CallResult(refused=job)
                continue
            job.add_done_callback(report_to(key))
            running[key] = job
        if not running:  # every call left was refused, or not started after the quorum
            continue
        deadlines = [] if timeout is None else [min(j.started for j in running.values()) + timeout]
        deadline = min([*deadlines, *([quorum_ends] if quorum_ends is not None else [])], default=None)
        try:
            key, job = ended.get(
                timeout=None if deadline is None else max(0.0, deadline - time.perf_counter())
            )
            if running.get(key) is job:  # not the late end of an abandoned call
                del running[key]
                out[key] = _ended(job)
                if quorum is not None and quorum.succeeded(out[key]):
                    successes += 1
                    if successes >= quorum.size and quorum_ends is None:
                        quorum_ends = time.perf_counter() + quorum.grace
        except queue.Empty:
            pass
        if timeout is not None:
            now = time.perf_counter()
            for key, job in list(running.items()):
                if now - job.started >= timeout and not job.done.is_set():
                    threads.abandon(job)
                    del running[key]
                    out[key] = CallResult(timed_out=True, latency_s=now - job.started)
    if quorum is not None:
        now = time.perf_counter()
        for key, job in running.items():
            threads.detach(job, None if timeout is None else job.started + timeout)
            out[key] = CallResult(cancelled=quorum.reason, latency_s=now - job.started)
        for key in waiting:
            out[key] = CallResult(cancelled=quorum.reason)
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
    except asyncio.CancelledError:  # a quorum, or the caller went away: the thread runs on, counted
        threads.detach(job, None if timeout is None else job.started + timeout)
        raise
    return _ended(job)


async def arun_calls(
    calls: Mapping[K, AsyncCall],
    *,
    owner: Callable[[K], str],
    timeout: float | None,
    max_concurrency: int | None,
    threads: BackendThreads,
    quorum: Quorum | None = None,
) -> dict[K, CallResult]:
    """Async :func:`run_calls`: coroutine calls are awaited (cancelled at their timeout), :class:`Blocking`
    calls run in daemon threads; at most ``max_concurrency`` at once. With a ``quorum``, the calls still
    running once it is met (and its grace is over) are cancelled: a coroutine's (its HTTP request closed),
    a blocking one's thread left to end on its own."""
    gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    started: dict[K, float] = {}

    async def one(key: K, call: AsyncCall) -> CallResult:
        if gate is not None:
            await gate.acquire()  # waiting for a slot is not charged to the call
        try:
            started[key] = time.perf_counter()
            if isinstance(call, Blocking):
                return await _in_thread(owner(key), call, threads, timeout)
            start = started[key]
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
    tasks = {asyncio.ensure_future(one(k, calls[k])): k for k in keys}
    out: dict[K, CallResult] = {}
    try:
        pending = set(tasks)
        successes = 0
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                out[tasks[task]] = result = task.result()
                successes += quorum is not None and quorum.succeeded(result)
            if quorum is not None and successes >= quorum.size and pending:
                if quorum.grace > 0:
                    done, pending = await asyncio.wait(pending, timeout=quorum.grace)
                    for task in done:
                        out[tasks[task]] = task.result()
                break
    finally:  # the quorum was met, or this call itself was cancelled: no call outlives it
        left = [t for t in tasks if not t.done()]
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
    now = time.perf_counter()
    for key in keys:
        if key not in out:
            reason = quorum.reason if quorum is not None else "cancelled"
            out[key] = CallResult(cancelled=reason, latency_s=now - started[key] if key in started else 0.0)
    return {key: out[key] for key in keys}

"""Calling the backends: all at once (threads for sync calls, asyncio for async ones), each within its
timeout, every outcome recorded (an error or a timeout drops that backend, never the call); and naming
them uniquely."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

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

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
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from blender_core.base.calls import AsyncCall, Blocking, CallResult, Quorum, arun_calls, run_calls
from blender_core.base.threads import BackendThreads
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


__all__ = ["AsyncCall", "Blocking", "EmptyAnswerError", "acall_backends", "call_backends", "name_backends"]


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


def _record(name: str, result: CallResult, timeout: float | None) -> CandidateRecord:
    if result.cancelled is not None:  # not a failure: no one needed its answer any more
        return CandidateRecord(name, None, result.latency_s, cancelled=result.cancelled)
    if result.refused is not None:
        return CandidateRecord(name, None, 0.0, result.refused)
    if result.timed_out:
        return CandidateRecord(name, None, result.latency_s, _error_text(TimeoutError(), timeout))
    if result.error is not None:
        return CandidateRecord(name, None, result.latency_s, _error_text(result.error, timeout))
    try:
        return CandidateRecord(name, _answer(result.value, name), result.latency_s)
    except (TypeError, EmptyAnswerError) as exc:
        return CandidateRecord(name, None, result.latency_s, _error_text(exc, timeout))


def _answered(result: CallResult) -> bool:
    """Whether a call gave an answer that counts (what a quorum counts)."""
    if not result.ended or result.error is not None:
        return False
    try:
        _answer(result.value, "")
    except (TypeError, EmptyAnswerError):
        return False
    return True


def _quorum(size: int | None, grace: float) -> Quorum | None:
    return None if size is None else Quorum(size, grace, _answered)


def call_backends(
    calls: Mapping[str, Callable[[], BackendAnswer]],
    *,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    threads: BackendThreads | None = None,
    owner: Callable[[str], str] = str,
    quorum: int | None = None,
    quorum_grace: float = 0.0,
) -> list[CandidateRecord]:
    """Run every blocking backend call concurrently in daemon threads, each within ``timeout`` seconds.

    At most ``max_concurrency`` run at once; a queued call's clock starts when it starts. A call past its
    timeout is recorded as timed out, frees its slot and is left to finish (a stuck call); a backend
    (``owner(name)``: samples of one backend share it) holding ``threads.max_stuck`` stuck calls is
    skipped at once. With ``quorum``, the calls still running once that many answered (and
    ``quorum_grace`` seconds passed) are recorded as cancelled. Records come in ``calls`` order.
    """
    threads = threads if threads is not None else BackendThreads(max_stuck=2)
    results = run_calls(
        calls,
        owner=owner,
        timeout=timeout,
        max_concurrency=max_concurrency,
        threads=threads,
        quorum=_quorum(quorum, quorum_grace),
    )
    return [_record(name, result, timeout) for name, result in results.items()]


async def acall_backends(
    calls: Mapping[str, AsyncCall],
    *,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    threads: BackendThreads | None = None,
    owner: Callable[[str], str] = str,
    quorum: int | None = None,
    quorum_grace: float = 0.0,
) -> list[CandidateRecord]:
    """Await every backend concurrently (at most ``max_concurrency`` at once), each within ``timeout`` s.

    Coroutine calls are cancelled at their timeout, or once a ``quorum`` answered (their HTTP requests
    closed); :class:`Blocking` calls run in daemon threads, as in :func:`call_backends`. A failure becomes
    a record with ``error`` set; nothing is raised here.
    """
    threads = threads if threads is not None else BackendThreads(max_stuck=2)
    results = await arun_calls(
        calls,
        owner=owner,
        timeout=timeout,
        max_concurrency=max_concurrency,
        threads=threads,
        quorum=_quorum(quorum, quorum_grace),
    )
    return [_record(name, result, timeout) for name, result in results.items()]

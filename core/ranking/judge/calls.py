"""Running a batch of judge calls through the shared scheduler (:mod:`blender_core.base.calls`): every
outcome a reply or the reason there is none (an error, a timeout, a skip), nothing raised."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from blender_core.base.calls import AsyncCall, Blocking, CallResult, arun_calls, run_calls
from blender_core.base.threads import BackendThreads
from blender_core.ranking.judge.chat import ChatReply, as_reply

K = TypeVar("K", bound=Hashable)

__all__ = ["AsyncCall", "Blocking", "CallOutcome", "acall_all", "call_all"]


@dataclass(frozen=True)
class CallOutcome:
    """One judge call's outcome: its reply, or why there is none (an error, a timeout, a skip)."""

    reply: ChatReply | None
    error: str | None = None


def _outcome(result: CallResult, timeout: float | None) -> CallOutcome:
    if result.refused is not None:
        return CallOutcome(None, result.refused)
    if result.timed_out:
        return CallOutcome(None, f"TimeoutError: no answer within {timeout} s")
    error = result.error
    if error is None:
        try:
            return CallOutcome(as_reply(result.value))
        except TypeError as exc:
            error = exc
    return CallOutcome(None, f"{type(error).__name__}: {error}")


def call_all(
    calls: Mapping[K, Callable[[], Any]],
    *,
    name: str,
    timeout: float | None,
    max_concurrency: int,
    threads: BackendThreads,
) -> dict[K, CallOutcome]:
    """Run the blocking ``calls`` in daemon threads, at most ``max_concurrency`` at once, each within
    ``timeout`` seconds; ``name`` is the judge's, whose stuck calls ``threads`` counts."""
    results = run_calls(
        calls, owner=lambda _: name, timeout=timeout, max_concurrency=max_concurrency, threads=threads
    )
    return {key: _outcome(result, timeout) for key, result in results.items()}


async def acall_all(
    calls: Mapping[K, AsyncCall],
    *,
    name: str,
    timeout: float | None,
    max_concurrency: int,
    threads: BackendThreads,
) -> dict[K, CallOutcome]:
    """Async :func:`call_all`: coroutine calls are awaited (cancelled at their timeout), :class:`Blocking`
    calls run in daemon threads; at most ``max_concurrency`` at once."""
    results = await arun_calls(
        calls, owner=lambda _: name, timeout=timeout, max_concurrency=max_concurrency, threads=threads
    )
    return {key: _outcome(result, timeout) for key, result in results.items()}

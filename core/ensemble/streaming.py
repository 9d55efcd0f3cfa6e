"""Streams with a time-to-first-item limit and a fallback: the streaming half the adapters share.

A fused answer is streamed from the fuser; if the fuser fails or stays silent for longer than the
per-backend timeout before its first piece, the adapter streams the top-ranked answer instead and records
why. Once the first piece has arrived there is no way back (it was already shown), so later errors are
raised. :func:`guarded_stream` and :func:`aguarded_stream` do exactly that over any (async) iterator.

Example:
    >>> report = StreamReport()
    >>> list(guarded_stream(lambda: iter(["a", "b"]), timeout=1.0, fallback=lambda: ["best"], report=report))
    ['a', 'b']
    >>> def broken():
    ...     raise RuntimeError("fuser down")
    >>> list(guarded_stream(broken, timeout=None, fallback=lambda: ["best"], report=report))
    ['best']
    >>> report.error
    'RuntimeError: fuser down'
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

T = TypeVar("T")

_DONE = object()


@dataclass
class StreamReport:
    """What happened to one guarded stream (filled in while it is consumed).

    Attributes:
        error: why the fallback was streamed instead of the source (``None`` when it was not).
        fell_back: whether the fallback was streamed.
        first_item_s: seconds until the source's first item (``None`` when none came).
        elapsed_s: seconds from the start until the stream ended.
    """

    error: str | None = None
    fell_back: bool = False
    first_item_s: float | None = None
    elapsed_s: float = 0.0


class FirstItemTimeout(TimeoutError):
    """The source produced nothing within the time-to-first-item limit."""


class StreamDeadline(TimeoutError):
    """The source passed the deadline of the whole stream after its first item; it was asked to stop."""


def _first_limit(timeout: float | None, deadline: float | None) -> float | None:
    limits = [x for x in (timeout, deadline) if x is not None]
    return min(limits) if limits else None


def _passed(deadline: float | None) -> StreamDeadline:
    return StreamDeadline(f"the stream passed its {deadline} s deadline and was stopped")


def _no_first_item(timeout: float | None) -> FirstItemTimeout:
    return FirstItemTimeout(f"no output within {timeout} s (time-to-first-token limit)")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _threaded(make: Callable[[], Iterable[T]], stop: threading.Event) -> queue.Queue[tuple[str, Any]]:
    """Drive ``make()`` in a daemon thread (in a copy of the caller's context); items arrive on a queue."""
    out: queue.Queue[tuple[str, Any]] = queue.Queue()

    def produce() -> None:
        source: Any = None
        try:
            source = iter(make())
            for item in source:
                out.put(("item", item))
                if stop.is_set():
                    break
        except BaseException as exc:  # handed to the consumer, raised there
            out.put(("error", exc))
        else:
            out.put(("done", None))
        finally:
            close = getattr(source, "close", None)
            if stop.is_set() and close is not None:
                with contextlib.suppress(Exception):
                    close()

    ctx = contextvars.copy_context()
    threading.Thread(target=ctx.run, args=(produce,), daemon=True, name="blender-stream").start()
    return out


def guarded_stream(
    make: Callable[[], Iterable[T]],
    *,
    timeout: float | None,
    fallback: Callable[[], Iterable[T]] | None = None,
    report: StreamReport | None = None,
    deadline: float | None = None,
) -> Iterator[T]:
    """Yield the items of ``make()``, requiring the first one within ``timeout`` seconds.

    Before the first item, a failure (``make`` raising, the source raising, ending empty, or the timeout)
    streams ``fallback()`` instead and records the reason in ``report``; without a fallback it raises
    (:class:`FirstItemTimeout` for the timeout). After the first item, items flow with no time limit and
    errors propagate; with a ``deadline`` (seconds from the start for the whole stream) a source still
    producing when it passes is asked to stop and :class:`StreamDeadline` is raised. With a timeout or a
    deadline the source is driven in a daemon thread (a thread cannot be killed: a source past its limit
    is asked to stop at its next item and left to finish).
    """
    report = report if report is not None else StreamReport()
    start = time.perf_counter()
    stop = threading.Event()
    first: tuple[str, Any]
    items: Iterator[Any] | None = None
    q: queue.Queue[tuple[str, Any]] | None = None
    first_limit = _first_limit(timeout, deadline)
    try:
        if first_limit is None:
            items = iter(make())
            first = ("item", next(items, _DONE))
            if first[1] is _DONE:
                first = ("done", None)
        else:
            q = _threaded(make, stop)
            try:
                first = q.get(timeout=first_limit)
            except queue.Empty:
                first = ("error", _no_first_item(first_limit))
    except Exception as exc:
        first = ("error", exc)

    try:
        if first[0] != "item":
            stop.set()
            failure = cast(
                BaseException,
                first[1] if first[0] == "error" else ValueError("the stream ended without any output"),
            )
            if fallback is None:
                raise failure
            report.error, report.fell_back = _describe(failure), True
            yield from fallback()
            return
        report.first_item_s = time.perf_counter() - start
        yield cast(T, first[1])
        if items is not None:
            yield from items
            return
        assert q is not None
        while True:
            try:
                left = None if deadline is None else max(0.0, start + deadline - time.perf_counter())
                kind, value = q.get(timeout=left)
            except queue.Empty:
                raise _passed(deadline) from None
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        report.elapsed_s = time.perf_counter() - start


async def aguarded_stream(
    make: Callable[[], AsyncIterator[T]],
    *,
    timeout: float | None,
    fallback: Callable[[], Iterable[T]] | None = None,
    report: StreamReport | None = None,
    deadline: float | None = None,
) -> AsyncIterator[T]:
    """Async :func:`guarded_stream`: the first item is awaited with ``asyncio.wait_for``; a source past its
    limit is cancelled and closed."""
    report = report if report is not None else StreamReport()
    start = time.perf_counter()
    source: AsyncIterator[T] | None = None
    first: tuple[str, Any]
    first_limit = _first_limit(timeout, deadline)
    try:
        source = make()
        first = ("item", await asyncio.wait_for(anext(source), first_limit))
    except StopAsyncIteration:
        first = ("done", None)
    except (TimeoutError, asyncio.TimeoutError):
        first = ("error", _no_first_item(first_limit))
    except Exception as exc:
        first = ("error", exc)

    try:
        if first[0] != "item":
            failure = cast(
                BaseException,
                first[1] if first[0] == "error" else ValueError("the stream ended without any output"),
            )
            if fallback is None:
                raise failure
            report.error, report.fell_back = _describe(failure), True
            for item in fallback():
                yield item
            return
        report.first_item_s = time.perf_counter() - start
        yield cast(T, first[1])
        assert source is not None
        while True:
            left = None if deadline is None else max(0.0, start + deadline - time.perf_counter())
            try:
                item = await asyncio.wait_for(anext(source), left)
            except StopAsyncIteration:
                return
            except (TimeoutError, asyncio.TimeoutError):
                raise _passed(deadline) from None
            yield item
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        report.elapsed_s = time.perf_counter() - start

"""OpenTelemetry tracing when ``opentelemetry-api`` is installed, looked for once and only when asked.

Without the package :func:`get_tracer` returns None and nothing of OpenTelemetry is imported. With it but
no SDK configured, the tracer is OpenTelemetry's no-op one: its spans do not record, and the engine stops
at the first one (one ``start_span`` per request, nothing else).

Example:
    >>> tracer = get_tracer()  # None without opentelemetry-api
    >>> tracer is None or hasattr(tracer, "start_span")
    True
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")

#: the instrumentation scope of every span (what a backend shows as the library that made them)
SCOPE = "blender_core"


@dataclass(frozen=True)
class Otel:
    """The parts of ``opentelemetry-api`` the engine uses."""

    trace: ModuleType
    context: ModuleType
    span_kind: Any
    status: Any
    status_code: Any


_lock = threading.Lock()
_found: list[Otel | None] = []  # empty: not looked for yet


def otel() -> Otel | None:
    """OpenTelemetry's API, or None when ``opentelemetry-api`` is not installed (looked for once)."""
    if _found:
        return _found[0]
    with _lock:
        if not _found:
            _found.append(_load())
    return _found[0]


def _load() -> Otel | None:
    try:
        from opentelemetry import context, trace
    except ImportError:
        return None
    return Otel(trace, context, trace.SpanKind, trace.Status, trace.StatusCode)


def get_tracer(tracer_provider: Any = None) -> Any:
    """The tracer of ``tracer_provider`` (None: the global one, also when it is set later, as
    ``opentelemetry-instrument`` does), or None without ``opentelemetry-api``."""
    api = otel()
    if api is None:
        return None
    return api.trace.get_tracer(SCOPE, tracer_provider=tracer_provider)


def in_context(ctx: Any, make: Callable[[], Iterable[T]]) -> Iterator[T]:
    """The items of ``make()``, each produced with ``ctx`` as the current context (so that spans opened while
    producing them nest under its span), wherever and however slowly the iterator is consumed: the context
    is attached around each step and detached before the item is handed out."""
    api = otel()
    assert api is not None  # only called with a recording span
    token = api.context.attach(ctx)
    try:
        items = iter(make())
    finally:
        api.context.detach(token)
    try:
        while True:
            token = api.context.attach(ctx)
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                api.context.detach(token)
            yield item
    finally:  # stopped early (a deadline): the source is closed at once, not whenever it is collected
        close = getattr(items, "close", None)
        if close is not None:
            close()


async def ain_context(ctx: Any, make: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
    """Async :func:`in_context`."""
    api = otel()
    assert api is not None
    token = api.context.attach(ctx)
    try:
        items = make()
    finally:
        api.context.detach(token)
    try:
        while True:
            token = api.context.attach(ctx)
            try:
                item = await anext(items)
            except StopAsyncIteration:
                return
            finally:
                api.context.detach(token)
            yield item
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()

"""A tracer provider per test with an in-memory exporter, and reading the span tree it caught."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@dataclass
class Traced:
    """A provider of its own (the global one is never set) and what it exported."""

    provider: TracerProvider = field(default_factory=TracerProvider)
    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)

    def __post_init__(self) -> None:
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    @contextmanager
    def parent(self, name: str = "app") -> Iterator[Any]:
        """A span the test opens, as an app that already traces would: the ensemble's go under it."""
        with self.provider.get_tracer("tests").start_as_current_span(name) as span:
            yield span

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.named(name)
        return span

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.spans if s.parent is not None and s.parent.span_id == parent.context.span_id]

    def child_names(self, parent: ReadableSpan) -> list[str]:
        return sorted(s.name for s in self.children(parent))


def by_backend(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    """Backend call spans by candidate name (``blender.backend``)."""
    return {str(s.attributes["blender.backend"]): s for s in spans if s.attributes and "blender.backend" in s.attributes}


def is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    return child.parent is not None and child.parent.span_id == parent.context.span_id

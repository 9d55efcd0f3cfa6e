"""``blender-llm serve`` with OpenTelemetry's SDK recording every span: the ``serve+obs`` side of
``serve_load.py --observability``.

A ``TracerProvider`` with a ``BatchSpanProcessor`` (what production uses) exporting through
``ConsoleSpanExporter`` into ``/dev/null``: every span is made, batched and serialized to JSON as an
exporter would, then thrown away, so the side pays what tracing costs a server without needing a collector.

    python benchmarks/_traced_serve.py serve --config ensemble.toml --port 8002
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=open(os.devnull, "w"))))
trace.set_tracer_provider(provider)

from blender_core.app.cli import app  # noqa: E402  (after the provider: the engine finds it set)

if __name__ == "__main__":
    app()

"""``blender-llm serve`` as a side of ``serve_load.py`` that needs more than the plain command, set by the
environment:

- ``BENCH_TRACED=1`` (the ``serve+obs`` side of ``--observability``): OpenTelemetry's SDK records every span,
  a ``TracerProvider`` with a ``BatchSpanProcessor`` (what production uses) exporting through
  ``ConsoleSpanExporter`` into ``/dev/null``: every span is made, batched and serialized to JSON as an
  exporter would, then thrown away, so the side pays what tracing costs a server without needing a collector;
- ``BENCH_RANKER=trivial`` (``--ranker trivial``): the config's ``ranker = "trivial"`` is the benchmarks'
  trivial ranker (``_trivial_ranker.py``), so the side costs what the server itself costs.

    BENCH_TRACED=1 python benchmarks/_serve_side.py serve --config ensemble.toml --port 8002
"""

from __future__ import annotations

import os

if os.environ.get("BENCH_TRACED") == "1":
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=open(os.devnull, "w"))))
    trace.set_tracer_provider(provider)

if os.environ.get("BENCH_RANKER") == "trivial":
    from _trivial_ranker import serve_as_spec

    serve_as_spec()

from blender_core.app.cli import app  # after the provider: the engine finds it set

if __name__ == "__main__":
    app()

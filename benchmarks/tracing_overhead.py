"""What tracing costs per ensemble call: the engine with instant fake backends, tracing off vs on.

    python benchmarks/tracing_overhead.py [--calls 2000] [--rounds 5] [--backends 3]

Modes, interleaved round by round in one process so that the machine's load hits each alike:

- ``off``: no tracer (what an install without ``opentelemetry-api`` runs: nothing is looked up);
- ``noop``: ``opentelemetry-api`` installed, no SDK configured (the global no-op provider): one
  non-recording span per request, then nothing;
- ``sdk``: the SDK recording every span into a batch processor whose exporter drops them (the cost of
  making the spans, without a network).

Each call asks ``--backends`` backends that answer at once, ranks them by length and answers with the best
(no fuser): the engine's own cost is all there is, so the overhead is as large a share as it can be. Prints
the median and mean microseconds per call of each mode and the difference to ``off``; whole calls on a
shared machine vary by more than the no-op path costs, so the added code is also timed alone: a request's
span check (``Ensemble._spans``) per mode, and the no-op span calls every request makes (``NO_SPANS``:
what ``off`` and ``noop`` add to the engine of before tracing).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' fake ranker

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402

from blender_core.ensemble import BackendAnswer, Ensemble  # noqa: E402
from blender_core.ensemble.policy import CallRound, RankRound  # noqa: E402
from blender_core.ensemble.spans import NO_SPANS  # noqa: E402
from tests.helpers.core_fakes import LengthRanker  # noqa: E402


class Dropping(SpanExporter):
    """Takes every batch and keeps nothing."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def engines(exporter: Dropping) -> dict[str, Ensemble]:
    off = Ensemble(LengthRanker(), None, timeout=5)
    off.tracer = None  # as without opentelemetry-api
    noop = Ensemble(LengthRanker(), None, timeout=5)  # the global provider: none set, a no-op
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=100_000))
    sdk = Ensemble(LengthRanker(), None, timeout=5, tracer_provider=provider)
    return {"off": off, "noop": noop, "sdk": sdk}


def per_call_us(engine: Ensemble, calls: dict[str, Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        engine.run("What is 2+2?", calls)
        out.append((time.perf_counter() - start) * 1e6)
    return out


STEP, RANK = CallRound((), 1, 1), RankRound((), ())


def no_op_request(outcome: Any, bound: dict[str, Any], records: list[Any]) -> None:
    """The span calls of one plain request when nothing records, as the engine makes them."""
    spans, step, rank = NO_SPANS, STEP, RANK
    with spans.request():
        spans.calls(step, bound, aio=False)
        spans.called(step, records)
        with spans.ranking(rank) as ranked:
            ranked(outcome)
        spans.answered(spans.decided(outcome))


def micro_us(fn: Any, number: int = 20_000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per mode per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", type=int, default=3)
    args = parser.parse_args()
    answers = {f"b{k}": BackendAnswer("x" * (k + 1)) for k in range(args.backends)}
    calls = {name: (lambda a=a: a) for name, a in answers.items()}
    exporter = Dropping()
    modes = engines(exporter)
    for engine in modes.values():  # warm-up
        per_call_us(engine, calls, 200)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode, engine in modes.items():
            times[mode] += per_call_us(engine, calls, args.calls)
    base_median, base_mean = statistics.median(times["off"]), statistics.fmean(times["off"])
    print(f"{args.calls * args.rounds} calls per mode, {args.backends} instant backends, no fuser")
    print(f"{'mode':<6} {'median us':>10} {'mean us':>10} {'median +us':>11} {'mean +us':>9}")
    for mode, t in times.items():
        median, mean = statistics.median(t), statistics.fmean(t)
        print(f"{mode:<6} {median:>10.1f} {mean:>10.1f} {median - base_median:>+11.1f} {mean - base_mean:>+9.1f}")
    prompt = "What is 2+2?"
    for mode in ("off", "noop", "sdk"):
        print(f"request span check, {mode}: {micro_us(lambda m=modes[mode]: m._spans(prompt)):.2f} us")
    outcome = modes["off"].run(prompt, calls)
    records = list(outcome.records)
    tracer = TracerProvider().get_tracer("bare")
    print(f"the SDK alone, one span started and ended: {micro_us(lambda: tracer.start_span('x').end()):.2f} us")
    print(f"no-op span calls of one request: {micro_us(lambda: no_op_request(outcome, calls, records)):.2f} us")
    print(f"spans exported by the sdk mode (after warm-up and the rounds, as far as flushed): {exporter.spans}")


if __name__ == "__main__":
    main()

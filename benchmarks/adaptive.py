"""Adaptive ensembles (issue 22): what a quorum saves in latency, and the cost–quality curves of calibrate.

    python benchmarks/adaptive.py [--part latency|curves|both] [--requests 16] [--limit 25] [--num-threads 1] [--out DIR]

1. **Latency** through the real engine (``Ensemble.arun``, the built-in ranker): three fake async backends
   answering after 0.1, 0.15 and 3 s, ``--requests`` requests alternating ``quorum = 2`` and every backend;
   p50 / p95 of each side's seconds, and how many calls of the slow backend were cancelled (counted by the
   backend itself, as its coroutine sees the cancellation, and by the engine's account).
2. **Curves**: ``calibrate`` on ``ae2_poolB12`` (dev) with ``scripts/prices.example.toml`` (illustrative
   prices), policies cascade, quorum and all: with the built-in ranker (``builtin:pairrm-minilm-l6``, a small
   length-biased offline stand-in, not a strong ranker) on the first ``--limit`` instructions (it ranks
   about 132 pairs an instruction; on a shared 2-core CPU that is ~25 s each), and with the oracle (the judge
   labels as ranker) on the same instructions and on all 500: the gap between the two is what a stronger
   ranker could close. Reports go to ``--out`` (default ``benchmarks/results/adaptive``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
POOL = REPO.parent / "shared" / "data" / "alpacaeval" / "ae2_poolB12.dev.jsonl.gz"
PRICES = REPO / "scripts" / "prices.example.toml"
BUILTIN = "builtin:pairrm-minilm-l6"
LATENCIES = {"fast": 0.1, "medium": 0.15, "slow": 3.0}
ANSWERS = {"fast": "Paris.", "medium": "The capital of France is Paris.", "slow": "Paris, on the Seine."}


# ------------------------------------------------------------------------------------------ latency
async def _latency(requests: int) -> dict[str, Any]:
    from blender_core.ensemble import BackendAnswer, Ensemble

    cancelled = {name: 0 for name in LATENCIES}

    def backend(name: str) -> Any:
        async def call() -> BackendAnswer:
            try:
                await asyncio.sleep(LATENCIES[name])
            except asyncio.CancelledError:  # what an HTTP client sees when its request is closed
                cancelled[name] += 1
                raise
            return BackendAnswer(ANSWERS[name], usage={"input_tokens": 8, "output_tokens": 4})

        return call

    calls = {name: backend(name) for name in LATENCIES}
    engines = {"quorum=2": Ensemble(BUILTIN, quorum=2), "all": Ensemble(BUILTIN)}
    await engines["all"].arun("Capital of France?", calls)  # load the ranker once, outside the timings
    seconds: dict[str, list[float]] = {side: [] for side in engines}
    account: dict[str, int] = {side: 0 for side in engines}
    cancelled["slow"] = 0
    for k in range(requests):
        side = list(engines)[k % 2]  # alternating, so that a slower moment of the machine hits both
        start = time.perf_counter()
        outcome = await engines[side].arun("Capital of France?", calls)
        seconds[side].append(time.perf_counter() - start)
        account[side] += outcome.policy.cancelled if outcome.policy is not None else 0
    out: dict[str, Any] = {}
    for side, values in seconds.items():
        q = statistics.quantiles(values, n=20, method="inclusive") if len(values) > 1 else values * 19
        out[side] = {
            "requests": len(values),
            "p50_s": round(statistics.median(values), 3),
            "p95_s": round(q[18], 3),
            "cancelled_in_account": account[side],
        }
    out["slow calls cancelled (seen by the backend)"] = cancelled["slow"]
    return out


# ------------------------------------------------------------------------------------------ curves
def _curves(limit: int, out: Path) -> dict[str, Any]:
    from blender_core.data.alpacaeval import load_alpacaeval
    from blender_core.evaluation.calibrate import (
        OracleRanker,
        build_report,
        calibrate,
        load_prices,
        recommend,
    )
    from blender_core.evaluation.calibrate.report import write_report
    from blender_core.ranking import load_ranker

    records = load_alpacaeval(POOL)
    table = load_prices(PRICES)
    ranker = load_ranker(BUILTIN, cache_size=1_000_000)  # its logit cache: each pair compared once
    runs = [(f"builtin-{limit}", records[:limit], ranker), ("oracle-500", records, OracleRanker(records))]
    summary: dict[str, Any] = {}
    for name, subset, r in runs:
        for policy in ("cascade", "quorum", "all"):
            start = time.perf_counter()
            result = calibrate(subset, table, r, policy=policy, show_progress=True)
            report = build_report(result, recommend(result), data=str(POOL), seconds=time.perf_counter() - start)
            write_report(report, out / f"{policy}-{name}")
            summary[f"{policy}-{name}"] = {
                "points": [(p["label"], p["win_rate"], p["cost"]) for p in report["points"]],
                "oracle_points": None if report["oracle_points"] is None else [
                    (p["label"], p["win_rate"], p["cost"]) for p in report["oracle_points"]
                ],
                "baselines": {k: (v["win_rate"], v["cost"]) for k, v in report["baselines"].items()},
                "recommendation": report["recommendation"]["point"]["label"],
                "seconds": report["seconds"],
            }
            print(f"{policy} {name}: {report['seconds']} s; report in {out / f'{policy}-{name}'}", flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("latency", "curves", "both"), default="both")
    parser.add_argument("--requests", type=int, default=16, help="latency: requests, alternating the two sides")
    parser.add_argument("--limit", type=int, default=25, help="curves: instructions ranked by the built-in ranker")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "adaptive")
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads (1: fastest on a busy CPU)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.num_threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    if args.part in ("latency", "both"):
        results["latency"] = asyncio.run(_latency(args.requests))
        print(json.dumps(results["latency"], indent=2), flush=True)
    if args.part in ("curves", "both"):
        results["curves"] = _curves(args.limit, args.out)
    (args.out / f"summary-{args.part}.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

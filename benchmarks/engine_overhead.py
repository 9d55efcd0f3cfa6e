"""The ensemble engine alone against a bare ``asyncio.gather`` of the same backends and the same ranker call.

Three fake async backends answer after fixed latencies (0.1 / 0.15 / 0.2 s); the ranker is the tiny random
PairRM (``--ranker tiny``) or a trivial length ranker (``--ranker trivial``, which isolates the engine).
Each side serves ``--requests`` requests at concurrency 16 (at least 20, in proportion, at lower ones); the sides alternate
round by round, and each side keeps its best round (lowest p50), so that a noisy neighbour hurts both.

- ``gather``: ``asyncio.gather`` of the three calls, then ``ranker.rank`` in one ``asyncio.to_thread``.
- ``engine``: ``Ensemble.arun`` (no fuser: the best answer wins), with its defaults (cross-request
  batching on) unless ``--rank-max-batch 1``.

Prints, per concurrency: each side's p50 / p95 / mean latency, the engine's overhead per request over the
bare side (mean and p50), and the engine's p95 / p50 ratio (the issue's target: at most 1.5 at 16).

Run: ``python benchmarks/engine_overhead.py [--ranker tiny|trivial] [--requests 160] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import torch
from _trivial_ranker import trivial_ranker

from blender_core.ensemble import BackendAnswer, Ensemble, EnsembleConfig
from blender_core.ranking.interface import Ranker

LATENCIES = {"a": 0.1, "b": 0.15, "c": 0.2}


def backend(name: str, delay: float, k: int) -> Callable[[], Awaitable[BackendAnswer]]:
    text = f"answer {k} from {name}: " + " ".join(["the answer is good"] * (1 + len(name) % 3))

    async def call() -> BackendAnswer:
        await asyncio.sleep(delay)
        return BackendAnswer(text)

    return call


async def bare(prompt: str, k: int, ranker: Ranker) -> None:
    calls = [backend(n, d, k) for n, d in LATENCIES.items()]
    answers = await asyncio.gather(*(c() for c in calls))
    await asyncio.to_thread(ranker.rank, [prompt], [[a.text for a in answers]])


async def engine_call(engine: Ensemble, prompt: str, k: int) -> None:
    await engine.arun(prompt, {n: backend(n, d, k) for n, d in LATENCIES.items()})


async def serve(one: Callable[[int], Awaitable[None]], requests: int, concurrency: int) -> list[float]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def timed(k: int) -> None:
        async with gate:
            start = time.perf_counter()
            await one(k)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(timed(k) for k in range(requests)))
    return latencies


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def summary(xs: list[float]) -> dict[str, float]:
    return {"p50": pct(xs, 0.5), "p95": pct(xs, 0.95), "mean": statistics.fmean(xs)}


def load(kind: str) -> Ranker:
    if kind == "trivial":
        return trivial_ranker()
    from blender_core.ranking.pairrm.pair_ranker import PairRanker
    from blender_core.testing.pairrm import make_tiny_pairrm

    folder = make_tiny_pairrm(Path(tempfile.mkdtemp()), "reference")
    return PairRanker.from_pretrained(folder, device="cpu")


async def main(args: argparse.Namespace) -> None:
    ranker = load(args.ranker)
    config = EnsembleConfig(rank_max_batch=args.rank_max_batch, rank_batch_window_ms=args.rank_window_ms)
    engine = Ensemble(ranker, None, config)
    alone = Ensemble(ranker, None, EnsembleConfig(rank_max_batch=1))
    prompt = "Write a short poem about the sea"
    sides: dict[str, Callable[[int], Awaitable[None]]] = {
        "gather": lambda k: bare(prompt, k, ranker),
        "engine": lambda k: engine_call(engine, prompt, k),
    }
    if args.ungathered:
        sides["engine, rank_max_batch=1"] = lambda k: engine_call(alone, prompt, k)
    await serve(sides["engine"], 16, 16)  # warm: threads, the ranker's first passes
    await serve(sides["gather"], 16, 16)
    print(
        f"ranker={args.ranker} requests={args.requests} rounds={args.rounds} torch_threads="
        f"{torch.get_num_threads()} rank_max_batch={args.rank_max_batch} window_ms={args.rank_window_ms}"
    )
    for concurrency in args.concurrency:
        best: dict[str, dict[str, float]] = {}
        requests = max(20, args.requests * concurrency // 16)  # alone, 160 requests would take 32 s a side
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                got = summary(await serve(sides[name], requests, concurrency))
                if name not in best or got["p50"] < best[name]["p50"]:
                    best[name] = got
        for name, s in best.items():
            print(
                f"c={concurrency:<3} {name:7s} p50 {s['p50'] * 1e3:7.1f} ms  p95 {s['p95'] * 1e3:7.1f} ms  "
                f"mean {s['mean'] * 1e3:7.1f} ms"
            )
        e, g = best["engine"], best["gather"]
        print(
            f"c={concurrency:<3} engine overhead per request: mean {(e['mean'] - g['mean']) * 1e3:+.1f} ms, "
            f"p50 {(e['p50'] - g['p50']) * 1e3:+.1f} ms; engine p95/p50 {e['p95'] / e['p50']:.2f} "
            f"(gather {g['p95'] / g['p50']:.2f})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranker", choices=("tiny", "trivial"), default="tiny")
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rank-max-batch", type=int, default=EnsembleConfig().rank_max_batch)
    parser.add_argument("--rank-window-ms", type=float, default=EnsembleConfig().rank_batch_window_ms)
    parser.add_argument("--ungathered", action="store_true", help="a third side: the engine, no gathering")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)
    asyncio.run(main(cli))

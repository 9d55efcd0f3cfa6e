"""Soak: many ensemble calls over backends that randomly answer, answer slowly, fail, answer empty or hang.

    python benchmarks/soak.py [--calls 300] [--seconds 90] [--backends 5] [--timeout 0.2] [--seed 0]

Runs the core engine (``blender_core.ensemble.Ensemble``) sync (``run``: daemon threads) and async (``arun``:
asyncio, with a third of the backends blocking calls run in threads), bounded by ``--calls`` per mode and
``--seconds`` in all. Each backend's behaviour per call is drawn beforehand, so every record can be checked
against what was planned: an answer must be that backend's answer to *that* call (no cross-talk), a planned
failure, empty answer or hang must be reported as such, a call whose backends all fail must raise, and no
call may be lost. Prints calls/s, latency percentiles, backend threads and memory at start and end, and the
counts of wrong and lost answers (both must be 0; the script exits 1 otherwise). A hung call ends after
``--hang-seconds`` (far past the timeout, so it is stuck meanwhile) or when released at the end, so the
script always ends.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from _trivial_ranker import trivial_ranker

from blender_core.ensemble import BackendAnswer, Blocking, Ensemble, EnsembleConfig, EnsembleError

BEHAVIOURS = {  # share of calls; the rest answer at once
    "slow": 0.15,  # answers in 30-70% of the timeout
    "late": 0.05,  # answers after 1.5x the timeout: a timeout
    "fail": 0.10,
    "empty": 0.05,
    "hang": 0.05,  # answers after --hang-seconds (far past the timeout): a stuck call, until it ends
}


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    lost: int = 0
    calls: int = 0
    all_failed: int = 0
    peak_threads: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


def draw(rng: random.Random) -> str:
    x, acc = rng.random(), 0.0
    for name, share in BEHAVIOURS.items():
        acc += share
        if x < acc:
            return name
    return "ok"


def behaviour_call(
    name: str,
    call_id: int,
    kind: str,
    timeout: float,
    hang_s: float,
    release: threading.Event,
    rng: random.Random,
) -> Callable[[], BackendAnswer]:
    delay = {"slow": rng.uniform(0.3, 0.7) * timeout, "late": 1.5 * timeout}.get(kind, 0.0)

    def call() -> BackendAnswer:
        if kind == "hang":
            release.wait(hang_s)
        elif delay:
            time.sleep(delay)
        if kind == "fail":
            raise RuntimeError(f"{name} failed on call {call_id}")
        text = "" if kind == "empty" else f"{name}:{call_id}:" + "x" * rng.randint(1, 40)
        return BackendAnswer(text)

    return call


def expected_error(kind: str, error: str | None) -> bool:
    """Whether a record's error is what its planned behaviour must give."""
    if kind in ("ok", "slow"):
        return error is None or error.startswith("BackendStuck")
    if kind == "fail":
        return error is not None and (error.startswith("RuntimeError") or error.startswith("BackendStuck"))
    if kind == "empty":
        return error is not None and (
            error.startswith("EmptyAnswerError") or error.startswith("BackendStuck")
        )
    return error is not None and (error.startswith("TimeoutError") or error.startswith("BackendStuck"))


def check(stats: Stats, call_id: int, plan: dict[str, str], outcome: object) -> None:
    stats.calls += 1
    stats.peak_threads = max(stats.peak_threads, backend_threads())
    if isinstance(outcome, EnsembleError):
        if any(r.ok for r in outcome.records):
            stats.wrong.append(f"call {call_id}: EnsembleError although a backend answered")
        stats.all_failed += 1
        records = outcome.records
    else:
        records = outcome.records  # type: ignore[attr-defined]
        best = outcome.best  # type: ignore[attr-defined]
        if not outcome.text.startswith(f"{best.backend}:{call_id}:"):  # type: ignore[attr-defined]
            stats.wrong.append(
                f"call {call_id}: answer {outcome.text[:30]!r} is not {best.backend}'s answer to it"
            )  # type: ignore[attr-defined]
    if [r.backend for r in records] != list(plan):
        stats.lost += 1
    for r in records:
        key = "ok" if r.error is None else r.error.split(":")[0]
        stats.outcomes[key] = stats.outcomes.get(key, 0) + 1
        if not expected_error(plan[r.backend], r.error):
            stats.wrong.append(f"call {call_id}: {r.backend} planned {plan[r.backend]!r} but got {r.error!r}")
        if r.answer is not None and not r.answer.text.startswith(f"{r.backend}:{call_id}:"):
            stats.wrong.append(f"call {call_id}: {r.backend} holds another call's answer")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def backend_threads() -> int:
    return sum(t.name.startswith("blender-backend") for t in threading.enumerate())


def soak_sync(
    engine: Ensemble,
    names: list[str],
    n: int,
    budget: float,
    args: argparse.Namespace,
    release: threading.Event,
    rng: random.Random,
) -> Stats:
    stats = Stats()
    stop = time.monotonic() + budget
    for call_id in range(n):
        if time.monotonic() > stop:
            break
        plan = {b: draw(rng) for b in names}
        calls = {
            b: behaviour_call(b, call_id, k, args.timeout, args.hang_seconds, release, rng)
            for b, k in plan.items()
        }
        start = time.perf_counter()
        try:
            outcome: object = engine.run("soak", calls)
        except EnsembleError as exc:
            outcome = exc
        stats.latencies.append(time.perf_counter() - start)
        check(stats, call_id, plan, outcome)
    return stats


async def soak_async(
    engine: Ensemble,
    names: list[str],
    n: int,
    budget: float,
    args: argparse.Namespace,
    release: threading.Event,
    rng: random.Random,
) -> Stats:
    stats = Stats()
    stop = time.monotonic() + budget

    def async_call(name: str, call_id: int, kind: str) -> object:
        sync = behaviour_call(name, call_id, kind, args.timeout, args.hang_seconds, release, rng)
        if names.index(name) % 3 == 2:  # a third of the backends block: run in threads
            return Blocking(sync)

        async def call() -> BackendAnswer:
            if kind == "hang":
                await asyncio.sleep(args.hang_seconds)
            delay = {"slow": rng.uniform(0.3, 0.7) * args.timeout, "late": 1.5 * args.timeout}.get(kind, 0.0)
            await asyncio.sleep(delay)
            if kind == "fail":
                raise RuntimeError(f"{name} failed on call {call_id}")
            return BackendAnswer("" if kind == "empty" else f"{name}:{call_id}:" + "y" * rng.randint(1, 40))

        return call

    for call_id in range(n):
        if time.monotonic() > stop:
            break
        plan = {b: draw(rng) for b in names}
        calls = {b: async_call(b, call_id, k) for b, k in plan.items()}
        start = time.perf_counter()
        try:
            outcome: object = await engine.arun("soak", calls)  # type: ignore[arg-type]
        except EnsembleError as exc:
            outcome = exc
        stats.latencies.append(time.perf_counter() - start)
        check(stats, call_id, plan, outcome)
    return stats


def report(mode: str, stats: Stats, elapsed: float) -> None:
    lat = sorted(stats.latencies)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")  # noqa: E731
    print(
        f"{mode:5s} calls {stats.calls:4d} in {elapsed:5.1f} s = {stats.calls / elapsed:6.1f} calls/s; latency p50 "
        f"{p(0.5) * 1000:6.1f} ms, p95 {p(0.95) * 1000:6.1f} ms, max {max(lat, default=0) * 1000:6.1f} ms; "
        f"all backends failed: {stats.all_failed}; wrong: {len(stats.wrong)}; lost: {stats.lost}; "
        f"peak backend threads {stats.peak_threads}"
    )
    print(f"      record outcomes: {dict(sorted(stats.outcomes.items()))}")
    for line in stats.wrong[:5]:
        print(f"      WRONG {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="ensemble calls per mode (sync, async)")
    parser.add_argument("--seconds", type=float, default=90.0, help="time budget for both modes together")
    parser.add_argument("--backends", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=0.2, help="the engine's per-backend timeout")
    parser.add_argument("--hang-seconds", type=float, default=3.0, help="how long a hung call takes to end")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.getLogger("blender_core").setLevel(logging.ERROR)  # the drops are counted, not logged one by one
    rng = random.Random(args.seed)
    names = [f"b{k}" for k in range(args.backends)]
    release = threading.Event()
    config = EnsembleConfig(timeout=args.timeout, max_stuck_calls=2)
    gc.collect()
    start_threads, start_rss = backend_threads(), rss_mb()
    print(
        f"soak: {args.backends} backends x up to {args.calls} calls per mode, timeout {args.timeout} s, behaviours "
        f"{BEHAVIOURS} (else ok), a hang lasting {args.hang_seconds} s; start: {start_threads} backend threads, {threading.active_count()} threads, RSS {start_rss:.1f} MB"
    )
    failed = False
    budget = args.seconds / 2
    for mode in ("sync", "async"):
        engine = Ensemble(trivial_ranker(), None, config)  # the longer answer wins: ranking is not soaked here
        t0 = time.perf_counter()
        if mode == "sync":
            stats = soak_sync(engine, names, args.calls, budget, args, release, rng)
        else:
            stats = asyncio.run(soak_async(engine, names, args.calls, budget, args, release, rng))
        report(mode, stats, time.perf_counter() - t0)
        print(
            f"      now: {backend_threads()} backend threads (stuck: "
            f"{ {n: engine.threads.stuck(n) for n in names if engine.threads.stuck(n)} }), RSS {rss_mb():.1f} MB"
        )
        failed |= bool(stats.wrong) or stats.lost > 0
    release.set()
    deadline = time.monotonic() + 10
    while backend_threads() > start_threads and time.monotonic() < deadline:
        time.sleep(0.05)
    gc.collect()
    print(
        f"end: {backend_threads()} backend threads after releasing the hung calls, {threading.active_count()} threads, "
        f"RSS {rss_mb():.1f} MB (start {start_rss:.1f} MB); {'FAILED' if failed else 'ok: no wrong or lost answer'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

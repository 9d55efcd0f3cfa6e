"""Load on ``blender-llm serve``: N chat completions at concurrency C against upstreams of fixed latency.

    python benchmarks/serve_load.py [--requests 400] [--concurrency 16] [--seconds 120]
                                    [--latencies 0.1,0.15,0.2] [--stream-share 0.5] [--ranker tiny]
                                    [--max-in-flight 2C] [--timeout 10]

Everything stays on loopback: the upstreams are the tests' fake OpenAI-compatible servers
(``tests/helpers/openai_upstreams.py``), each answering after its fixed latency; the server is the real
command (``python -m blender_core.app.cli serve``) in a subprocess of its own, so that its memory is its
own. The ranker is a tiny random PairRM checkpoint built offline (``--ranker tiny``: the server's own
cost, not the ranker's) or any spec ``load_ranker`` accepts (e.g. ``builtin:pairrm-minilm-l6``).

Bounded in count (``--requests``) and time (``--seconds``; requests not started by then are reported as
not run). Prints p50 / p95 latency, throughput, errors (must be 0; a 429 of an overloaded server is counted
apart, as refused), the overhead over the slowest upstream as a ratio (a request waits for every backend,
so the slowest upstream is the floor), the server's CPU time per request (what sizes ``max_in_flight`` per
core: see the README), and its RSS after warm-up, half-way and at the end (a leak grows between the last
two). Exits 1 on any error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' fake upstreams

from tests.helpers.openai_upstreams import FakeUpstream  # noqa: E402

MODEL = "blender-llm"
REFUSED = "429"  # an overloaded server's early refusal: not an error, counted apart
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ranker_spec(name: str, workdir: Path) -> str:
    if name != "tiny":
        return name
    from blender_core.testing.pairrm import make_tiny_pairrm

    return str(make_tiny_pairrm(workdir / "ranker", "reference", source_maxlength=64, candidate_maxlength=64))


def write_config(
    path: Path, ranker: str, fakes: list[FakeUpstream], max_in_flight: int, timeout: float = 10.0
) -> None:
    tables = "".join(
        f'\n[[backends]]\nname = "{f.name}"\nkind = "openai"\nbase_url = "{f.base_url}"\nmodel = "{f.name}"\n'
        for f in fakes
    )
    path.write_text(
        f'[ensemble]\nranker = "{ranker}"\ntop_k = 2\ntimeout = {timeout}\n\n'
        f"[limits]\nmax_in_flight = {max_in_flight}\nrequest_timeout = 30.0\n{tables}"
    )


def start_server(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "blender_core.app.cli",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
    ]
    cmd += ["--log-level", "warning"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def wait_ready(proc: subprocess.Popen[bytes], base: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} while starting")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server was not ready within {seconds} s")


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


async def one(http: httpx.AsyncClient, stream: bool, answers: set[str]) -> tuple[float, str | None]:
    """One request: its latency, and what was wrong with it (None: a right answer)."""
    body = {"model": MODEL, "messages": QUESTION, "stream": stream}
    start = time.perf_counter()
    try:
        if not stream:
            r = await http.post("/v1/chat/completions", json=body)
            if r.status_code == 429:
                return time.perf_counter() - start, REFUSED
            if r.status_code != 200:
                return time.perf_counter() - start, f"HTTP {r.status_code}: {r.text[:200]}"
            text = r.json()["choices"][0]["message"]["content"]
        else:
            pieces: list[str] = []
            async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.status_code == 429:
                    return time.perf_counter() - start, REFUSED
                if r.status_code != 200:
                    return time.perf_counter() - start, f"HTTP {r.status_code}"
                lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
            if not lines or lines[-1] != "data: [DONE]":
                return time.perf_counter() - start, "the stream did not end with [DONE]"
            for line in lines[:-1]:
                choices = json.loads(line[6:]).get("choices") or [{}]
                pieces.append(choices[0].get("delta", {}).get("content") or "")
            text = "".join(pieces)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
    latency = time.perf_counter() - start
    return latency, None if text in answers else f"unexpected answer {text[:80]!r}"


async def load(
    base: str, n: int, concurrency: int, seconds: float, stream_share: float, answers: set[str], pid: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    refused = 0
    rss: dict[str, float] = {}
    next_index = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:

        async def worker() -> None:
            nonlocal next_index, refused
            while next_index < n and time.monotonic() < deadline:
                k = next_index
                next_index += 1
                # every 1/stream_share-th request streams, spread evenly
                stream = int((k + 1) * stream_share) != int(k * stream_share)
                latency, error = await one(http, stream, answers)
                if error == REFUSED:
                    refused += 1
                    continue
                latencies.append(latency)
                if error is not None:
                    errors.append(error)
                if len(latencies) == n // 2:
                    rss["half"] = rss_mb(pid)

        server = psutil.Process(pid)
        cpu_start = sum(server.cpu_times()[:2])
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
        cpu = sum(server.cpu_times()[:2]) - cpu_start
    return {"latencies": latencies, "errors": errors, "refused": refused, "wall": wall, "rss": rss, "cpu": cpu}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=120.0, help="time limit of the measured run")
    parser.add_argument("--latencies", default="0.1,0.15,0.2", help="each upstream's fixed latency, seconds")
    parser.add_argument("--stream-share", type=float, default=0.5, help="share of streamed requests")
    parser.add_argument("--ranker", default="tiny", help="'tiny' (random, offline) or a ranker spec")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--max-in-flight", type=int, default=None, help="the server's (default: 2 x concurrency)")
    parser.add_argument("--timeout", type=float, default=10.0, help="the backends' timeout, seconds")
    args = parser.parse_args()
    if args.requests < 2 or args.concurrency < 1 or not 0 <= args.stream_share <= 1:
        parser.error("need --requests >= 2, --concurrency >= 1 and 0 <= --stream-share <= 1")
    latencies_s = [float(x) for x in args.latencies.split(",")]

    fakes = [
        FakeUpstream(f"up{k}", delay=d, answer=f"Paris (upstream {k}).", usage=(12, 4))
        for k, d in enumerate(latencies_s)
    ]
    answers = {f.answer for f in fakes}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for fake in fakes:
            fake.start()
        config, log, port = work / "ensemble.toml", work / "server.log", free_port()
        base = f"http://127.0.0.1:{port}"
        max_in_flight = args.max_in_flight or 2 * args.concurrency
        write_config(config, ranker_spec(args.ranker, work), fakes, max_in_flight, args.timeout)
        proc = start_server(config, port, log)
        try:
            wait_ready(proc, base, 120)
            warm = asyncio.run(
                load(
                    base,
                    args.warmup,
                    min(args.concurrency, args.warmup),
                    60,
                    args.stream_share,
                    answers,
                    proc.pid,
                )
            )
            if warm["errors"]:
                print("warm-up errors:", warm["errors"][:3])
            rss_start = rss_mb(proc.pid)
            run = asyncio.run(
                load(
                    base, args.requests, args.concurrency, args.seconds, args.stream_share, answers, proc.pid
                )
            )
            rss_end = rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            for fake in fakes:
                fake.stop()
        if proc.returncode not in (0, -signal.SIGTERM):
            print(log.read_text()[-3000:])

    lat = np.array(run["latencies"]) * 1000
    done = len(lat)
    slowest_ms = max(latencies_s) * 1000
    p50, p95, p99 = (float(np.percentile(lat, q)) for q in (50, 95, 99))
    print(
        f"serve_load: {done} of {args.requests} requests at concurrency {args.concurrency} "
        f"({args.stream_share:.0%} streamed), {len(fakes)} upstreams of {args.latencies} s, ranker {args.ranker}"
    )
    print(f"  latency: p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms, max {lat.max():.0f} ms")
    print(f"  throughput: {done / run['wall']:.1f} requests/s ({run['wall']:.1f} s)")
    print(f"  errors: {len(run['errors'])}" + (f" (first: {run['errors'][0]})" if run["errors"] else ""))
    if run["refused"]:
        print(f"  refused (429, overloaded): {run['refused']}")
    if done + run["refused"] < args.requests:
        print(f"  not run (past --seconds): {args.requests - done - run['refused']}")
    print(
        f"  overhead over the slowest upstream ({slowest_ms:.0f} ms): p50 x{p50 / slowest_ms:.2f}, "
        f"p95 x{p95 / slowest_ms:.2f}"
    )
    per_request = run["cpu"] / max(1, done + run["refused"])
    print(
        f"  server CPU: {1000 * per_request:.1f} ms per request, so at most {1 / per_request:.0f} requests/s "
        "per core"
    )
    half = run["rss"].get("half", float("nan"))
    print(
        f"  server RSS: {rss_start:.1f} MB after warm-up, {half:.1f} MB half-way, {rss_end:.1f} MB at the end "
        f"(second half: {rss_end - half:+.1f} MB)"
    )
    return 1 if run["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

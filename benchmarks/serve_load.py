"""Load on ``blender-llm serve`` beside the bare fan-out floor: N chat completions at concurrency C against
upstreams of fixed latency, the two servers loaded in alternating rounds.

    python benchmarks/serve_load.py [--requests 200] [--concurrency 16,4] [--rounds 3] [--seconds 120]
                                    [--latencies 0.1,0.15,0.2] [--stream-share 0.5] [--ranker tiny|trivial|SPEC]
                                    [--max-in-flight 2C] [--timeout 10] [--no-floor]
                                    [--compare-root OTHER_CHECKOUT ...] [--observability]

Everything stays on loopback: the upstreams are the tests' fake OpenAI-compatible servers
(``tests/helpers/openai_upstreams.py``), each answering after its fixed latency. The sides, each a real
server in a subprocess of its own (its CPU and memory its own), all started once and loaded one at a time:

- ``floor``: a bare FastAPI + httpx server that fans each request out to the same upstreams and returns the
  longest answer (``benchmarks/_fanout_floor.py``): the least any fan-out server costs;
- ``serve``: ``python -m blender_core.app.cli serve`` of this checkout;
- ``serve@DIR``, per ``--compare-root DIR``: the same command from another checkout of the repository (e.g.
  ``git archive main | tar -x -C /tmp/before``), for a before / after in the same run.
- ``serve+obs``, with ``--observability``: the same server with tracing and metrics on: OpenTelemetry's SDK
  recording every span and serializing it as an exporter would (``benchmarks/_serve_side.py``) and
  ``[server] metrics = "api"`` (the default); the ``serve`` side then runs with ``metrics = "off"`` and no
  SDK, so the two differ only by what observability costs.

The ranker is a tiny random PairRM checkpoint built offline (``--ranker tiny``: a small model, whose forward
passes are still most of the server's CPU), the benchmarks' trivial ranker (``--ranker trivial``: the longer
answer wins, so the sides cost what the server itself costs) or any spec ``load_ranker`` accepts (e.g.
``builtin:pairrm-minilm-l6``).

Each round loads every side in turn (the order alternating from round to round), after one warm-up per
side; each side keeps its best of the rounds (the machine's noise only ever slows a run down). Bounded in
count (``--requests``) and time (``--seconds`` per run; requests not started by then are reported as not
run). Prints, per concurrency and side, p50 / p95 latency, throughput, the server's CPU time per request
(what sizes ``max_in_flight`` per core: see the README) and the ratios to the floor; errors (must be 0; a
429 of an overloaded server is counted apart, as refused), and each server's RSS after warm-up and at the
end (a leak grows between the two). Exits 1 on any error.
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
from dataclasses import dataclass, field
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
    if name != "tiny":  # "trivial" is served by _serve_side.py (BENCH_RANKER)
        return name
    from blender_core.testing.pairrm import make_tiny_pairrm

    return str(make_tiny_pairrm(workdir / "ranker", "reference", source_maxlength=64, candidate_maxlength=64))


def write_config(
    path: Path,
    ranker: str,
    fakes: list[FakeUpstream],
    max_in_flight: int,
    timeout: float = 10.0,
    metrics: str | None = None,
) -> None:
    tables = "".join(
        f'\n[[backends]]\nname = "{f.name}"\nkind = "openai"\nbase_url = "{f.base_url}"\nmodel = "{f.name}"\n'
        for f in fakes
    )
    path.write_text(
        f'[ensemble]\nranker = "{ranker}"\ntop_k = 2\ntimeout = {timeout}\n\n'
        f"[limits]\nmax_in_flight = {max_in_flight}\nrequest_timeout = 30.0\n"
        + (f'\n[server]\nmetrics = "{metrics}"\n' if metrics else "")
        + tables
    )


def start_process(
    cmd: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)


def serve_command(config: Path, port: int, launcher: bool = False) -> list[str]:
    """The server's command: the CLI itself, or through ``_serve_side.py`` for a side that needs its
    ``BENCH_*`` environment (tracing on, the trivial ranker)."""
    launch = [str(ROOT / "benchmarks" / "_serve_side.py")] if launcher else ["-m", "blender_core.app.cli"]
    cmd = [
        sys.executable,
        *launch,
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
    ]
    return [*cmd, "--log-level", "warning"]


def checkout_env(root: Path, work: Path) -> dict[str, str]:
    """The environment that imports ``blender_core`` from another checkout (its ``core`` folder; this venv
    installs this checkout's, so a link named ``blender_core`` comes first on the path)."""
    shim = work / f"shim-{abs(hash(str(root)))}"
    shim.mkdir(exist_ok=True)
    link = shim / "blender_core"
    if not link.exists():
        link.symlink_to(root.resolve() / "core", target_is_directory=True)
    return {"PYTHONPATH": os.pathsep.join([str(shim), str(root.resolve())])}


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

        server = psutil.Process(pid)
        cpu_start = sum(server.cpu_times()[:2])
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
        cpu = sum(server.cpu_times()[:2]) - cpu_start
    return {"latencies": latencies, "errors": errors, "refused": refused, "wall": wall, "cpu": cpu}


@dataclass
class Side:
    """One server under load: its process, and the best of its rounds per measure."""

    name: str
    proc: subprocess.Popen[bytes]
    base: str
    log: Path
    rss_start: float = float("nan")
    best: dict[int, dict[str, float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    refused: int = 0
    not_run: int = 0

    def keep(self, concurrency: int, run: dict[str, Any], requests: int) -> None:
        lat = np.array(run["latencies"]) * 1000
        done = len(lat)
        self.errors += run["errors"]
        self.refused += run["refused"]
        self.not_run += requests - done - run["refused"]
        if not done:
            return
        got = {
            "p50": float(np.percentile(lat, 50)),
            "p95": float(np.percentile(lat, 95)),
            "rps": done / run["wall"],
            "cpu": 1000 * run["cpu"] / max(1, done + run["refused"]),
        }
        best = self.best.setdefault(concurrency, got)
        for key, value in got.items():
            best[key] = max(best[key], value) if key == "rps" else min(best[key], value)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def start_sides(args: argparse.Namespace, work: Path, fakes: list[FakeUpstream]) -> list[Side]:
    max_in_flight = args.max_in_flight or 2 * max(args.concurrency)
    config = work / "ensemble.toml"
    ranker = ranker_spec(args.ranker, work)
    # with --observability the plain side runs with metrics off, so the sides differ only by observability
    metrics = "off" if args.observability else None
    write_config(config, ranker, fakes, max_in_flight, args.timeout, metrics)
    specs: list[tuple[str, list[str], Path, dict[str, str] | None]] = []
    if args.floor:
        port = free_port()
        floor = [sys.executable, str(ROOT / "benchmarks" / "_fanout_floor.py"), "--port", str(port)]
        floor += ["--upstreams", ",".join(f.base_url for f in fakes), "--connections", str(2 * max_in_flight)]
        specs.append(("floor", floor, ROOT, None))
    bench = {"BENCH_RANKER": "trivial"} if args.ranker == "trivial" else {}
    specs.append(("serve", serve_command(config, free_port(), bool(bench)), ROOT, bench or None))
    if args.observability:
        observed = work / "observed.toml"
        write_config(observed, ranker, fakes, max_in_flight, args.timeout, "api")
        traced = {**bench, "BENCH_TRACED": "1"}
        specs.append(("serve+obs", serve_command(observed, free_port(), True), ROOT, traced))
    for root in args.compare_root:
        env = {**checkout_env(root, work), **bench}
        specs.append((f"serve@{root}", serve_command(config, free_port(), bool(bench)), root, env))
    sides = []
    for k, (name, cmd, cwd, env) in enumerate(specs):
        log = work / f"side{k}.log"
        port = int(cmd[cmd.index("--port") + 1])
        sides.append(Side(name, start_process(cmd, log, cwd, env), f"http://127.0.0.1:{port}", log))
    return sides


def _ratio(side: dict[str, float], floor: dict[str, float] | None, key: str) -> str:
    return f"x{side[key] / floor[key]:.2f}" if floor else "-"


def report(args: argparse.Namespace, sides: list[Side], fakes: list[FakeUpstream]) -> None:
    print(
        f"serve_load: {args.requests} requests per run, {args.rounds} rounds alternating "
        f"{', '.join(s.name for s in sides)} (each side's best kept); {args.stream_share:.0%} streamed, "
        f"{len(fakes)} upstreams of {args.latencies} s, ranker {args.ranker}"
    )
    floor = sides[0] if sides[0].name == "floor" else None
    rows = []
    for c in args.concurrency:
        for side in sides:
            b = side.best.get(c)
            if b is None:
                rows.append([c, side.name, "-", "-", "-", "-", "-", "-", "-"])
                continue
            f = floor.best.get(c) if floor is not None else None
            rows.append(
                [
                    c,
                    side.name,
                    f"{b['p50']:.0f}",
                    f"{b['p95']:.0f}",
                    f"{b['rps']:.1f}",
                    f"{b['cpu']:.1f}",
                    _ratio(b, f, "p50"),
                    _ratio(b, f, "p95"),
                    _ratio(b, f, "cpu"),
                ]
            )
    headers = [
        "conc.",
        "server",
        "p50 ms",
        "p95 ms",
        "req/s",
        "CPU ms/req",
        "p50/floor",
        "p95/floor",
        "CPU/floor",
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    for line in [headers, *rows]:
        print(
            "  "
            + "  ".join(
                str(x).rjust(w) if k > 1 else str(x).ljust(w)
                for k, (x, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    for side in sides:
        errors = f"{len(side.errors)}" + (f" (first: {side.errors[0]})" if side.errors else "")
        extra = f", refused (429) {side.refused}" if side.refused else ""
        extra += f", not run (past --seconds) {side.not_run}" if side.not_run else ""
        print(
            f"  {side.name}: errors {errors}{extra}; RSS {side.rss_start:.1f} MB after warm-up, "
            f"{rss_mb(side.proc.pid):.1f} MB at the end"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per run")
    parser.add_argument("--concurrency", default="16,4", help="comma-separated concurrencies, one row each")
    parser.add_argument("--rounds", type=int, default=3, help="runs per side and concurrency, alternating")
    parser.add_argument("--seconds", type=float, default=120.0, help="time limit of each measured run")
    parser.add_argument("--latencies", default="0.1,0.15,0.2", help="each upstream's fixed latency, seconds")
    parser.add_argument("--stream-share", type=float, default=0.5, help="share of streamed requests")
    parser.add_argument(
        "--ranker",
        default="tiny",
        help="'tiny' (random PairRM, offline), 'trivial' (the longer answer wins: the server's own cost) or a spec",
    )
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--max-in-flight", type=int, default=None, help="the server's (default: 2 x concurrency)"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="the backends' timeout, seconds")
    parser.add_argument("--no-floor", dest="floor", action="store_false", help="leave the bare fan-out out")
    parser.add_argument(
        "--compare-root",
        type=Path,
        action="append",
        default=[],
        help="another checkout whose server is loaded too (repeatable), e.g. the code before a change",
    )
    parser.add_argument(
        "--observability",
        action="store_true",
        help="also load the server with tracing (OpenTelemetry SDK) and metrics on, against both off",
    )
    args = parser.parse_args()
    args.concurrency = [int(x) for x in args.concurrency.split(",")]
    if args.requests < 2 or min(args.concurrency) < 1 or args.rounds < 1 or not 0 <= args.stream_share <= 1:
        parser.error("need --requests >= 2, --concurrency >= 1, --rounds >= 1 and 0 <= --stream-share <= 1")
    for root in args.compare_root:
        if not (root / "core" / "app" / "serve").is_dir():
            parser.error(f"--compare-root {root}: no core/app/serve there; give the root of a checkout")
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
        sides: list[Side] = []
        try:
            sides = start_sides(args, work, fakes)
            for side in sides:
                wait_ready(side.proc, side.base, 120)
                warm = asyncio.run(
                    load(
                        side.base,
                        args.warmup,
                        min(max(args.concurrency), args.warmup),
                        60,
                        args.stream_share,
                        answers,
                        side.proc.pid,
                    )
                )
                if warm["errors"]:
                    print(f"{side.name}: warm-up errors:", warm["errors"][:3])
                side.rss_start = rss_mb(side.proc.pid)
            for c in args.concurrency:
                for r in range(args.rounds):
                    for side in sides if r % 2 == 0 else sides[::-1]:
                        run = asyncio.run(
                            load(
                                side.base,
                                args.requests,
                                c,
                                args.seconds,
                                args.stream_share,
                                answers,
                                side.proc.pid,
                            )
                        )
                        side.keep(c, run, args.requests)
            report(args, sides, fakes)
        finally:
            for side in sides:
                stop(side.proc)
                if side.proc.returncode not in (0, -signal.SIGTERM):
                    print(f"{side.name} exited with {side.proc.returncode}:\n{side.log.read_text()[-3000:]}")
            for fake in fakes:
                fake.stop()
    return 1 if any(side.errors for side in sides) else 0


if __name__ == "__main__":
    sys.exit(main())

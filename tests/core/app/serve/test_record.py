"""``[record]``: the server records real requests (whole and streamed) over loopback upstream fakes; the files feed
``blender-llm label-pairs`` as they are, and its pairs choose what the server served; a request holding a key is
never recorded; a server killed with SIGKILL mid-traffic leaves only whole lines."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("langchain_openai")

from blender_core.app.serve.config import parse_config
from blender_core.recording.files import traffic_files
from tests.core.app.serve.support import ENV, MODEL, UPSTREAM_KEY, ServeProcess, backend, toml_config
from tests.helpers.openai_upstreams import FakeUpstream, LiveServer

pytestmark = [pytest.mark.allow_hosts(["127.0.0.1"])]

QUESTIONS = [f"Question {k}: what is the capital of France?" for k in range(6)]


def lines_in(folder: Path) -> list[dict[str, object]]:
    out = []
    for path in traffic_files(folder):
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path} ends with a partial line"
        out += [json.loads(line) for line in data.splitlines()]
    return out


def ask(base_url: str, question: str, *, stream: bool) -> str:
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "stream": stream}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        if not stream:
            return str(json.loads(r.read())["choices"][0]["message"]["content"])
        text = ""
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0]["delta"]
                text += delta.get("content") or ""
        return text


def test_served_requests_are_recorded_and_label_pairs_chooses_the_served_answers(
    tiny_reference_ckpt: Path, tmp_path: Path
) -> None:
    from blender_core.app.serve.app import create_app

    folder = tmp_path / "traffic"
    with (
        FakeUpstream("fast", answer="Paris is the capital.") as fast,
        FakeUpstream("slow", delay=0.05, answer="The capital of France is Paris, on the Seine.") as slow,
        FakeUpstream("terse", answer="Paris") as terse,
        FakeUpstream("failing", "error") as failing,
    ):
        config = parse_config(
            {
                "ensemble": {"ranker": str(tiny_reference_ckpt), "top_k": 2},
                "record": {"path": str(folder), "rotate_bytes": 4000},
                "backends": [backend(f) for f in (fast, slow, terse, failing)],
            }
        )
        app = create_app(config, environ=ENV)
        server = LiveServer(app).start()
        try:
            served = {q: ask(server.base_url, q, stream=k % 2 == 1) for k, q in enumerate(QUESTIONS)}
            ask(server.base_url, f"my key is {UPSTREAM_KEY}, keep it", stream=False)  # answered, never recorded
        finally:
            server.stop()  # a graceful stop: the recorder writes what is queued, then closes
        stats = app.state.served.recorder.stats()
    assert (stats.written, stats.redacted, stats.failed, stats.pending) == (len(QUESTIONS), 1, 0, 0)
    # /metrics shows the recorder's counts (read at each scrape)
    scraped = app.state.metrics.exposition().decode().splitlines()
    assert f'blender_record_requests_total{{result="written"}} {float(len(QUESTIONS))}' in scraped
    assert 'blender_record_requests_total{result="redacted"} 1.0' in scraped
    assert 'blender_record_requests_total{result="failed"} 0.0' in scraped
    assert "blender_sink_errors_total 0.0" in scraped
    files = traffic_files(folder)
    assert len(files) >= 2  # rotated
    recorded = lines_in(folder)
    assert {line["prompt"] for line in recorded} == set(QUESTIONS)
    assert UPSTREAM_KEY not in "".join(f.read_text() for f in files)
    for line in recorded:
        assert line["answer"] == served[str(line["prompt"])]
        assert line["models"] == ["fast", "slow", "terse"]
        assert [f["backend"] for f in line["served"]["failed"]] == ["failing"]  # type: ignore[index]

    out = tmp_path / "pairs.jsonl"
    cmd = [sys.executable, "-m", "blender_core.app.cli", "label-pairs", *map(str, files), "--out", str(out)]
    cmd += ["--model", str(tiny_reference_ckpt), "--pairs", "best-vs-each", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert {p["prompt"] for p in pairs} <= set(QUESTIONS)
    assert len(pairs) >= len(QUESTIONS)
    for pair in pairs:
        assert pair["chosen"] == served[pair["prompt"]]  # the served answer is the chosen side of each pair


def test_a_server_killed_mid_traffic_leaves_only_whole_lines(tiny_reference_ckpt: Path, tmp_path: Path) -> None:
    folder = tmp_path / "traffic"
    long_answer = "Paris. " * 3000  # lines of ~60 KB: a write the kill could cut, were it not one whole write
    with (
        FakeUpstream("fast", answer=long_answer) as fast,
        FakeUpstream("slow", delay=0.02, answer="The capital of France is Paris.") as slow,
    ):
        text = toml_config(tiny_reference_ckpt, [fast, slow], record={"path": str(folder), "rotate_bytes": 400_000})
        server = ServeProcess(tmp_path, text).start()
        stop = threading.Event()
        answered = []

        def client(k: int) -> None:
            for n in range(40):  # bounded: at most 40 requests per client
                if stop.is_set():
                    return
                try:
                    ask(server.base_url, f"client {k} request {n}", stream=n % 2 == 1)
                    answered.append(1)
                except (httpx.HTTPError, AssertionError):
                    return  # the server is gone

        try:
            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(client, k) for k in range(4)]
                deadline = time.monotonic() + 60
                while sum(len(p.read_bytes().splitlines()) for p in traffic_files(folder)) < 10:
                    assert time.monotonic() < deadline, server.log()
                    time.sleep(0.05)
                server.signal(signal.SIGKILL)  # mid-traffic: the clients are still sending
                assert server.wait(30) == -signal.SIGKILL
                stop.set()
                for f in futures:
                    f.result(timeout=60)
        finally:
            stop.set()
            server.kill()
    recorded = lines_in(folder)  # every line parses; every file ends with its newline
    assert len(recorded) >= 10
    assert all(line["models"] == ["fast", "slow"] for line in recorded)
    assert len({line["id"] for line in recorded}) == len(recorded)

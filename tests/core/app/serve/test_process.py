"""The real ``blender-llm serve`` command, in a subprocess on a loopback port: its signals and its log."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("langchain_openai")

from tests.core.app.serve.support import (
    MODEL,
    QUESTION,
    SERVER_KEY,
    UPSTREAM_KEY,
    ServeProcess,
    toml_config,
)
from tests.helpers.openai_upstreams import FakeUpstream

pytestmark = [pytest.mark.allow_hosts(["127.0.0.1"])]


def test_no_log_line_holds_a_key_not_even_one_sent_in_the_query_string(
    tiny_reference_ckpt: Path, tmp_path: Path
) -> None:
    with FakeUpstream("echo", echo_auth=True) as echo, FakeUpstream("failing", "error") as failing:
        text = toml_config(
            tiny_reference_ckpt, [echo, failing], server={"api_key_envs": ["BLENDER_TEST_KEY"]}
        )
        server = ServeProcess(tmp_path, text).start()
        try:
            # the right key, in the wrong place: refused, and written to the access log by uvicorn
            assert httpx.get(f"{server.base_url}/v1/models?api_key={SERVER_KEY}", timeout=30).status_code == 401
            r = httpx.post(
                f"{server.base_url}/v1/chat/completions?key={SERVER_KEY}",
                headers={"authorization": f"Bearer {SERVER_KEY}"},
                json={"model": MODEL, "messages": QUESTION},
                timeout=30,
            )
            assert r.status_code == 200, r.text
        finally:
            server.stop()
    log = server.log()
    assert '"GET /v1/models?api_key=*** HTTP/1.1" 401' in log, log
    assert '"POST /v1/chat/completions?key=*** HTTP/1.1" 200' in log
    assert "backend 'failing' dropped" in log  # its error quoted the upstream key
    assert SERVER_KEY not in log
    assert UPSTREAM_KEY not in log


def test_a_second_sigterm_during_the_graceful_stop_forces_the_exit(
    tiny_reference_ckpt: Path, tmp_path: Path
) -> None:
    with FakeUpstream("hanging", "hang") as hanging:
        text = toml_config(
            tiny_reference_ckpt, [hanging], ensemble={"timeout": 60.0}, limits={"request_timeout": 60.0}
        )
        server = ServeProcess(tmp_path, text).start()
        try:
            with ThreadPoolExecutor(1) as pool:
                body = {"model": MODEL, "messages": QUESTION}
                pending = pool.submit(httpx.post, f"{server.base_url}/v1/chat/completions", json=body, timeout=90)
                assert hanging.received.wait(30)
                server.signal(signal.SIGTERM)
                time.sleep(1.0)
                assert server.proc is not None
                assert server.proc.poll() is None  # the graceful stop waits for the request in flight...
                second = time.monotonic()
                server.signal(signal.SIGTERM)
                status = server.wait(10)  # ...until a second SIGTERM: then it exits at once
                took = time.monotonic() - second
                with pytest.raises(httpx.HTTPError):
                    pending.result(timeout=10).raise_for_status()
        finally:
            server.kill()
        assert hanging.closed.wait(5)  # its backend call was cut
    assert took < 5.0
    assert status == 1  # forced: not the graceful stop's 0 (before: killed by the re-raised SIGTERM)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_graceful_stop_exits_0_and_the_start_says_what_is_served(
    tiny_reference_ckpt: Path, tmp_path: Path, sig: int
) -> None:
    """Before: 143 after SIGTERM (the process ended by the signal uvicorn raised again), 130 after Ctrl-C;
    systemd and Kubernetes read either as a failure. The request in flight still finishes."""
    with (
        FakeUpstream("slow", delay=1.0, answer="Paris.") as slow,
        FakeUpstream("fast", answer="Paris!") as fast,
    ):
        text = toml_config(tiny_reference_ckpt, [slow, fast], server={"api_key_envs": ["BLENDER_TEST_KEY"]})
        text = text.replace('name = "fast"', 'name = "fast"\nsamples = 2')
        server = ServeProcess(tmp_path, text).start()
        try:
            with ThreadPoolExecutor(1) as pool:
                body = {"model": MODEL, "messages": QUESTION}
                headers = {"authorization": f"Bearer {SERVER_KEY}"}
                url = f"{server.base_url}/v1/chat/completions"
                pending = pool.submit(httpx.post, url, json=body, headers=headers, timeout=60)
                assert slow.received.wait(30)
                server.signal(sig)
                status = server.wait(60)
                assert pending.result(timeout=10).status_code == 200  # finished, not cut
        finally:
            server.kill()
    assert status == 0, server.log()
    log = server.log()
    block = log[log.index("blender-llm serve: listening on") :].splitlines()[:9]
    assert block[0] == f'blender-llm serve: listening on {server.base_url}/v1 (model "blender-llm")'
    assert block[1].split() == ["backends", "slow", "openai", "slow-model"]
    assert block[2].split() == ["fast", "openai", "fast-model", "2", "samples"]
    assert block[3].split() == ["ranker", str(tiny_reference_ckpt)]
    assert block[4] == "  fuser     none: the top-ranked answer is returned"
    assert block[5].startswith("  limits    max_running 32, max_in_flight 256, request_timeout 120 s")
    assert block[6] == "  keys      required (Authorization: Bearer; 1 accepted, from BLENDER_TEST_KEY)"
    assert block[7] == f"  metrics   {server.base_url}/metrics (the same keys as the API)"
    assert SERVER_KEY not in log


def test_metrics_on_a_port_of_their_own(tiny_reference_ckpt: Path, tmp_path: Path) -> None:
    """``metrics = "port"``: /metrics on its own listener (no keys), and not on the API's port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with FakeUpstream("fast", answer="Paris.") as fast:
        server_table = {"api_key_envs": ["BLENDER_TEST_KEY"], "metrics": "port", "metrics_port": port}
        server = ServeProcess(tmp_path, toml_config(tiny_reference_ckpt, [fast], server=server_table)).start()
        try:
            headers = {"authorization": f"Bearer {SERVER_KEY}"}
            body = {"model": MODEL, "messages": QUESTION}
            r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30)
            assert r.status_code == 200, r.text
            assert httpx.get(f"{server.base_url}/metrics", headers=headers, timeout=10).status_code == 404
            scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        finally:
            assert server.stop() == 0
    assert scraped.status_code == 200
    assert 'blender_requests_total{outcome="ok",status="200",stream="false"} 1.0' in scraped.text
    assert 'blender_backend_calls_total{backend="fast",outcome="ok"} 1.0' in scraped.text
    assert f"  metrics   http://127.0.0.1:{port}/metrics (a listener of its own, no keys)" in server.log()


def test_an_overloaded_server_queues_or_refuses_early_and_never_blames_the_backends(
    tiny_reference_ckpt: Path, tmp_path: Path
) -> None:
    """300 requests at once against two upstreams of 0.1 s with max_in_flight raised to 256: far more than
    2 cores serve at once. Each answer is a 200 whose backends all answered, or a 429 with Retry-After; never
    a 502 whose backends "timed out" because the server itself was too busy to read their answers."""
    fakes = [FakeUpstream(f"up{k}", delay=0.1, answer=f"Paris ({k}).") for k in range(2)]
    body = {"model": MODEL, "messages": QUESTION, "blender": {"account": True}}

    async def burst(base_url: str, n: int) -> list[httpx.Response | BaseException]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:
            calls = (http.post("/v1/chat/completions", json=body) for _ in range(n))
            return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 120)

    with contextlib.ExitStack() as stack:
        for fake in fakes:
            stack.enter_context(fake)
        text = toml_config(
            tiny_reference_ckpt,
            fakes,
            ensemble={"timeout": 5.0},
            limits={"max_in_flight": 256, "request_timeout": 15.0, "retry_after": 1},
        )
        server = ServeProcess(tmp_path, text).start()
        try:
            replies = asyncio.run(burst(server.base_url, 300))
        finally:
            server.stop()
    failures = [r for r in replies if isinstance(r, BaseException)]
    assert not failures, failures[:3]
    answered = [r for r in replies if isinstance(r, httpx.Response)]
    statuses = Counter(r.status_code for r in answered)
    wrong = [r.json()["error"]["message"][:300] for r in answered if r.status_code not in (200, 429)]
    assert set(statuses) <= {200, 429}, (statuses, wrong[:2])
    assert statuses[200] >= 100, statuses
    errors = [c["error"] for r in answered if r.status_code == 200 for c in r.json()["blender"]["candidates"]]
    assert errors == [None] * len(errors), Counter(errors)
    assert all(int(r.headers["retry-after"]) >= 1 for r in answered if r.status_code == 429)

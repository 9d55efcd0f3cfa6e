"""The real ``blender-llm serve`` command, in a subprocess on a loopback port: its signals and its log."""

from __future__ import annotations

import asyncio
import contextlib
import signal
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
    assert status == -signal.SIGTERM


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

"""The real ``blender-llm serve`` command, in a subprocess on a loopback port: its signals and its log."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("langchain_openai")

from tests.core.app.serve.support import (
    MODEL,
    QUESTION,
    ServeProcess,
    toml_config,
)
from tests.helpers.openai_upstreams import FakeUpstream

pytestmark = [pytest.mark.allow_hosts(["127.0.0.1"])]


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

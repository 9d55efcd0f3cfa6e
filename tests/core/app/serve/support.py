"""Shared by the ``blender-llm serve`` tests: the test keys, the request, how to start a server over fake
upstreams, and clients for it. The server's packages (``[serve]``) are imported where used: the other tests
of this folder run without them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from blender_core.app.serve.config import parse_config
from tests.helpers.openai_upstreams import FakeUpstream, LiveServer

if TYPE_CHECKING:
    import openai

SERVER_KEY = "test-server-key-0123456789"
UPSTREAM_KEY = "sk-upstream-SECRET-4242424242"
ENV = {"BLENDER_TEST_KEY": SERVER_KEY, "UPSTREAM_TEST_KEY": UPSTREAM_KEY}
MODEL = "blender-llm"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
FUSED = "Paris is the capital of France, on the Seine, famous for the Eiffel Tower."


def backend(fake: FakeUpstream, *, key: bool = True) -> dict[str, Any]:
    out = {"name": fake.name, "kind": "openai", "base_url": fake.base_url, "model": f"{fake.name}-model"}
    return {**out, "api_key_env": "UPSTREAM_TEST_KEY"} if key else out


def serve(ranker: Path, fakes: list[FakeUpstream], **sections: dict[str, Any]) -> LiveServer:
    from blender_core.app.serve.app import create_app

    ensemble = {"ranker": str(ranker), "top_k": 2, **sections.pop("ensemble", {})}
    config = parse_config({"ensemble": ensemble, "backends": [backend(f) for f in fakes], **sections})
    return LiveServer(create_app(config, environ=ENV), shutdown_timeout=config.shutdown_timeout).start()


def client(server: LiveServer, key: str | None = SERVER_KEY) -> openai.OpenAI:
    import openai

    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key or "none", max_retries=0, timeout=30)


def health(server: LiveServer) -> dict[str, Any]:
    return httpx.get(f"{server.base_url}/health", timeout=10).json()


def wait_until_idle(server: LiveServer, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if health(server)["in_flight"] == 0:
            return True
        time.sleep(0.02)
    return False


def post(server: LiveServer, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {SERVER_KEY}", **kwargs.pop("headers", {})}
    return httpx.post(f"{server.base_url}/v1/chat/completions", headers=headers, timeout=30, **kwargs)


def assert_openai_error(
    r: httpx.Response, status: int, code: str | None, param: str | None = None
) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["param"] == param
    return error


def _toml(value: Any) -> str:
    return json.dumps(value)  # strings, numbers, booleans and lists of them read the same in TOML


def toml_config(ranker: Path, fakes: list[FakeUpstream], **sections: dict[str, Any]) -> str:
    """A config as :func:`serve` builds it, written as TOML (``server``, ``ensemble``, ``limits`` tables)."""
    sections["ensemble"] = {"ranker": str(ranker), "top_k": 2, **sections.get("ensemble", {})}
    lines = []
    for name, table in sections.items():
        lines += [f"[{name}]", *(f"{k} = {_toml(v)}" for k, v in table.items()), ""]
    for fake in fakes:
        lines += ["[[backends]]", *(f"{k} = {_toml(v)}" for k, v in backend(fake).items()), ""]
    return "\n".join(lines)


class ServeProcess:
    """The real ``blender-llm serve`` command in a subprocess on a loopback port, its output in a file.

    Started with :meth:`start` (bounded wait for ``/health``); :meth:`stop` sends SIGTERM and waits, bounded,
    then kills; :meth:`log` is everything it printed (uvicorn's log and access log included).
    """

    def __init__(self, workdir: Path, config: str, *, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.config_path = workdir / "ensemble.toml"
        self.config_path.write_text(config)
        self.log_path = workdir / "serve.log"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.env = {**os.environ, **ENV, "OMP_NUM_THREADS": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ServeProcess:
        cmd = [sys.executable, "-m", "blender_core.app.cli", "serve", "--config", str(self.config_path)]
        cmd += ["--port", str(self.port), "--log-level", "info"]
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"blender-llm serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"blender-llm serve was not ready within {timeout} s:\n{self.log()}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Its exit status (raises ``subprocess.TimeoutExpired`` if it is still running after ``timeout``)."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

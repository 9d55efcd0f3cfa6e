"""Shared by the ``blender-llm serve`` tests: the test keys, the request, how to start a server over fake
upstreams, and clients for it. The server's packages (``[serve]``) are imported where used: the other tests
of this folder run without them."""

from __future__ import annotations

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

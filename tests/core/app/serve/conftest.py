"""Fixtures of the ``blender-llm serve`` tests: the fake upstreams and three live servers over them (each
started once per test module that asks for it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.app.serve.support import ENV, FUSED, serve
from tests.helpers.openai_upstreams import FakeUpstream, LiveServer


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    weather = ("get_weather", {"city": "Paris"})
    made = {
        "fast": FakeUpstream("fast", answer="Paris is the capital.", usage=(10, 5), tool_call=weather),
        "slow": FakeUpstream(
            "slow", delay=0.2, answer="The capital of France is Paris.", usage=(20, 7), tool_call=weather
        ),
        "failing": FakeUpstream("failing", "error"),
        "malformed": FakeUpstream("malformed", "malformed"),
        "hanging": FakeUpstream("hanging", "hang"),
        # answers at once, fuses slowly: 13 words, 0.15 s apart
        "writer": FakeUpstream(
            "writer", answer="Paris.", usage=(3, 1), tool_call=weather, chunk_delay=0.15, fusion_answer=FUSED
        ),
    }
    for fake in made.values():
        fake.start()
    yield made
    for fake in made.values():
        fake.stop()


@pytest.fixture
def fresh_fakes(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        fake.reset()


@pytest.fixture(scope="module")
def main_server(
    tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """Keys required; five backends of which three fail (500, malformed, hanging past the 1.5 s timeout);
    no fuser; tight limits. The timeout is wide enough that a stall of a loaded CI machine (CI once saw
    0.6 s time out every backend at once) does not drop the healthy ones."""
    names = ("fast", "slow", "failing", "malformed", "hanging")
    tables = "\n".join(
        f'[[backends]]\nname = "{n}"\nkind = "openai"\nbase_url = "{fakes[n].base_url}"\nmodel = "{n}-model"\n'
        'api_key_env = "UPSTREAM_TEST_KEY"\n'
        for n in names
    )
    text = f"""
[server]
api_key_envs = ["BLENDER_TEST_KEY"]

[ensemble]
ranker = "{tiny_reference_ckpt}"
top_k = 2
timeout = 1.5
min_successes = 1

[limits]
max_body_bytes = 16384
max_messages = 8
max_in_flight = 2
retry_after = 3
request_timeout = 10.0

{tables}"""
    from blender_core.app.serve.app import create_app
    from blender_core.app.serve.config import load_config

    path = tmp_path_factory.mktemp("serve") / "ensemble.toml"
    path.write_text(text)
    config = load_config(path)
    with LiveServer(create_app(config, environ=ENV)) as server:
        yield server


@pytest.fixture(scope="module")
def fused_server(tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream]) -> Iterator[LiveServer]:
    """No keys (loopback); three backends; the writer fuses the top two, streaming slowly."""
    server = serve(
        tiny_reference_ckpt,
        [fakes["fast"], fakes["slow"], fakes["writer"]],
        ensemble={"fuser": "writer", "timeout": 10.0},
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hang_server(tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream]) -> Iterator[LiveServer]:
    """A hanging backend with a long timeout (30 s), under a 3 s request deadline."""
    server = serve(
        tiny_reference_ckpt,
        [fakes["fast"], fakes["hanging"]],
        ensemble={"timeout": 30.0, "min_successes": 2},
        limits={"request_timeout": 3.0},
    )
    yield server
    server.stop()

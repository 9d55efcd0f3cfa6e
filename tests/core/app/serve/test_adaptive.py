"""Adaptive ensembles through ``blender-llm serve``: the settings read from the config reach the engine, and
the fake upstreams see what the policy did: a quorum closes the slow request, an accepted cascade never
calls tier 2, max_cost stops it, samples come with their seeds, a later layer sees the references;
streaming and tools with a policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("langchain_openai")

from blender_core.app.serve.config import parse_config
from tests.core.app.serve.support import ENV, MODEL, QUESTION, WEATHER_TOOL, backend, client
from tests.helpers.openai_upstreams import FakeUpstream, LiveServer

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    weather = ("get_weather", {"city": "Paris"})
    made = {
        "fast": FakeUpstream("fast", answer="Paris.", delay=0.05, usage=(100, 10), tool_call=weather),
        "mid": FakeUpstream("mid", answer="The capital is Paris.", delay=0.1, usage=(100, 20), tool_call=weather),
        "slow": FakeUpstream("slow", answer="Paris, on the Seine, is the capital.", delay=5.0, tool_call=weather),
    }
    for fake in made.values():
        fake.start()
    yield made
    for fake in made.values():
        fake.stop()


def server(ranker: Path, tables: list[dict[str, Any]], **ensemble: Any) -> LiveServer:
    from blender_core.app.serve.app import create_app

    config = parse_config({"ensemble": {"ranker": str(ranker), "top_k": 2, "timeout": 10.0, **ensemble}, "backends": tables})
    return LiveServer(create_app(config, environ=ENV), shutdown_timeout=config.shutdown_timeout)  # started by `with`


def ask(live: LiveServer, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    reply = client(live).chat.completions.create(
        model=MODEL, messages=QUESTION, extra_body={"blender": {"account": True}}, **kwargs  # type: ignore[arg-type]
    )
    return reply, (reply.model_extra or {})["blender"]


def test_a_quorum_answers_without_the_slow_upstream_and_closes_its_request(
    tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream]
) -> None:
    tables = [backend(f) for f in fakes.values()]
    with server(tiny_reference_ckpt, tables, quorum=2) as live:
        reply, account = ask(live)
        assert fakes["slow"].closed.wait(5)  # its HTTP request was closed, not left to run
    by_name = {c["backend"]: c for c in account["candidates"]}
    assert by_name["slow"]["cancelled"] == "a quorum of 2 answers was reached"
    assert by_name["slow"]["error"] is None
    assert account["policy"]["cancelled"] == 1
    assert reply.choices[0].message.content in ("Paris.", "The capital is Paris.")


def test_an_accepted_cascade_never_calls_tier_two_and_a_failed_one_does(
    tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream]
) -> None:
    tables = [backend(fakes["fast"]), backend(fakes["mid"]), {**backend(fakes["slow"]), "tier": 2}]
    fakes["slow"].delay = 0.0
    with server(tiny_reference_ckpt, tables) as live:  # no accept_score: tier 1 answered, accepted
        _, account = ask(live)
    assert fakes["slow"].requests == []
    assert account["policy"]["tiers"] == [1]
    with server(tiny_reference_ckpt, tables, accept_score=1e9) as live:  # never agreed: escalate
        _, account = ask(live)
    assert len(fakes["slow"].requests) == 1
    assert account["policy"]["tiers"] == [1, 2]
    assert [c["tier"] for c in account["candidates"]] == [1, 1, 2]


def test_max_cost_stops_the_escalation(tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream]) -> None:
    prices = {"price_in": 10.0, "price_out": 30.0}
    tables = [
        {**backend(fakes["fast"]), **prices},
        {**backend(fakes["mid"]), **prices},
        {**backend(fakes["slow"]), "tier": 2, **prices},
    ]
    with server(tiny_reference_ckpt, tables, accept_score=1e9, max_cost=0.001) as live:
        _, account = ask(live)
    assert fakes["slow"].requests == []
    assert account["policy"]["stop"] == "max_cost 0.001 spent after tier 1"
    per_call = {"fast": (100 * 10 + 10 * 30) / 1e6, "mid": (100 * 10 + 20 * 30) / 1e6}
    assert {c["backend"]: c["cost"] for c in account["candidates"]} == pytest.approx(per_call)
    assert account["cost"] == pytest.approx(sum(per_call.values()))


def test_samples_reach_the_upstream_with_distinct_seeds(
    tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream]
) -> None:
    tables = [{**backend(fakes["fast"]), "samples": 3}, backend(fakes["mid"])]
    with server(tiny_reference_ckpt, tables) as live:
        _, account = ask(live)
    assert sorted(r["seed"] for r in fakes["fast"].requests) == [1, 2, 3]
    assert "seed" not in fakes["mid"].requests[0]
    assert [c["backend"] for c in account["candidates"]] == ["fast#1", "fast#2", "fast#3", "mid"]


def test_a_later_layer_sees_the_references(tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream]) -> None:
    tables = [backend(fakes["fast"]), backend(fakes["mid"])]
    with server(tiny_reference_ckpt, tables, layers=2) as live:
        _, account = ask(live)
    first, second = fakes["fast"].requests
    assert first["messages"][0]["role"] == "user"
    system = second["messages"][0]
    assert system["role"] == "system"
    assert "Responses from models:" in system["content"]
    assert "1. " in system["content"]
    assert "The capital is Paris." in system["content"]
    assert account["policy"]["layers"] == 2
    assert [c["layer"] for c in account["candidates"]] == [1, 1, 2, 2]


def test_streaming_and_tools_with_a_policy(tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream]) -> None:
    tables = [backend(f) for f in fakes.values()]
    with server(tiny_reference_ckpt, tables, quorum=2) as live:
        chunks = list(client(live).chat.completions.create(model=MODEL, messages=QUESTION, stream=True))  # type: ignore[arg-type]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text in ("Paris.", "The capital is Paris.")
        reply, account = ask(live, tools=[WEATHER_TOOL])
    calls = reply.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function.name == "get_weather"
    assert account["policy"]["cancelled"] == 1

"""Adaptive ensembles through LangChain's BlenderLLM: backends given as Backend(model, tier=..., samples=...,
price_in=..., price_out=...), the policy settings as fields; quorum, cascade, samples with seeds, layers,
cost, streaming and tools."""

from __future__ import annotations

import time
from typing import Any

import pytest
from langchain_core.messages import SystemMessage

from blender_core.ensemble import Backend
from langchain_blender import BlenderLLM
from tests.helpers.core_fakes import LengthRanker
from tests.helpers.langchain_fakes import ScriptedChatModel


class SeededChat(ScriptedChatModel):
    """A chat model that declares a seed (as ChatOpenAI does): samples get theirs."""

    seed: int | None = None


def candidates(msg: Any) -> dict[str, dict[str, Any]]:
    return {c["backend"]: c for c in msg.response_metadata["blender"]["candidates"]}


async def test_a_quorum_answers_at_the_pace_of_the_kth_fastest() -> None:
    backends = {
        "fast": ScriptedChatModel(reply="four", delay=0.05),
        "mid": ScriptedChatModel(reply="it is four", delay=0.1),
        "slow": ScriptedChatModel(reply="four, said slowly", delay=3.0),
    }
    llm = BlenderLLM(backends=backends, ranker=LengthRanker(), quorum=2, timeout=10)
    start = time.perf_counter()
    msg = await llm.ainvoke("2+2?")
    assert time.perf_counter() - start < 1.5
    assert candidates(msg)["slow"]["cancelled"] == "a quorum of 2 answers was reached"
    assert msg.text == "it is four"


def test_an_accepted_cascade_never_calls_tier_two() -> None:
    large = ScriptedChatModel(reply="The answer is four.")
    backends = {"small": ScriptedChatModel(reply="4"), "medium": ScriptedChatModel(reply="four"), "large": Backend(large, tier=2)}
    llm = BlenderLLM(backends=backends, ranker=LengthRanker(), accept_score=2.0)
    msg = llm.invoke("2+2?")
    assert large.calls == []
    assert msg.response_metadata["blender"]["policy"]["stop"] == "tier 1 accepted"
    strict = BlenderLLM(backends=backends, ranker=LengthRanker(), accept_score=100.0)
    assert strict.invoke("2+2?").text == "The answer is four."
    assert len(large.calls) == 1


def test_prices_give_each_call_and_the_request_a_cost_and_max_cost_stops() -> None:
    priced = {"price_in": 1.0, "price_out": 2.0}
    large = ScriptedChatModel(reply="The answer is four.", usage=(1000, 500))
    backends = {
        "small": Backend(ScriptedChatModel(reply="4", usage=(1000, 500)), **priced),
        "large": Backend(large, tier=2, **priced),
    }
    msg = BlenderLLM(backends=backends, ranker=LengthRanker(), accept_score=100.0, max_cost=0.001).invoke("2+2?")
    meta = msg.response_metadata["blender"]
    assert large.calls == []  # the single tier-1 answer cost 0.002 >= 0.001
    assert meta["cost"] == pytest.approx(0.002)
    assert meta["policy"]["stop"] == "max_cost 0.001 spent after tier 1"


def test_samples_are_named_and_get_distinct_seeds() -> None:
    strong = SeededChat(reply="four")
    llm = BlenderLLM(backends=[Backend(strong, samples=3), ScriptedChatModel(reply="4", model_name="other")], ranker=LengthRanker())
    msg = llm.invoke("2+2?")
    assert list(candidates(msg)) == ["scripted#1", "scripted#2", "scripted#3", "other"]
    assert sorted(call["seed"] for call in strong.calls) == [1, 2, 3]


def test_a_later_layer_sees_the_references_in_its_system_message() -> None:
    a, b = ScriptedChatModel(reply="four"), ScriptedChatModel(reply="it is four")
    llm = BlenderLLM(backends={"a": a, "b": b}, ranker=LengthRanker(), layers=2)
    msg = llm.invoke([SystemMessage(content="Be brief."), ("human", "2+2?")])
    first, second = a.calls
    assert isinstance(first["messages"][0], SystemMessage)
    assert first["messages"][0].text == "Be brief."
    system = second["messages"][0].text
    assert system.startswith("Be brief.\n\nYou have been provided with a set of responses")
    assert "1. it is four\n2. four" in system
    assert msg.response_metadata["blender"]["policy"]["layers"] == 2


def test_streaming_and_tools_keep_the_policy() -> None:
    backends = {
        "fast": ScriptedChatModel(reply="four", delay=0.05),
        "mid": ScriptedChatModel(reply="it is four", delay=0.1),
        "slow": Backend(ScriptedChatModel(reply="four, said slowly", delay=3.0), tier=1),
    }
    llm = BlenderLLM(backends=backends, ranker=LengthRanker(), quorum=2, timeout=10)
    start = time.perf_counter()
    chunks = list(llm.stream("2+2?"))
    assert time.perf_counter() - start < 1.5
    assert "".join(c.text for c in chunks) == "it is four"
    bound = llm.bind_tools([{"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}])
    assert bound.bound.backend_settings == llm.backend_settings  # type: ignore[attr-defined]
    reply = bound.invoke("add 2 and 2")
    assert reply.tool_calls
    assert reply.response_metadata["blender"]["policy"]["cancelled"] == 1

"""Adaptive ensembles through LlamaIndex's BlenderLLM: Backend(llm, tier=..., samples=...) and the policy
settings as fields; quorum (chat and achat), cascade, samples, layers (chat and complete)."""

from __future__ import annotations

import time
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import PrivateAttr

from blender_core.ensemble import Backend
from llamaindex_blender import BlenderLLM
from tests.helpers.core_fakes import LengthRanker
from tests.helpers.llamaindex_fakes import FakeLLM


class RecordingLLM(FakeLLM):
    """A FakeLLM that records what each call received."""

    _seen: list[Any] = PrivateAttr(default_factory=list)

    def chat(self, messages: Any, **kwargs: Any) -> Any:
        self._seen.append(list(messages))
        return super().chat(messages, **kwargs)

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        self._seen.append(prompt)
        return super().complete(prompt, formatted=formatted, **kwargs)


def account(response: Any) -> dict[str, Any]:
    return response.raw["blender"]


async def test_a_quorum_answers_at_the_pace_of_the_kth_fastest() -> None:
    llms = [FakeLLM(name="fast", text="four", delay=0.05), FakeLLM(name="mid", text="it is four", delay=0.1), FakeLLM(name="slow", text="four, slowly", delay=3.0)]
    llm = BlenderLLM(llms, ranker=LengthRanker(), quorum=2, timeout=10)
    start = time.perf_counter()
    response = await llm.achat([ChatMessage(role=MessageRole.USER, content="2+2?")])
    assert time.perf_counter() - start < 1.5
    by_name = {c["backend"]: c for c in account(response)["candidates"]}
    assert by_name["slow"]["cancelled"] == "a quorum of 2 answers was reached"
    start = time.perf_counter()
    llm.chat([ChatMessage(role=MessageRole.USER, content="2+2?")])  # sync: the slow thread is detached
    assert time.perf_counter() - start < 1.5


def test_an_accepted_cascade_never_calls_tier_two_and_samples_are_named() -> None:
    large = RecordingLLM(name="large", text="The answer is four.")
    llms = [Backend(FakeLLM(name="small", text="4"), samples=2), FakeLLM(name="medium", text="four"), Backend(large, tier=2)]
    response = BlenderLLM(llms, ranker=LengthRanker(), accept_score=2.0).complete("2+2?")
    assert large._seen == []
    assert [c["backend"] for c in account(response)["candidates"]] == ["small#1", "small#2", "medium"]


def test_a_later_layer_sees_the_references() -> None:
    a, b = RecordingLLM(name="a", text="four"), RecordingLLM(name="b", text="it is four")
    llm = BlenderLLM([a, b], ranker=LengthRanker(), layers=2)
    llm.chat([ChatMessage(role=MessageRole.USER, content="2+2?")])
    first, second = a._seen
    assert first[0].role == MessageRole.USER
    assert second[0].role == MessageRole.SYSTEM
    assert "1. it is four\n2. four" in second[0].content
    llm.complete("2+2?")
    assert a._seen[-1].endswith("2. four\n\n2+2?")

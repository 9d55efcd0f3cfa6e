"""BlenderLLM (LlamaIndex) under faults: CustomLLM backends whose async methods block the event loop, a hung
backend on the sync path, a blocking fuser on the async path."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback

from blender_core.ranking.pairrm.pair_ranker import PairRanker
from llamaindex_blender import BlenderLLM
from llamaindex_blender.fusers import blocks_the_loop
from tests.helpers.event_loop import ticking
from tests.helpers.llamaindex_fakes import FakeLLM


class BlockingLLM(CustomLLM):
    """The documented way to write a custom LLM: sync methods only; CustomLLM's achat/acomplete call them
    on the event loop. ``release`` ends a hang."""

    text: str = "ok"
    delay: float = 0.0
    name: str = "blocking"
    _release: threading.Event = PrivateAttr(default_factory=threading.Event)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.name, is_chat_model=False)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._release.wait(self.delay)
        return CompletionResponse(text=self.text)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            self._release.wait(self.delay)
            yield CompletionResponse(text=self.text, delta=self.text)

        return gen()


@pytest.fixture
def slow() -> Iterator[BlockingLLM]:
    model = BlockingLLM(text="too slow", delay=6.0, name="slow")
    yield model
    model._release.set()


def test_sync_in_disguise_is_detected() -> None:
    assert blocks_the_loop(BlockingLLM(), "achat")
    assert blocks_the_loop(BlockingLLM(), "acomplete")
    assert not blocks_the_loop(FakeLLM(), "achat")  # a real async implementation


async def test_blocking_custom_llms_under_achat_answer_within_the_timeout(tiny_ranker: PairRanker, slow: BlockingLLM) -> None:
    backends = [BlockingLLM(text=f"answer number {k}", delay=0.5, name=f"b{k}") for k in range(3)] + [slow]
    llm = BlenderLLM(backends, ranker=tiny_ranker, timeout=1.5)
    async with ticking(0.05) as ticks:
        start = time.perf_counter()
        response = await llm.achat([ChatMessage(role="user", content="hello?")])
        elapsed = time.perf_counter() - start
    assert elapsed < 3.0  # was 8.2 s: one after another on the loop, the timeout never firing
    assert ticks.count >= 10  # the loop kept running
    errors = {c["backend"]: c["error"] for c in response.raw["blender"]["candidates"]}
    assert errors == {"b0": None, "b1": None, "b2": None, "slow": "TimeoutError: no answer within 1.5 s"}
    completed = await llm.acomplete("hello?")
    assert completed.raw["blender"]["best"] in {"b0", "b1", "b2"}


def test_a_hung_backend_on_the_sync_path_holds_bounded_threads(tiny_ranker: PairRanker) -> None:
    hung = BlockingLLM(text="never", delay=60, name="hung")
    try:
        llm = BlenderLLM([hung, FakeLLM(text="fine", name="ok")], ranker=tiny_ranker, timeout=0.5)
        before = sum(t.name.startswith("blender-backend") for t in threading.enumerate())
        for _ in range(20):
            assert llm.complete("q").text == "fine"
        after = sum(t.name.startswith("blender-backend") for t in threading.enumerate())
        assert after - before <= 2
    finally:
        hung._release.set()


async def test_a_blocking_fuser_runs_in_a_thread(tiny_ranker: PairRanker) -> None:
    fuser = BlockingLLM(text="the fused answer", delay=0.3, name="fuser")
    llm = BlenderLLM([FakeLLM(text="four", name="a"), FakeLLM(text="it is four", name="b")], ranker=tiny_ranker, fuser=fuser)
    async with ticking(0.02) as ticks:
        response = await llm.achat([ChatMessage(role="user", content="2 + 2?")])
        pieces = [r.delta async for r in await llm.astream_chat([ChatMessage(role="user", content="2 + 2?")])]
    assert response.message.content == "the fused answer"
    assert "".join(p or "" for p in pieces) == "the fused answer"
    assert ticks.count >= 15  # two 0.3 s fusions without freezing the loop

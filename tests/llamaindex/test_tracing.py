"""OpenTelemetry spans through the LlamaIndex BlenderLLM, inside a span the app opened: chat and achat (the
backends' own spans nest under their call spans, in the engine's threads too), streaming, a failing backend
and an adaptive request."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.llms.callbacks import llm_chat_callback
from opentelemetry.trace import StatusCode

from blender_core.ensemble import Backend
from llamaindex_blender import BlenderLLM
from tests.helpers.core_fakes import LengthRanker
from tests.helpers.llamaindex_fakes import FakeLLM
from tests.helpers.tracing import Traced, by_backend, is_child

MESSAGES = [ChatMessage(role=MessageRole.USER, content="What is 2+2? (secret question)")]


@pytest.fixture
def traced() -> Traced:
    return Traced()


class TracingLLM(FakeLLM):
    """A fake LLM that opens a span of its own in each call, as an instrumented HTTP client would."""

    traced: Any = None

    def _span(self) -> Any:
        return self.traced.provider.get_tracer("http").start_as_current_span(f"POST {self.name}")

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        with self._span():
            return super().chat(messages, **kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        with self._span():
            return await super().achat(messages, **kwargs)


def blender(traced: Traced, backends: Any = None, **kwargs: Any) -> BlenderLLM:
    backends = backends or [
        TracingLLM(name="alpha", text="four", traced=traced),
        TracingLLM(name="beta", text="it is four", traced=traced),
        FakeLLM(name="down", error="503 upstream"),
    ]
    return BlenderLLM(backends, ranker=LengthRanker(), tracer_provider=traced.provider, **kwargs)


def check_tree(traced: Traced) -> None:
    request = traced.one("chat blender-llm")
    assert is_child(request, traced.one("app"))
    assert traced.child_names(request) == ["blender.rank", "chat alpha", "chat beta", "chat down"]
    calls = by_backend(traced.spans)
    assert is_child(traced.one("POST alpha"), calls["alpha"])
    assert is_child(traced.one("POST beta"), calls["beta"])
    assert (calls["beta"].attributes or {})["blender.rank"] == 1
    assert (calls["alpha"].attributes or {})["gen_ai.usage.output_tokens"] == 5  # the fake's raw usage
    assert calls["down"].status.status_code is StatusCode.ERROR
    assert (calls["down"].attributes or {})["error.type"] == "RuntimeError"
    assert request.status.status_code is StatusCode.UNSET
    for span in traced.spans:
        assert "secret question" not in str(span.attributes)


def test_chat_traces_the_ensemble_inside_the_apps_span(traced: Traced) -> None:
    with traced.parent("app"):
        response = blender(traced).chat(MESSAGES)
    assert response.message.content == "it is four"
    check_tree(traced)


async def test_achat_traces_the_ensemble_inside_the_apps_span(traced: Traced) -> None:
    with traced.parent("app"):
        await blender(traced).achat(MESSAGES)
    check_tree(traced)


def test_stream_chat_ends_the_request_span_with_the_stream(traced: Traced) -> None:
    llm = blender(traced, fuser=FakeLLM(name="fuser", text="Four, fused."), top_k=2)
    with traced.parent("app"):
        text = "".join(r.delta or "" for r in llm.stream_chat(MESSAGES))
    assert text == "Four, fused."
    request = traced.one("chat blender-llm")
    assert "blender.fuse" in traced.child_names(request)
    assert (request.attributes or {})["blender.fused"] is True


def test_an_adaptive_request_shows_its_tiers(traced: Traced) -> None:
    backends = [
        Backend(TracingLLM(name="small", text="4", traced=traced), samples=2),
        Backend(TracingLLM(name="large", text="four, surely", traced=traced), tier=2),
    ]
    with traced.parent("app"):
        blender(traced, backends, accept_score=100.0).chat(MESSAGES)  # tier 1 is not accepted: tier 2 is asked
    calls = by_backend(traced.spans)
    assert sorted(calls) == ["large", "small#1", "small#2"]
    assert (calls["large"].attributes or {})["blender.tier"] == 2
    assert (traced.one("blender.accept").attributes or {})["blender.accepted"] is False
    own = traced.named("POST small")
    assert sorted(next(k for k in ("small#1", "small#2") if is_child(s, calls[k])) for s in own) == ["small#1", "small#2"]

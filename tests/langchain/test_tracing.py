"""OpenTelemetry spans through LangChain's BlenderLLM, inside a span the app opened: invoke, stream, a failing
backend, an adaptive request, a sync-only model on the engine's threads whose own spans nest under its call,
and ``trace_content`` as a field of the chat model."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from opentelemetry.trace import StatusCode
from pydantic import ConfigDict

from blender_core.ensemble import Backend
from langchain_blender import BlenderLLM
from tests.helpers.core_fakes import LengthRanker
from tests.helpers.langchain_fakes import ScriptedChatModel, three_backends
from tests.helpers.tracing import Traced, by_backend, is_child

QUESTION = "What is 2+2? (secret question)"


@pytest.fixture
def traced() -> Traced:
    return Traced()


def blender(traced: Traced, **kwargs: Any) -> BlenderLLM:
    kwargs.setdefault("backends", three_backends())
    return BlenderLLM(ranker=LengthRanker(), tracer_provider=traced.provider, **kwargs)


def test_invoke_traces_the_ensemble_inside_the_apps_span(traced: Traced) -> None:
    llm = blender(traced, fuser=ScriptedChatModel(reply="Four.", model_name="fuser-1"), top_k=2)
    with traced.parent("app"):
        msg = llm.invoke(QUESTION)
    app, request = traced.one("app"), traced.one("chat blender-llm")
    assert is_child(request, app)
    assert traced.child_names(request) == ["blender.fuse", "blender.rank", "chat alpha", "chat beta", "chat gamma"]
    calls = by_backend(traced.spans)
    best = msg.response_metadata["blender"]["best"]
    assert best == "beta"
    assert (calls[best].attributes or {})["blender.rank"] == 1
    assert (calls["alpha"].attributes or {})["gen_ai.usage.input_tokens"] > 0  # the fake's usage
    assert (request.attributes or {})["blender.best"] == best
    assert (traced.one("blender.fuse").attributes or {})["blender.fused"] is True
    for span in traced.spans:
        assert "secret question" not in str(span.attributes)


@pytest.mark.parametrize("method", ["stream", "astream"])
async def test_stream_traces_the_ensemble_inside_the_apps_span(traced: Traced, method: str) -> None:
    llm = blender(traced, fuser=ScriptedChatModel(reply="Four, streamed.", model_name="fuser-1"))
    with traced.parent("app"):
        if method == "stream":
            chunks = list(llm.stream(QUESTION))
        else:
            chunks = [c async for c in llm.astream(QUESTION)]
    assert "".join(c.text for c in chunks) == "Four, streamed."
    request = traced.one("chat blender-llm")
    assert is_child(request, traced.one("app"))
    assert traced.child_names(request) == ["blender.fuse", "blender.rank", "chat alpha", "chat beta", "chat gamma"]
    assert (traced.one("blender.fuse").attributes or {})["blender.first_token_s"] >= 0


def test_a_failing_backend_is_an_error_span(traced: Traced) -> None:
    backends = three_backends(gamma=ScriptedChatModel(error="rate limited"))
    with traced.parent("app"):
        blender(traced, backends=backends).invoke(QUESTION)
    gamma = by_backend(traced.spans)["gamma"]
    assert gamma.status.status_code is StatusCode.ERROR
    assert "rate limited" in (gamma.status.description or "")
    assert traced.one("chat blender-llm").status.status_code is StatusCode.UNSET


async def test_an_adaptive_request_shows_samples_tiers_and_cancellations(traced: Traced) -> None:
    backends = {
        "small": Backend(ScriptedChatModel(reply="4", model_name="small-1"), samples=2),
        "medium": ScriptedChatModel(reply="four", model_name="medium-1"),
        "slow": ScriptedChatModel(reply="four, said slowly", delay=2.0, model_name="slow-1"),
        "large": Backend(ScriptedChatModel(reply="four, for sure", model_name="large-1"), tier=2),
    }
    llm = blender(traced, backends=backends, quorum=2, accept_score=None)
    with traced.parent("app"):
        await llm.ainvoke(QUESTION)
    calls = by_backend(traced.spans)
    assert {"small#1", "small#2", "medium", "slow"} <= set(calls)
    assert "large" not in calls  # tier 1 answered: no escalation without accept_score
    assert (calls["small#2"].attributes or {})["blender.sample"] == 2
    cancelled = [n for n, s in calls.items() if (s.attributes or {}).get("blender.cancelled")]
    assert "slow" in cancelled
    assert all(calls[n].status.status_code is StatusCode.UNSET for n in cancelled)
    assert is_child(traced.one("chat blender-llm"), traced.one("app"))
    assert (traced.one("chat blender-llm").attributes or {})["blender.cancelled_calls"] == len(cancelled)


class SyncOnlyTracing(BaseChatModel):
    """Implements only ``_generate`` (so the ensemble runs it on its own daemon threads) and opens a span of
    its own, as an instrumented HTTP client would."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    traced: Any
    reply: str = "4"

    @property
    def _llm_type(self) -> str:
        return "sync-only-tracing"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self.traced.provider.get_tracer("http").start_as_current_span(f"POST {self.reply}"):
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.reply))])


@pytest.mark.parametrize("method", ["invoke", "ainvoke"])
async def test_a_sync_only_models_own_spans_nest_under_its_call_on_the_engines_thread(
    traced: Traced, method: str
) -> None:
    backends = {"a": SyncOnlyTracing(traced=traced, reply="4"), "b": SyncOnlyTracing(traced=traced, reply="four")}
    llm = blender(traced, backends=backends)
    with traced.parent("app"):
        if method == "invoke":
            llm.invoke(QUESTION)
        else:
            await llm.ainvoke(QUESTION)
    calls = by_backend(traced.spans)
    assert is_child(traced.one("POST 4"), calls["a"])
    assert is_child(traced.one("POST four"), calls["b"])


def test_trace_content_is_a_field_that_reaches_the_spans(traced: Traced) -> None:
    blender(traced, trace_content=True).invoke(QUESTION)
    request = traced.one("chat blender-llm").attributes or {}
    assert "secret question" in str(request["gen_ai.input.messages"])
    assert "It is 4 because" in str(request["gen_ai.output.messages"])


def test_a_tracer_provider_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="tracer_provider must be an OpenTelemetry TracerProvider"):
        BlenderLLM(backends=three_backends(), ranker=LengthRanker(), tracer_provider="otlp")

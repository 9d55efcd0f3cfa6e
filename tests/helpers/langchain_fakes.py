"""Scripted fake chat models for the LangChain adapter tests: fakes at the boundary only.

A ``ScriptedChatModel`` answers with a fixed text after an optional delay, raises on request, reports usage,
streams word by word, and, when tools are bound, calls one: the named ``tool_choice`` or the first tool,
with arguments filled from its JSON schema and the question (numbers for integers, quoted text for
strings), which is what the ``langchain_tests`` suites expect of a real model.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr

_CHOICE_WORDS = {"any", "auto", "required", "none"}


def _fill(schema: dict[str, Any], query: str) -> dict[str, Any]:
    numbers = [int(n) for n in re.findall(r"-?\d+", query)]
    quoted = re.findall(r"'([^']+)'", query) or re.findall(r'"([^"]+)"', query)
    args: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type") or next(
            (p.get("type") for p in prop.get("anyOf", []) if p.get("type") != "null"), "string"
        )
        if kind in ("integer", "number"):
            args[name] = numbers.pop(0) if numbers else 1
        elif kind == "boolean":
            args[name] = True
        elif kind == "array":
            args[name] = []
        elif kind == "object":
            args[name] = {}
        else:
            args[name] = quoted.pop(0) if quoted else f"{name}: {query}"
    return args


class ScriptedChatModel(BaseChatModel):
    """A fake chat model: ``reply`` after ``delay`` s (``error`` raises instead); tools → one tool call."""

    reply: str = "hello there"
    delay: float = 0.0
    error: str | None = None
    usage: tuple[int, int] | None = None
    tool_args: dict[str, Any] | None = None
    model_name: str = "scripted"
    stall_after_first: float = 0.0
    """Seconds a stream stalls after its first chunk (a model that hangs mid-answer)."""

    _calls: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    @property
    def calls(self) -> list[dict[str, Any]]:
        """What each call received: the messages and keyword arguments (tools, stop, ...)."""
        return self._calls

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        extra = {} if tool_choice is None else {"tool_choice": tool_choice}
        return self.bind(tools=formatted, **extra, **kwargs)

    def _usage(self, messages: list[BaseMessage], out: str) -> dict[str, int]:
        n_in, n_out = self.usage or (sum(len(m.text.split()) for m in messages), max(1, len(out.split())))
        return {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}

    def _respond(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        self._calls.append({"messages": list(messages), **kwargs})
        if self.error is not None:
            raise RuntimeError(self.error)
        tools = kwargs.get("tools") or []
        meta = {"model_name": self.model_name}
        if tools and not isinstance(messages[-1], ToolMessage):
            choice = kwargs.get("tool_choice")
            if isinstance(choice, dict):
                choice = choice.get("function", {}).get("name") or choice.get("name")
            functions = [t["function"] for t in tools]
            fn = next((f for f in functions if f["name"] == choice), functions[0])
            query = messages[-1].text
            args = self.tool_args if self.tool_args is not None else _fill(fn.get("parameters") or {}, query)
            call = {
                "name": fn["name"],
                "args": args,
                "id": f"call_{uuid.uuid4().hex[:8]}",
                "type": "tool_call",
            }
            return AIMessage(
                content="",
                tool_calls=[call],
                usage_metadata=self._usage(messages, ""),
                response_metadata=meta,
            )
        return AIMessage(
            content=self.reply, usage_metadata=self._usage(messages, self.reply), response_metadata=meta
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        time.sleep(self.delay)
        return ChatResult(
            generations=[ChatGeneration(message=self._respond(messages, {"stop": stop, **kwargs}))]
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.sleep(self.delay)
        return ChatResult(
            generations=[ChatGeneration(message=self._respond(messages, {"stop": stop, **kwargs}))]
        )

    def _chunks(self, message: AIMessage) -> list[AIMessageChunk]:
        if message.tool_calls:
            calls = [
                tool_call_chunk(name=c["name"], args=repr_json(c["args"]), id=c["id"], index=i)
                for i, c in enumerate(message.tool_calls)
            ]
            return [AIMessageChunk(content="", tool_call_chunks=calls, usage_metadata=message.usage_metadata)]
        words = message.text.split(" ")
        chunks = [AIMessageChunk(content=w if i == 0 else " " + w) for i, w in enumerate(words)]
        chunks.append(
            AIMessageChunk(
                content="",
                usage_metadata=message.usage_metadata,
                response_metadata=dict(message.response_metadata),
            )
        )
        return chunks

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        time.sleep(self.delay)
        for k, chunk in enumerate(self._chunks(self._respond(messages, {"stop": stop, **kwargs}))):
            if k == 1:
                time.sleep(self.stall_after_first)
            yield ChatGenerationChunk(message=chunk)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        await asyncio.sleep(self.delay)
        for k, chunk in enumerate(self._chunks(self._respond(messages, {"stop": stop, **kwargs}))):
            if k == 1:
                await asyncio.sleep(self.stall_after_first)
            yield ChatGenerationChunk(message=chunk)


def repr_json(args: Any) -> str:
    import json

    return json.dumps(args, ensure_ascii=False)


def three_backends(delay: float = 0.0, **overrides: ScriptedChatModel) -> dict[str, ScriptedChatModel]:
    """Three fakes with different answers (``overrides`` replace some by name)."""
    backends = {
        "alpha": ScriptedChatModel(reply="The answer is four.", delay=delay, model_name="alpha-1"),
        "beta": ScriptedChatModel(
            reply="It is 4 because 2 plus 2 makes 4.", delay=delay, model_name="beta-1"
        ),
        "gamma": ScriptedChatModel(reply="five", delay=delay, model_name="gamma-1"),
    }
    backends.update(overrides)
    return backends

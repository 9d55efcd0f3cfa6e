"""Fakes at the LlamaIndex boundary for the adapter tests: a scripted LLM, and an event handler that
records the instrumentation events."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback


class FakeLLM(CustomLLM):
    """A fixed answer after ``delay`` seconds (time.sleep in sync calls, asyncio.sleep in async ones),
    or an error; reports token usage in ``raw`` as OpenAI-style providers do."""

    text: str = "ok"
    delay: float = 0.0
    error: str | None = None
    prompt_tokens: int = 3
    completion_tokens: int = 5
    window: int = 4096
    max_out: int = 256
    name: str = "fake"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.window, num_output=self.max_out, model_name=self.name, is_chat_model=True)

    def _raw(self) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}}

    def _reply(self) -> ChatResponse:
        if self.error:
            raise RuntimeError(self.error)
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=self.text), raw=self._raw())

    def _pieces(self) -> list[str]:
        words = self.text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        time.sleep(self.delay)
        return self._reply()

    @llm_chat_callback()
    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        await asyncio.sleep(self.delay)
        return self._reply()

    @llm_chat_callback()
    def stream_chat(self, messages: Any, **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            time.sleep(self.delay)  # the time to the first token
            if self.error:  # a failing model fails however it is called
                raise RuntimeError(self.error)
            text = ""
            pieces = self._pieces()
            for k, piece in enumerate(pieces):
                text += piece
                raw = self._raw() if k == len(pieces) - 1 else None
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=piece, raw=raw)

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Any, **kwargs: Any) -> ChatResponseAsyncGen:
        async def gen() -> ChatResponseAsyncGen:
            await asyncio.sleep(self.delay)
            for response in self.model_copy(update={"delay": 0.0}).stream_chat(messages, **kwargs):
                await asyncio.sleep(0)
                yield response

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        time.sleep(self.delay)
        return CompletionResponse(text=self._reply().message.content or "", raw=self._raw())

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        await asyncio.sleep(self.delay)
        return CompletionResponse(text=self._reply().message.content or "", raw=self._raw())

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=self.text, delta=self.text)

        return gen()


class Collect(BaseEventHandler):
    """Records every instrumentation event it is dispatched (see ``tests/llamaindex/conftest.py``'s
    ``collected`` fixture, which adds one to the root dispatcher)."""

    events: list[Any] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Collect"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)

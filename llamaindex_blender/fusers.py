"""A fuser over any LlamaIndex LLM: it is asked, with the fusion prompt, to merge the top-K answers into one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.callbacks.token_counting import get_tokens_from_response
from llama_index.core.llms import LLM, CustomLLM

from blender_core.base.usage import UsageSink
from blender_core.fusion.base import BaseFuser, fusion_messages


def usage_of(response: Any) -> dict[str, int] | None:
    """Token usage of a LlamaIndex response in the core's keys, read as LlamaIndex's token counting reads it."""
    if response is None:
        return None
    try:
        prompt_tokens, completion_tokens = get_tokens_from_response(response)
    except Exception:  # a provider's raw object that is not dict-like: no usage to read
        return None
    if not prompt_tokens and not completion_tokens:
        return None
    return {"input_tokens": int(prompt_tokens), "output_tokens": int(completion_tokens)}


def llm_name(llm: LLM) -> str:
    """A short name for a LlamaIndex LLM: its model name, else its class name."""
    model = llm.metadata.model_name
    return model if model and model != "unknown" else llm.class_name()


def chat_messages(messages: Sequence[Mapping[str, str]]) -> list[ChatMessage]:
    """``{"role", "content"}`` dicts (the core's messages) as LlamaIndex chat messages."""
    return [ChatMessage(role=m["role"], content=m["content"]) for m in messages]


def blocks_the_loop(llm: LLM, method: str) -> bool:
    """Whether ``llm``'s async ``method`` is ``CustomLLM``'s, which calls the blocking sync method on the event
    loop (a sync model in disguise: run its sync method in a thread instead)."""
    owner = next((k for k in type(llm).__mro__ if method in k.__dict__), None)  # who defines the method
    return owner is CustomLLM


def _messages(instruction: str, candidates: Sequence[str]) -> list[ChatMessage]:
    return chat_messages(fusion_messages(instruction, candidates))


def _text(response: ChatResponse) -> str:
    return response.message.content or ""


class LlamaIndexFuser(BaseFuser):
    """Fuse candidates with a LlamaIndex LLM prompted by :func:`blender_core.fusion.fusion_messages`.

    Every method accepts ``usage_sink``: a list the call appends the LLM's token usage to (the
    :class:`~llamaindex_blender.BlenderLLM` uses it to add the fuser's cost to its summed usage).

    Example:
        >>> from llama_index.core.llms import MockLLM
        >>> fuser = LlamaIndexFuser(MockLLM(max_tokens=2))
        >>> fuser.fuse(["Say hi"], [["hi", "hello"]])
        ['text text']
    """

    def __init__(self, llm: LLM, *, name: str | None = None) -> None:
        """Args:
        llm: the LlamaIndex LLM that writes the fused answer (used through ``chat``/``stream_chat``).
        name: the name recorded in results (default ``llamaindex:<model name or class>``).
        """
        if not isinstance(llm, LLM):
            raise TypeError(f"LlamaIndexFuser needs a LlamaIndex LLM, got {type(llm).__name__}")
        self.llm = llm
        self.name = name or f"llamaindex:{llm_name(llm)}"

    def fuse(
        self,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        usage_sink: UsageSink | None = None,
        **generate_kwargs: Any,
    ) -> list[str]:
        """One fused answer per instruction (one ``chat`` call each); kwargs go to ``llm.chat``."""
        out = []
        for instruction, cands in zip(instructions, candidates, strict=True):
            response = self.llm.chat(_messages(instruction, cands), **generate_kwargs)
            _record(usage_sink, response)
            out.append(_text(response))
        return out

    async def afuse(
        self,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        usage_sink: UsageSink | None = None,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Async :meth:`fuse`: the instructions are fused concurrently with ``llm.achat`` (in a thread
        through ``chat`` when the LLM's ``achat`` would block the event loop)."""
        if blocks_the_loop(self.llm, "achat"):
            return await super().afuse(instructions, candidates, usage_sink=usage_sink, **generate_kwargs)
        responses = await asyncio.gather(
            *(
                self.llm.achat(_messages(i, c), **generate_kwargs)
                for i, c in zip(instructions, candidates, strict=True)
            )
        )
        for response in responses:
            _record(usage_sink, response)
        return [_text(r) for r in responses]

    def stream(
        self,
        instruction: str,
        candidates: Sequence[str],
        *,
        usage_sink: UsageSink | None = None,
        **generate_kwargs: Any,
    ) -> Iterator[str]:
        """Yield the fused answer's deltas from ``llm.stream_chat``."""
        last = None
        for last in self.llm.stream_chat(_messages(instruction, candidates), **generate_kwargs):
            if last.delta:
                yield last.delta
        _record(usage_sink, last)

    async def astream(
        self,
        instruction: str,
        candidates: Sequence[str],
        *,
        usage_sink: UsageSink | None = None,
        **generate_kwargs: Any,
    ) -> AsyncIterator[str]:
        """Async :meth:`stream`, from ``llm.astream_chat`` (from ``stream_chat`` in a thread when the LLM's
        ``astream_chat`` would block the event loop)."""
        if blocks_the_loop(self.llm, "astream_chat"):
            async for piece in super().astream(
                instruction, candidates, usage_sink=usage_sink, **generate_kwargs
            ):
                yield piece
            return
        last = None
        async for last in await self.llm.astream_chat(_messages(instruction, candidates), **generate_kwargs):
            if last.delta:
                yield last.delta
        _record(usage_sink, last)


def _record(sink: UsageSink | None, response: Any) -> None:
    if sink is not None and (usage := usage_of(response)) is not None:
        sink.append(usage)

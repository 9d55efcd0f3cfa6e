"""Any LlamaIndex LLM as a pairwise LLM judge: ``judge_ranker(llm)`` is a core JudgeRanker."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.llms import LLM

from blender_core.ranking.judge import JudgeRanker
from blender_core.ranking.judge.chat import ChatReply, Message

from .fusers import blocks_the_loop, chat_messages, llm_name, usage_of


class LLMJudge:
    """A LlamaIndex LLM on the judge's plain call interface (``complete`` / ``acomplete``, through ``chat`` /
    ``achat``): the reply's text, and its usage as LlamaIndex's token counting reads it. An LLM whose
    ``achat`` would block the event loop sets ``blocking_async``, so the async ranker calls ``chat`` in a
    thread. ``chat_kwargs`` go to every call."""

    def __init__(self, llm: LLM, **chat_kwargs: Any) -> None:
        if not isinstance(llm, LLM):
            raise TypeError(f"judge_ranker() takes a LlamaIndex LLM, got {type(llm).__name__}")
        self.llm = llm
        self.chat_kwargs = chat_kwargs
        self.blocking_async = blocks_the_loop(llm, "achat")
        self.name = llm_name(llm)

    def complete(self, messages: list[Message]) -> ChatReply:
        """The LLM's reply to the judge's messages."""
        return _reply(self.llm.chat(chat_messages(messages), **self.chat_kwargs))

    async def acomplete(self, messages: list[Message]) -> ChatReply:
        """Async :meth:`complete`, through ``achat``."""
        return _reply(await self.llm.achat(chat_messages(messages), **self.chat_kwargs))


def _reply(response: ChatResponse) -> ChatReply:
    return ChatReply(response.message.content or "", usage_of(response))


def judge_ranker(llm: LLM, **kwargs: Any) -> JudgeRanker:
    """A pairwise LLM-judge ranker over a LlamaIndex LLM (MT-Bench prompt, both orders asked).

    Args:
        llm: the judge.
        **kwargs: :class:`~blender_core.ranking.judge.JudgeRanker`'s options: ``prompt``,
            ``max_concurrency``, ``timeout``, ``max_stuck_calls``, ``name``.

    Example:
        >>> from llamaindex_blender import BlenderLLM, judge_ranker
        >>> judge = judge_ranker(OpenAI(model="gpt-4o", temperature=0), timeout=30)  # doctest: +SKIP
        >>> llm = BlenderLLM([llm_a, llm_b, llm_c], ranker=judge)  # doctest: +SKIP
    """
    return JudgeRanker(LLMJudge(llm), **kwargs)

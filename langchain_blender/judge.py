"""Any LangChain chat model as a pairwise LLM judge: ``judge_ranker(chat_model)`` is a core JudgeRanker."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.runnables import Runnable

from blender_core.ranking.judge import JudgeRanker
from blender_core.ranking.judge.chat import ChatReply, Message

from .fusers import model_name
from .messages import message_usage
from .sync_only import runs_in_executor


class ChatModelJudge:
    """A LangChain chat model on the judge's plain call interface (``complete`` / ``acomplete``): the reply's
    text, and its ``usage_metadata`` as the usage. ``invoke_kwargs`` go to every call."""

    def __init__(self, model: Runnable[Any, BaseMessage], **invoke_kwargs: Any) -> None:
        if not isinstance(model, Runnable):
            raise TypeError(
                f"judge_ranker() takes a LangChain chat model (a Runnable returning messages), got "
                f"{type(model).__name__}"
            )
        self.model = model
        self.invoke_kwargs = invoke_kwargs
        # a model with no async path of its own is called through complete() in the judge's bounded
        # daemon threads, never in the event loop's shared executor (where a hung call keeps a worker)
        self.blocking_async = runs_in_executor(model)
        self.name = model_name(model)

    def complete(self, messages: list[Message]) -> ChatReply:
        """The model's reply to the judge's messages."""
        return _reply(self.model.invoke(convert_to_messages(messages), **self.invoke_kwargs))

    async def acomplete(self, messages: list[Message]) -> ChatReply:
        """Async :meth:`complete`, through ``ainvoke``."""
        return _reply(await self.model.ainvoke(convert_to_messages(messages), **self.invoke_kwargs))


def _reply(message: BaseMessage) -> ChatReply:
    return ChatReply(message.text, message_usage(message))


def judge_ranker(chat_model: Runnable[Any, BaseMessage], **kwargs: Any) -> JudgeRanker:
    """A pairwise LLM-judge ranker over a LangChain chat model (MT-Bench prompt, both orders asked).

    Args:
        chat_model: the judge (any chat model, or a binding of one, e.g. ``model.bind(temperature=0)``).
        **kwargs: :class:`~blender_core.ranking.judge.JudgeRanker`'s options: ``prompt``,
            ``max_concurrency``, ``timeout``, ``max_stuck_calls``, ``name``.

    Example:
        >>> from langchain_blender import BlenderLLM, judge_ranker
        >>> judge = judge_ranker(ChatOpenAI(model="gpt-4o", temperature=0), timeout=30)  # doctest: +SKIP
        >>> llm = BlenderLLM(backends=[model_a, model_b, model_c], ranker=judge)  # doctest: +SKIP
    """
    return JudgeRanker(ChatModelJudge(chat_model), **kwargs)

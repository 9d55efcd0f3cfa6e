"""The plain call interface an LLM judge is written on: messages in, text (and its token usage) out.

Any chat model can judge once it offers :class:`JudgeChat`: ``complete(messages) -> ChatReply`` and its
async twin ``acomplete``. The messages are ``{"role": ..., "content": ...}`` dicts (roles ``system`` and
``user``). :class:`CallableChat` makes one from plain functions; the LangChain and LlamaIndex adapters
make one from their chat models (``langchain_blender.judge_ranker``, ``llamaindex_blender.judge_ranker``).

Example:
    >>> chat = CallableChat(lambda messages: "Both are fine, but A is exact. [[A]]")
    >>> chat.complete([{"role": "user", "content": "Which answer is better?"}]).text
    'Both are fine, but A is exact. [[A]]'
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, runtime_checkable

#: one chat message: ``{"role": "system" | "user" | "assistant", "content": text}``
Message: TypeAlias = dict[str, str]


@dataclass(frozen=True)
class ChatReply:
    """What a judge call returns: the reply's text and the token usage it reported (keys among
    ``blender_core.base.usage.USAGE_KEYS``), or ``None`` when the model reports none."""

    text: str
    usage: Mapping[str, int] | None = None


@runtime_checkable
class JudgeChat(Protocol):
    """A chat model a :class:`~blender_core.ranking.judge.JudgeRanker` can ask: sync and async.

    An implementation whose ``acomplete`` would block the event loop (a sync model in disguise) sets
    ``blocking_async = True``; ``arank`` then runs ``complete`` in a daemon thread instead. Without the
    attribute ``acomplete`` is trusted to be truly async.
    """

    def complete(self, messages: list[Message]) -> ChatReply:
        """The model's reply to ``messages``."""
        ...

    async def acomplete(self, messages: list[Message]) -> ChatReply:
        """Async :meth:`complete`."""
        ...


def as_reply(value: Any) -> ChatReply:
    """A judge call's return value as a :class:`ChatReply` (a plain ``str`` is its text, no usage)."""
    if isinstance(value, ChatReply):
        return value
    if isinstance(value, str):
        return ChatReply(value)
    raise TypeError(f"the judge returned a {type(value).__name__}; return a ChatReply(text, usage) or a str")


class CallableChat:
    """A :class:`JudgeChat` from plain functions of the messages, returning a ``ChatReply`` or a ``str``.

    Args:
        complete: the blocking call.
        acomplete: its async twin (a coroutine function); without it ``blocking_async`` is set, so the
            async ranker runs ``complete`` in a daemon thread.
        name: shown in the ranker's name (default: the function's name, ``function`` for a lambda).

    Example:
        >>> import asyncio
        >>> chat = CallableChat(lambda m: "[[B]]")
        >>> chat.blocking_async, asyncio.run(chat.acomplete([])).text
        (True, '[[B]]')
    """

    def __init__(
        self,
        complete: Callable[[list[Message]], ChatReply | str],
        acomplete: Callable[[list[Message]], Awaitable[ChatReply | str]] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        if not callable(complete):
            raise TypeError(
                f"CallableChat needs a function of the messages returning a ChatReply or a str, got "
                f"{type(complete).__name__}"
            )
        if acomplete is not None and not inspect.iscoroutinefunction(acomplete):
            raise TypeError(
                "CallableChat(acomplete=...) must be an async function (async def), got "
                f"{type(acomplete).__name__}; leave it out to run the sync function in a thread"
            )
        self._complete = complete
        self._acomplete = acomplete
        self.blocking_async = acomplete is None
        own = getattr(complete, "__name__", "")
        self.name = name or (own if own and not own.startswith("<") else "function")

    def complete(self, messages: list[Message]) -> ChatReply:
        """The function's reply to ``messages``."""
        return as_reply(self._complete(messages))

    async def acomplete(self, messages: list[Message]) -> ChatReply:
        """The async function's reply (the sync one's, called here, when there is none)."""
        if self._acomplete is None:
            return self.complete(messages)
        return as_reply(await self._acomplete(messages))


def as_judge_chat(chat: Any) -> JudgeChat:
    """``chat`` as a :class:`JudgeChat`: one as is, a plain function wrapped in :class:`CallableChat`."""
    if isinstance(chat, JudgeChat):
        return chat
    if callable(chat):
        return CallableChat(chat)
    raise TypeError(
        f"the judge must be a JudgeChat (complete/acomplete methods) or a function of the messages, got "
        f"{type(chat).__name__}; for a LangChain or LlamaIndex model use langchain_blender.judge_ranker / "
        "llamaindex_blender.judge_ranker"
    )

"""ChatModelFuser: any LangChain chat model as the fuser, prompted with the fusion prompt."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import set_config_context
from langchain_core.runnables.utils import coro_with_context

from blender_core.base.usage import UsageSink, sum_usage
from blender_core.fusion.base import BaseFuser, fusion_messages

from .messages import message_usage
from .sync_only import runs_in_executor


def model_name(model: Any) -> str:
    """A short name for a chat model (or a binding of one): its model id, else its class name."""
    bound = getattr(model, "bound", None)
    if bound is not None and not isinstance(model, type):
        return model_name(bound)
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


class ChatModelFuser(BaseFuser):
    """Fuse the top-K candidates with a chat model: it reads the instruction and the candidates and writes
    one better answer (``blender_core.fusion.fusion_messages``).

    Extra keyword arguments of :meth:`fuse` / :meth:`stream` go to the model call; ``config`` is its
    ``RunnableConfig`` (callbacks, tags), so a fuser call is traced as a child run of the caller. The
    model's reported usage goes to ``usage_sink``.

    Example:
        >>> from langchain_core.language_models import GenericFakeChatModel
        >>> fuser = ChatModelFuser(GenericFakeChatModel(messages=iter(["Paris."])))
        >>> fuser.fuse(["Capital of France?"], [["Paris", "It is Paris"]])
        ['Paris.']
    """

    def __init__(self, model: Runnable[Any, BaseMessage], *, name: str | None = None) -> None:
        if not isinstance(model, Runnable):
            raise TypeError(f"ChatModelFuser takes a LangChain chat model, got {type(model).__name__}")
        self.model = model
        self.name = name or f"chat:{model_name(model)}"

    def messages(self, instruction: str, candidates: Sequence[str]) -> list[BaseMessage]:
        """The fusion prompt as LangChain messages."""
        return convert_to_messages(fusion_messages(instruction, list(candidates)))

    def fuse(
        self,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        config: RunnableConfig | None = None,
        usage_sink: UsageSink | None = None,
        **kwargs: Any,
    ) -> list[str]:
        inputs = [self.messages(i, c) for i, c in zip(instructions, candidates, strict=True)]
        with _context(config) as ctx:
            return _texts(ctx.run(self.model.batch, inputs, config, **kwargs), usage_sink)

    async def afuse(
        self,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        config: RunnableConfig | None = None,
        usage_sink: UsageSink | None = None,
        **kwargs: Any,
    ) -> list[str]:
        inputs = [self.messages(i, c) for i, c in zip(instructions, candidates, strict=True)]
        with _context(config) as ctx:
            return _texts(
                await coro_with_context(self.model.abatch(inputs, config, **kwargs), ctx), usage_sink
            )

    def stream(
        self,
        instruction: str,
        candidates: Sequence[str],
        *,
        config: RunnableConfig | None = None,
        usage_sink: UsageSink | None = None,
        **kwargs: Any,
    ) -> Iterator[str]:
        usages = []
        with _context(config) as ctx:
            chunks = self.model.stream(self.messages(instruction, candidates), config, **kwargs)
            while (chunk := ctx.run(next, chunks, None)) is not None:
                usages.append(message_usage(chunk))
                if chunk.text:
                    yield chunk.text
        _report(usage_sink, usages)

    async def astream(
        self,
        instruction: str,
        candidates: Sequence[str],
        *,
        config: RunnableConfig | None = None,
        usage_sink: UsageSink | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[str]:
        if runs_in_executor(self.model):
            # no async path of its own: its sync stream in a daemon thread (BaseFuser's), never the event
            # loop's shared executor, where a fusion stalled past its deadline would keep a worker
            async for piece in super().astream(
                instruction, candidates, config=config, usage_sink=usage_sink, **kwargs
            ):
                yield piece
            return
        usages = []
        with _context(config) as ctx:
            chunks = self.model.astream(self.messages(instruction, candidates), config, **kwargs)

            async def step() -> Any:
                return await anext(chunks, None)

            try:
                while (chunk := await coro_with_context(step(), ctx)) is not None:
                    usages.append(message_usage(chunk))
                    if chunk.text:
                        yield chunk.text
            finally:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
        _report(usage_sink, usages)


@contextlib.contextmanager
def _context(config: RunnableConfig | None) -> Iterator[contextvars.Context]:
    """A context where ``config`` is the current runnable config (as LangChain sets it for child runs), so
    a bound model does not merge in the config of the caller's context; the plain current context without
    a config."""
    if config is None:
        yield contextvars.copy_context()
        return
    with set_config_context(config) as ctx:
        yield ctx


def _texts(messages: list[BaseMessage], usage_sink: UsageSink | None) -> list[str]:
    """The answers' texts; each reported usage goes to the sink."""
    for m in messages:
        _report(usage_sink, [message_usage(m)])
    return [m.text for m in messages]


def _report(usage_sink: UsageSink | None, usages: list[dict[str, int] | None]) -> None:
    """One call's usage (streamed chunks carry parts of it: their sum) into the sink, if it reported any."""
    if usage_sink is not None and any(usages):
        usage_sink.append(sum_usage(usages))

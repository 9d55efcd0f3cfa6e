"""LangChain chat models as the engine's backend calls: each call is a child run with the backend tags,
in its own config (so a bound model does not merge in the caller's), retried when asked, and its message
turned into a candidate answer."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import set_config_context
from langchain_core.runnables.utils import coro_with_context

from blender_core.ensemble import AsyncCall, BackendAnswer, Blocking

from .callbacks import BACKEND_TAGS, child_config
from .messages import message_answer
from .structured import AnswerCheck
from .sync_only import runs_in_executor


def _with_retry(backend: Runnable[Any, Any], max_retries: int) -> Runnable[Any, Any]:
    return backend.with_retry(stop_after_attempt=max_retries + 1) if max_retries else backend


def _sync_call(
    name: str,
    backend: Runnable[Any, Any],
    messages: list[BaseMessage],
    manager: BaseCallbackManager | None,
    call_kwargs: dict[str, Any],
    max_retries: int,
    check: AnswerCheck | None,
) -> Callable[[], BackendAnswer]:
    """One backend's blocking call, run in a copy of the caller's context (from a worker thread)."""
    ctx = contextvars.copy_context()

    def call() -> BackendAnswer:
        config = child_config(manager, BACKEND_TAGS, name, {"blender_backend": name})
        invoke = _with_retry(backend, max_retries).invoke
        return _answer(name, ctx.run(_in_config, config, invoke, messages, config, **call_kwargs), check)

    return call


def backend_calls(
    backends: Mapping[str, Runnable[Any, Any]],
    messages: list[BaseMessage],
    manager: BaseCallbackManager | None,
    call_kwargs: dict[str, Any],
    max_retries: int = 0,
    check: AnswerCheck | None = None,
) -> dict[str, Callable[[], BackendAnswer]]:
    """One sync call per backend, run in a copy of the caller's context (from a worker thread); an answer
    that fails ``check`` fails its backend."""
    return {
        name: _sync_call(name, backend, messages, manager, call_kwargs, max_retries, check)
        for name, backend in backends.items()
    }


def abackend_calls(
    backends: Mapping[str, Runnable[Any, Any]],
    messages: list[BaseMessage],
    manager: BaseCallbackManager | None,
    call_kwargs: dict[str, Any],
    max_retries: int = 0,
    check: AnswerCheck | None = None,
) -> dict[str, AsyncCall]:
    """One async call per backend (see :func:`backend_calls`): a coroutine function, or, for a model with no
    async path of its own (:func:`~langchain_blender.sync_only.runs_in_executor`), its sync call as
    :class:`~blender_core.ensemble.Blocking`, run in the engine's bounded daemon threads rather than the
    event loop's shared executor."""

    async def call(name: str, backend: Runnable[Any, Any]) -> BackendAnswer:
        config = child_config(manager, BACKEND_TAGS, name, {"blender_backend": name})
        with set_config_context(config) as ctx:  # so a bound backend does not merge in the caller's config
            message = await coro_with_context(
                _with_retry(backend, max_retries).ainvoke(messages, config, **call_kwargs), ctx
            )
        return _answer(name, message, check)

    return {
        name: (
            Blocking(_sync_call(name, backend, messages, manager, call_kwargs, max_retries, check))
            if runs_in_executor(backend)
            else functools.partial(call, name, backend)
        )
        for name, backend in backends.items()
    }


def _answer(name: str, message: Any, check: AnswerCheck | None) -> BackendAnswer:
    if isinstance(message, str):  # a chain ending in a string parser
        message = AIMessage(content=message)
    if not isinstance(message, BaseMessage):
        raise TypeError(f"backend {name!r} returned {type(message).__name__}, expected an AI message")
    if check is not None:
        check(message)
    return message_answer(message)


def _in_config(config: RunnableConfig, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with ``config`` as the current runnable config (as LangChain does for child runs), so a
    bound backend does not merge in the config of the caller's context."""
    with set_config_context(config) as ctx:
        return ctx.run(fn, *args, **kwargs)

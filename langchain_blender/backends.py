"""LangChain chat models as the engine's backend calls: each call is a child run with the backend tags,
in its own config (so a bound model does not merge in the caller's), retried when asked, and its message
turned into a candidate answer."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import set_config_context
from langchain_core.runnables.utils import coro_with_context

from blender_core.ensemble import AsyncCall, BackendAnswer, BackendRequest, Blocking
from blender_core.ensemble.prompts import references_prompt

from .callbacks import BACKEND_TAGS, child_config
from .messages import message_answer
from .structured import AnswerCheck
from .sync_only import runs_in_executor, takes_seed


def _with_retry(backend: Runnable[Any, Any], max_retries: int) -> Runnable[Any, Any]:
    return backend.with_retry(stop_after_attempt=max_retries + 1) if max_retries else backend


def _for_request(
    backend: Runnable[Any, Any], messages: list[BaseMessage], call_kwargs: dict[str, Any], request: BackendRequest
) -> tuple[list[BaseMessage], dict[str, Any], str, dict[str, Any]]:
    """The chat, call kwargs, run name and run metadata of one request: a later layer's references go into
    the system message; a sample's seed goes to a model that takes one."""
    if request.references:
        note = references_prompt(request.references)
        if messages and isinstance(messages[0], SystemMessage):
            messages = [SystemMessage(content=f"{messages[0].text}\n\n{note}"), *messages[1:]]
        else:
            messages = [SystemMessage(content=note), *messages]
    if request.seed is not None and takes_seed(backend):
        call_kwargs = {**call_kwargs, "seed": request.seed}
    name = request.backend
    run_name = name if request.sample == 1 else f"{name}#{request.sample}"
    metadata: dict[str, Any] = {"blender_backend": name}
    if request.sample > 1 or request.seed is not None:
        metadata["blender_sample"] = request.sample
    if request.layer > 1:
        metadata["blender_layer"] = request.layer
    return messages, call_kwargs, run_name, metadata


def _sync_call(
    name: str,
    backend: Runnable[Any, Any],
    messages: list[BaseMessage],
    manager: BaseCallbackManager | None,
    call_kwargs: dict[str, Any],
    max_retries: int,
    check: AnswerCheck | None,
) -> Callable[[BackendRequest], BackendAnswer]:
    """One backend's blocking call for a request, run in a copy of the context it is called in: the engine's
    worker thread's, itself a copy of the caller's with the call's span current (so that the backend's own
    spans nest under it)."""

    def call(request: BackendRequest) -> BackendAnswer:
        chat, kwargs, run_name, metadata = _for_request(backend, messages, call_kwargs, request)
        config = child_config(manager, BACKEND_TAGS, run_name, metadata)
        invoke = _with_retry(backend, max_retries).invoke
        # a copy per call: a backend's samples run at once, and one context cannot be entered twice
        ctx = contextvars.copy_context()
        return _answer(name, ctx.run(_in_config, config, invoke, chat, config, **kwargs), check)

    return call


def backend_calls(
    backends: Mapping[str, Runnable[Any, Any]],
    messages: list[BaseMessage],
    manager: BaseCallbackManager | None,
    call_kwargs: dict[str, Any],
    max_retries: int = 0,
    check: AnswerCheck | None = None,
) -> dict[str, Callable[[BackendRequest], BackendAnswer]]:
    """One sync call per backend, taking the engine's :class:`~blender_core.ensemble.BackendRequest` (sample,
    seed, layer references), run in a copy of the caller's context (from a worker thread); an answer that
    fails ``check`` fails its backend."""
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

    async def call(name: str, backend: Runnable[Any, Any], request: BackendRequest) -> BackendAnswer:
        chat, kwargs, run_name, metadata = _for_request(backend, messages, call_kwargs, request)
        config = child_config(manager, BACKEND_TAGS, run_name, metadata)
        with set_config_context(config) as ctx:  # so a bound backend does not merge in the caller's config
            message = await coro_with_context(
                _with_retry(backend, max_retries).ainvoke(chat, config, **kwargs), ctx
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

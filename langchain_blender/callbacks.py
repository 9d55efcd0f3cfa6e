"""The backend and fuser calls of a BlenderLLM as child runs of its own run (LangChain callbacks only).

``BaseChatModel.stream()`` (and ``invoke()`` when a streaming handler is attached) call ``_stream``
without the run manager. So that backend calls are still child runs, the public entry points configure
the callback manager themselves and hand it, with the run id, to ``_stream`` through a context variable.
"""

from __future__ import annotations

import contextvars
import uuid
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    BaseCallbackManager,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.tracers.base import AsyncBaseTracer, BaseTracer

try:  # the marker LangChain and LangGraph use for their streaming handlers (events, logs, messages)
    from langchain_core.tracers._streaming import _StreamingCallbackHandler
except ImportError:  # pragma: no cover - older or newer langchain-core
    _StreamingCallbackHandler = None  # type: ignore[assignment,misc]

#: Tags on every backend and fuser call: find them in traces, and keep their tokens out of LangGraph's
#: ``stream_mode="messages"`` (it skips runs tagged ``nostream``); only the BlenderLLM's answer streams.
BACKEND_TAGS = ("blender:backend", "nostream")
FUSER_TAGS = ("blender:fuser", "nostream")

_PARENT: contextvars.ContextVar[tuple[int, uuid.UUID, BaseCallbackManager] | None] = contextvars.ContextVar(
    "blender_parent_run", default=None
)


def is_tracer(handler: BaseCallbackHandler) -> bool:
    """Tracers and streaming handlers (LangSmith, event streams, LangGraph) see the child runs."""
    if isinstance(handler, (BaseTracer, AsyncBaseTracer)):
        return True
    return _StreamingCallbackHandler is not None and isinstance(handler, _StreamingCallbackHandler)


def enter(
    owner: object, config: RunnableConfig | None, manager_cls: type[BaseCallbackManager]
) -> tuple[RunnableConfig, contextvars.Token[Any]]:
    """Configure the run's callback manager and run id up front and hand them to ``_stream``."""
    config = ensure_config(config)
    manager = manager_cls.configure(  # type: ignore[attr-defined]
        config.get("callbacks"), None, False, config.get("tags"), None, config.get("metadata")
    )
    run_id = config.get("run_id") or uuid.uuid4()
    token = _PARENT.set((id(owner), run_id, manager))
    return {**config, "callbacks": manager, "run_id": run_id}, token


def leave(token: contextvars.Token[Any]) -> None:
    try:
        _PARENT.reset(token)
    except ValueError:  # a generator closed from another context: the value was used up anyway
        pass


def children(
    owner: object,
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
    which: str,
) -> BaseCallbackManager | None:
    """The callback manager for backend and fuser calls: children of this run (``which``: ``tracers``
    keeps the tracers only, ``all`` every inheritable handler)."""
    parent = _PARENT.get()
    if parent is not None and parent[0] == id(owner):
        _PARENT.set(None)  # one use: a later call cannot pick up a stale parent
    else:
        parent = None
    source: Any
    if run_manager is not None:  # an LLM run manager has no get_child(): build the child the same way
        source, run_id = run_manager, run_manager.run_id
        cls: type[BaseCallbackManager] = (
            AsyncCallbackManager
            if isinstance(run_manager, AsyncCallbackManagerForLLMRun)
            else CallbackManager
        )
    elif parent is not None:
        _, run_id, source = parent
        cls = type(source)
    else:
        return None
    child = cls(handlers=[], parent_run_id=run_id)
    child.set_handlers(source.inheritable_handlers)
    child.add_tags(source.inheritable_tags)
    child.add_metadata(source.inheritable_metadata)
    if which == "tracers":
        child.set_handlers([h for h in child.handlers if is_tracer(h)])
    return child


def child_config(
    manager: BaseCallbackManager | None,
    tags: tuple[str, ...],
    run_name: str,
    metadata: dict[str, Any] | None = None,
) -> RunnableConfig:
    """The config of one child call (a fresh, handler-less manager when the run has none)."""
    return RunnableConfig(
        callbacks=manager if manager is not None else CallbackManager(handlers=[]),
        tags=list(tags),
        metadata=metadata or {},
        run_name=run_name,
    )

"""BlenderLLM: a LangChain chat model that asks several chat models, ranks their answers and fuses the best.

The ensemble logic (concurrent calls, timeouts, ``min_successes``, ranking, metadata, usage sums) lives in
``blender_core.ensemble``; this module only turns LangChain messages and models into its inputs and its
outcome back into an ``AIMessage``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    BaseCallbackManager,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.runnables.config import set_config_context
from langchain_core.runnables.utils import coro_with_context
from langchain_core.tracers.base import AsyncBaseTracer, BaseTracer
from pydantic import PrivateAttr, field_validator, model_validator
from typing_extensions import Self, override

from blender_core.ensemble.engine import (
    BackendAnswer,
    CandidateRecord,
    Ensemble,
    EnsembleOutcome,
    acall_backends,
    call_backends,
    sum_usage,
)
from blender_core.ensemble.pipeline import Blender
from blender_core.ensemble.streaming import StreamReport, aguarded_stream, guarded_stream
from blender_core.fusion.base import BaseFuser
from blender_core.ranking.builtin import DEFAULT_RANKER
from blender_core.ranking.pair_ranker import PairRanker
from blender_core.ranking.strategies import STRATEGIES

from .fusers import ChatModelFuser, model_name
from .selection import message_answer, message_usage, prompt_text
from .tool_calls import as_chunk, has_tool_calls

try:  # the marker LangChain and LangGraph use for their streaming handlers (events, logs, messages)
    from langchain_core.tracers._streaming import _StreamingCallbackHandler
except ImportError:  # pragma: no cover - older or newer langchain-core
    _StreamingCallbackHandler = None  # type: ignore[assignment,misc]

logger = logging.getLogger(__name__)

#: Tags on every backend and fuser call: find them in traces, and keep their tokens out of LangGraph's
#: ``stream_mode="messages"`` (it skips runs tagged ``nostream``); only the BlenderLLM's answer streams.
BACKEND_TAGS = ("blender:backend", "nostream")
FUSER_TAGS = ("blender:fuser", "nostream")

# ``BaseChatModel.stream()`` (and ``invoke()`` when a streaming handler is attached) call ``_stream``
# without the run manager. So that backend calls are still child runs, the public entry points configure
# the callback manager themselves and hand it, with the run id, to ``_stream`` through this variable.
_PARENT: contextvars.ContextVar[tuple[int, uuid.UUID, BaseCallbackManager] | None] = contextvars.ContextVar(
    "blender_parent_run", default=None
)


def _is_tracer(handler: BaseCallbackHandler) -> bool:
    if isinstance(handler, (BaseTracer, AsyncBaseTracer)):
        return True
    return _StreamingCallbackHandler is not None and isinstance(handler, _StreamingCallbackHandler)


class _UsageCollector(BaseCallbackHandler):
    """Sums the usage of the run it is attached to (added as a local handler: children are not counted)."""

    run_inline = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.usages: list[dict[str, int]] = []

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        for generations in response.generations:
            for gen in generations:
                usage = message_usage(gen.message) if isinstance(gen, ChatGeneration) else None
                if usage:
                    with self._lock:
                        self.usages.append(usage)

    @property
    def total(self) -> dict[str, int] | None:
        return sum_usage(self.usages) if self.usages else None


def _name_backends(backends: Any) -> dict[str, Runnable[Any, Any]]:
    if isinstance(backends, Mapping):
        named = {str(k): v for k, v in backends.items()}
    elif isinstance(backends, Sequence) and not isinstance(backends, (str, bytes)):
        named = {}
        for model in backends:
            base = model_name(model)
            name, n = base, 1
            while name in named:
                n += 1
                name = f"{base}#{n}"
            named[name] = model
    else:
        raise TypeError(
            f"backends must be a list of chat models or a name -> chat model mapping, got {type(backends).__name__}"
        )
    if not named:
        raise ValueError("backends is empty; pass at least one chat model")
    for name, model in named.items():
        if not name:
            raise ValueError("backend names must be non-empty strings")
        if not isinstance(model, Runnable):
            raise TypeError(
                f"backend {name!r} is a {type(model).__name__}, not a LangChain chat model (Runnable)"
            )
    return named


class BlenderLLM(BaseChatModel):
    """A chat model that ensembles several chat models, LLM-Blender style.

    Each call goes to every backend concurrently; backends that fail or time out are dropped (and recorded);
    the answers are ranked by a PairRanker and the top-K fused (or the top-ranked one returned).
    ``response_metadata["blender"]`` accounts for every candidate (backend, score, rank, latency, error),
    the choice and the fuser; ``usage_metadata`` sums the backends' and the fuser's usage.

    Tool calling works through :meth:`bind_tools` (the tools go to every backend; tool-call answers are
    ranked on a canonical text of the calls and returned with their ``tool_calls``); tool-call answers are
    never fused.

    Example:
        .. code-block:: python

            from langchain_blender import BlenderLLM

            llm = BlenderLLM(backends={"gpt": gpt, "claude": claude, "llama": llama}, top_k=2, timeout=30)
            msg = llm.invoke("Explain recursion in one sentence.")
            msg.response_metadata["blender"]["chosen"]  # e.g. ['claude', 'gpt']
    """

    backends: dict[str, Any]
    """The chat models to ask: a list (named after their model ids) or a name -> model mapping."""
    ranker: Any = DEFAULT_RANKER
    """A PairRanker, a path / hub id, or the built-in default ranker's name (loaded on first use)."""
    fuser: Any = None
    """None (return the top-ranked answer), a ``blender_core`` fuser, or a chat model prompted to fuse."""
    top_k: int = 3
    """Answers handed to the fuser (the paper's K = 3)."""
    strategy: str = "full"
    """Ranking strategy: ``full`` (all pairs, best for a few backends), ``knockout``, ``bubble``, ``sort``."""
    timeout: float | None = None
    """Seconds each backend may take (None: no limit); also bounds the fuser's time to first token."""
    min_successes: int = 1
    """Fewer answers than this fails the call with a clear error."""
    max_concurrency: int | None = None
    """At most this many backend calls at once (None: all at once)."""
    backend_callbacks: Literal["tracers", "all"] = "tracers"
    """Which of the caller's callback handlers also see the backend and fuser calls: ``tracers``
    (LangSmith, event streams, LangGraph: the calls show as child runs) or ``all`` (plain handlers too,
    e.g. token counters, which then count the backends' usage on top of the blended total)."""
    model_name: str = "blender-llm"
    """The name reported as ``response_metadata["model_name"]``."""
    temperature: float | None = None
    """When set, passed to every backend call; None keeps each backend's own setting."""
    max_tokens: int | None = None
    """When set, passed to every backend call; None keeps each backend's own setting."""
    stop: list[str] | None = None
    """Stop sequences passed to every backend call."""
    max_retries: int = 0
    """Retries of a failing backend call (within its timeout)."""
    streaming: bool = False
    """Whether ``invoke`` goes through the streaming path (tokens reach callback handlers)."""

    _ensemble: Any = PrivateAttr(default=None)

    @field_validator("backends", mode="before")
    @classmethod
    def _check_backends(cls, value: Any) -> dict[str, Any]:
        return _name_backends(value)

    @field_validator("ranker")
    @classmethod
    def _check_ranker(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, (PairRanker, str, Path)):
            raise TypeError(
                f"ranker must be a PairRanker, a path or hub id, or None; got {type(value).__name__}"
            )
        return value

    @field_validator("fuser")
    @classmethod
    def _check_fuser(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, (BaseFuser, Runnable)):
            raise TypeError(
                f"fuser must be None, a blender_core fuser or a chat model; got {type(value).__name__}"
            )
        return value

    @model_validator(mode="after")
    def _build_ensemble(self) -> Self:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.min_successes > len(self.backends):
            raise ValueError(
                f"min_successes={self.min_successes} but only {len(self.backends)} backends; "
                "lower min_successes or add backends"
            )
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        fuser = ChatModelFuser(self.fuser) if isinstance(self.fuser, Runnable) else self.fuser
        blender = Blender(self.ranker, fuser, top_k=self.top_k, strategy=self.strategy)
        self._ensemble = Ensemble(
            blender,
            timeout=self.timeout,
            min_successes=self.min_successes,
            max_concurrency=self.max_concurrency,
        )
        return self

    # ------------------------------------------------------------------ LangChain plumbing
    @property
    def _llm_type(self) -> str:
        return "blender-llm"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        fuser = self._ensemble.blender.fuser
        return {
            "model_name": self.model_name,
            "backends": list(self.backends),
            "ranker": str(self.ranker)
            if isinstance(self.ranker, (str, Path))
            else type(self.ranker).__name__,
            "fuser": fuser.name if fuser is not None else None,
            "top_k": self.top_k,
            "strategy": self.strategy,
            "timeout": self.timeout,
            "min_successes": self.min_successes,
        }

    @override
    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "blender_llm"
        model = kwargs.get("model")
        params["ls_model_name"] = model if isinstance(model, str) else self.model_name
        return params

    @property
    def blender(self) -> Blender:
        """The core ranker/fuser pipeline (its ranker is loaded on first use)."""
        return self._ensemble.blender

    @override
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind the tools to every backend; returns a new BlenderLLM (the backends are not modified).

        ``tool_choice`` and extra keyword arguments (e.g. ``parallel_tool_calls``) go to each backend's
        ``bind_tools``.
        """
        own = {k: kwargs.pop(k) for k in ("ls_structured_output_format",) if k in kwargs}
        choice = {} if tool_choice is None else {"tool_choice": tool_choice}
        bound = {}
        for name, backend in self.backends.items():
            bind = getattr(backend, "bind_tools", None)
            if bind is None:
                raise TypeError(
                    f"backend {name!r} ({type(backend).__name__}) has no bind_tools(); it cannot call tools"
                )
            try:
                bound[name] = bind(tools, **choice, **kwargs)
            except NotImplementedError as exc:
                raise TypeError(
                    f"backend {name!r} ({type(backend).__name__}) does not support tool calling; "
                    "use only tool-calling backends with bind_tools()"
                ) from exc
        # model_copy keeps the private ensemble: the bound copy shares the (possibly loaded) ranker
        return self.model_copy(update={"backends": bound}).bind(**own)

    # ------------------------------------------------------------------ entry points (parent run hand-over)
    def _enter(
        self, config: RunnableConfig | None, manager_cls: type[BaseCallbackManager]
    ) -> tuple[RunnableConfig, contextvars.Token[Any]]:
        config = ensure_config(config)
        manager = manager_cls.configure(  # type: ignore[attr-defined]
            config.get("callbacks"), None, False, config.get("tags"), None, config.get("metadata")
        )
        run_id = config.get("run_id") or uuid.uuid4()
        token = _PARENT.set((id(self), run_id, manager))
        return {**config, "callbacks": manager, "run_id": run_id}, token

    @override
    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        config, token = self._enter(config, CallbackManager)
        try:
            return super().invoke(input, config, stop=stop, **kwargs)
        finally:
            _PARENT.reset(token)

    @override
    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        config, token = self._enter(config, AsyncCallbackManager)
        try:
            return await super().ainvoke(input, config, stop=stop, **kwargs)
        finally:
            _PARENT.reset(token)

    @override
    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        config, token = self._enter(config, CallbackManager)
        try:
            yield from super().stream(input, config, stop=stop, **kwargs)
        finally:
            _reset(token)

    @override
    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        config, token = self._enter(config, AsyncCallbackManager)
        try:
            async for chunk in super().astream(input, config, stop=stop, **kwargs):
                yield chunk
        finally:
            _reset(token)

    def _children(
        self, run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None
    ) -> BaseCallbackManager | None:
        """The callback manager for backend and fuser calls: children of this run."""
        parent = _PARENT.get()
        if parent is not None and parent[0] == id(self):
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
        if self.backend_callbacks == "tracers":
            child.set_handlers([h for h in child.handlers if _is_tracer(h)])
        return child

    # ------------------------------------------------------------------ the ensemble
    def _call_kwargs(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        if "model" in kwargs:
            raise ValueError(
                "BlenderLLM got a per-call model override; it has no single model. Bind the model on the "
                "backends instead (backends={'name': model.bind(...)})"
            )
        out: dict[str, Any] = {}
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.max_tokens is not None:
            out["max_tokens"] = self.max_tokens
        out.update(kwargs)
        stop = stop if stop is not None else self.stop
        if stop:
            out["stop"] = list(stop)
        return out

    def _backend_config(self, children: BaseCallbackManager | None, name: str) -> RunnableConfig:
        return RunnableConfig(
            callbacks=children if children is not None else CallbackManager(handlers=[]),
            tags=list(BACKEND_TAGS),
            metadata={"blender_backend": name},
            run_name=name,
        )

    def _with_retry(self, backend: Runnable[Any, Any]) -> Runnable[Any, Any]:
        return backend.with_retry(stop_after_attempt=self.max_retries + 1) if self.max_retries else backend

    def _calls(
        self, messages: list[BaseMessage], children: BaseCallbackManager | None, call_kwargs: dict[str, Any]
    ) -> dict[str, Callable[[], BackendAnswer]]:
        def call(name: str, backend: Runnable[Any, Any], ctx: contextvars.Context) -> BackendAnswer:
            config = self._backend_config(children, name)
            invoke = self._with_retry(backend).invoke
            return _answer(name, ctx.run(_in_config, config, invoke, messages, config, **call_kwargs))

        return {
            name: functools.partial(call, name, backend, contextvars.copy_context())
            for name, backend in self.backends.items()
        }

    def _acalls(
        self, messages: list[BaseMessage], children: BaseCallbackManager | None, call_kwargs: dict[str, Any]
    ) -> dict[str, Callable[[], Any]]:
        async def call(name: str, backend: Runnable[Any, Any]) -> BackendAnswer:
            config = self._backend_config(children, name)
            with set_config_context(
                config
            ) as ctx:  # so a bound backend does not merge in the caller's config
                message = await coro_with_context(
                    self._with_retry(backend).ainvoke(messages, config, **call_kwargs), ctx
                )
            return _answer(name, message)

        return {name: functools.partial(call, name, backend) for name, backend in self.backends.items()}

    def _fusion_plan(
        self, outcome: EnsembleOutcome, children: BaseCallbackManager | None
    ) -> tuple[bool, dict[str, Any], _UsageCollector]:
        """Whether to fuse (a fuser, and no tool-call answers), the fuser's call kwargs, its usage collector."""
        fuser = self.blender.fuser
        collector = _UsageCollector()
        if fuser is None or any(has_tool_calls(r.answer.payload) for r in outcome.successes if r.answer):
            return False, {}, collector
        if not isinstance(fuser, ChatModelFuser):
            return True, {}, collector
        callbacks = children.copy() if children is not None else CallbackManager(handlers=[])
        callbacks.add_handler(collector, inherit=False)
        config = RunnableConfig(callbacks=callbacks, tags=list(FUSER_TAGS), run_name="fuser")
        return True, {"config": config}, collector

    def _fallback(self, outcome: EnsembleOutcome) -> Callable[[], list[AIMessageChunk]]:
        best = outcome.best.answer
        assert best is not None
        message = best.payload

        def chosen() -> list[AIMessageChunk]:
            return [as_chunk(message)]

        return chosen

    def _final_chunk(
        self, outcome: EnsembleOutcome, fused: bool, report: StreamReport | None, collector: _UsageCollector
    ) -> ChatGenerationChunk:
        fuser = self.blender.fuser
        outcome = dataclasses.replace(outcome, fuser_usage=collector.total)
        meta = outcome.metadata()
        used = fused and report is not None and not report.fell_back
        meta["fused"] = used
        meta["fuser"] = fuser.name if fused and fuser is not None else None
        meta["fuser_error"] = report.error if report is not None else None
        meta["fuser_usage"] = collector.total
        if report is not None:
            meta["timings"]["fuse_s"] = report.elapsed_s
            meta["timings"]["fuse_first_token_s"] = report.first_item_s
        if used:  # the fused answer draws on all the chosen backends; otherwise only on the best
            meta["chosen"] = list(outcome.chosen_backends)
        else:
            meta["chosen"] = [outcome.best.backend]
        if report is not None and report.fell_back:
            logger.warning("fusion failed (%s); streamed the top-ranked answer instead", report.error)
        usage = outcome.usage
        message = AIMessageChunk(
            content="",
            usage_metadata=UsageMetadata(
                input_tokens=usage["input_tokens"],
                output_tokens=usage["output_tokens"],
                total_tokens=usage["total_tokens"],
            ),
            response_metadata={"model_name": self.model_name, "blender": meta},
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message)

    def _iter_chunks(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        children: BaseCallbackManager | None,
        kwargs: dict[str, Any],
    ) -> Iterator[ChatGenerationChunk]:
        call_kwargs = self._call_kwargs(stop, kwargs)
        prompt = prompt_text(messages)
        records = call_backends(
            self._calls(messages, children, call_kwargs),
            timeout=self.timeout,
            max_concurrency=self.max_concurrency,
        )
        _log_failures(records)
        outcome = self._ensemble.select(prompt, records, fuse=False)
        fuse, fuse_kwargs, collector = self._fusion_plan(outcome, children)
        report: StreamReport | None = None
        if fuse:
            report = StreamReport()
            pieces = guarded_stream(
                lambda: (
                    AIMessageChunk(content=p)
                    for p in self.blender.stream_fuse(prompt, outcome.blend, **fuse_kwargs)
                ),
                timeout=self.timeout,
                fallback=self._fallback(outcome),
                report=report,
            )
        else:
            pieces = iter(self._fallback(outcome)())
        for piece in pieces:
            yield ChatGenerationChunk(message=piece)
        yield self._final_chunk(outcome, fuse, report, collector)

    async def _aiter_chunks(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        children: BaseCallbackManager | None,
        kwargs: dict[str, Any],
    ) -> AsyncIterator[ChatGenerationChunk]:
        call_kwargs = self._call_kwargs(stop, kwargs)
        prompt = prompt_text(messages)
        records = await acall_backends(
            self._acalls(messages, children, call_kwargs),
            timeout=self.timeout,
            max_concurrency=self.max_concurrency,
        )
        _log_failures(records)
        outcome = await self._ensemble.aselect(prompt, records, fuse=False)
        fuse, fuse_kwargs, collector = self._fusion_plan(outcome, children)
        report: StreamReport | None = None
        if fuse:
            report = StreamReport()

            async def fused() -> AsyncIterator[AIMessageChunk]:
                async for p in self.blender.astream_fuse(prompt, outcome.blend, **fuse_kwargs):
                    yield AIMessageChunk(content=p)

            async for piece in aguarded_stream(
                fused, timeout=self.timeout, fallback=self._fallback(outcome), report=report
            ):
                yield ChatGenerationChunk(message=piece)
        else:
            for piece in self._fallback(outcome)():
                yield ChatGenerationChunk(message=piece)
        yield self._final_chunk(outcome, fuse, report, collector)

    @override
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._iter_chunks(messages, stop, self._children(run_manager), kwargs))

    @override
    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(
            self._aiter_chunks(messages, stop, self._children(run_manager), kwargs)
        )

    @override
    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._iter_chunks(messages, stop, self._children(run_manager), kwargs):
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    @override
    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in self._aiter_chunks(messages, stop, self._children(run_manager), kwargs):
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def _answer(name: str, message: Any) -> BackendAnswer:
    if isinstance(message, str):  # a chain ending in a string parser
        message = AIMessage(content=message)
    if not isinstance(message, BaseMessage):
        raise TypeError(f"backend {name!r} returned {type(message).__name__}, expected an AI message")
    return message_answer(message)


def _in_config(config: RunnableConfig, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with ``config`` as the current runnable config (as LangChain does for child runs), so a
    bound backend does not merge in the config of the caller's context."""
    with set_config_context(config) as ctx:
        return ctx.run(fn, *args, **kwargs)


def _reset(token: contextvars.Token[Any]) -> None:
    try:
        _PARENT.reset(token)
    except ValueError:  # a generator closed from another context: the value was used up anyway
        pass


def _log_failures(records: list[CandidateRecord]) -> None:
    for r in records:
        if r.error is not None:
            logger.warning("backend %r dropped after %.2f s: %s", r.backend, r.latency_s, r.error)


__all__ = ["BACKEND_TAGS", "FUSER_TAGS", "BlenderLLM"]

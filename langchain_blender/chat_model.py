"""BlenderLLM: a LangChain chat model that asks several chat models, ranks their answers and fuses the best.

The ensemble itself (concurrent calls, timeouts, ``min_successes``, ranking, streamed fusion with its
fallback, metadata, usage sums) is ``blender_core.ensemble.Ensemble``; this module turns LangChain messages
and models into its calls, and its pieces and outcome back into ``AIMessage`` chunks, with LangChain's
callbacks and tracing around them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackManager,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import Field, PrivateAttr, field_validator, model_validator
from typing_extensions import Self, override

from blender_core.ensemble import (
    Backend,
    BackendSettings,
    Ensemble,
    EnsembleSettings,
    name_backends,
    split_backends,
    unwrap,
)
from blender_core.ensemble.fields import RankerField, TracerProviderField
from blender_core.ensemble.sinks import SinkFields
from blender_core.fusion.base import BaseFuser
from blender_core.ranking.registry import spec_name

from .backends import abackend_calls, backend_calls
from .callbacks import BACKEND_TAGS, FUSER_TAGS, child_config, children, enter, leave
from .fusers import ChatModelFuser, model_name
from .messages import chat_turns, event_chunk, outcome_message, prompt_text
from .structured import AnswerCheck, structured_output_check

AnyCallbackManager = CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None


class BlenderLLM(BaseChatModel, EnsembleSettings, SinkFields):
    """A chat model that ensembles several chat models, LLM-Blender style.

    Each call goes to every backend concurrently; backends that fail or time out are dropped (and recorded);
    the answers are ranked by the ranker and the top-K fused (or the top-ranked one returned).
    ``response_metadata["blender"]`` accounts for every candidate (backend, score, rank, latency, error),
    the choice and the fuser; ``usage_metadata`` sums the backends' and the fuser's usage.

    The ensemble's settings (``top_k``, ``strategy``, ``timeout``, ``min_successes``, ...) are
    :class:`~blender_core.ensemble.EnsembleSettings`' fields, the same as the LlamaIndex ``BlenderLLM``'s
    and the server's ``[ensemble]`` section's. ``sinks`` (e.g. a ``blender_core.recording.TrafficRecorder``)
    receive every answered request: the chat, every candidate ranked, the choice.

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
    """The chat models to ask: a list (named after their model ids, ``name#2`` for a repeat) or a name -> model mapping."""
    ranker: RankerField = None
    """A ranker, a folder / hub id / built-in name (loaded on first use), or None for the default ranker."""
    fuser: Any = None
    """None (return the top-ranked answer), a ``blender_core`` fuser, or a chat model prompted to fuse
    (``Backend(model, price_in=..., price_out=...)`` prices its calls)."""
    backend_settings: dict[str, BackendSettings] = Field(default_factory=dict)
    """Per-backend settings by name (``tier``, ``samples``, ``price_in``, ``price_out``); a backend given as
    ``Backend(model, tier=2, ...)`` in ``backends`` lands here."""
    fuser_settings: BackendSettings | None = None
    """The fuser's prices, from ``fuser=Backend(model, price_in=..., price_out=...)``."""
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
    tracer_provider: TracerProviderField = None
    """The OpenTelemetry ``TracerProvider`` the ensemble's spans go to (None: the global one)."""

    _engine: Ensemble = PrivateAttr()
    # set by with_structured_output (through bind_tools): an answer that does not fit fails its backend
    _answer_check: AnswerCheck | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _split_settings(cls, data: Any) -> Any:
        """Backends (and the fuser) given as ``Backend(model, **settings)``: the models go to ``backends``,
        their settings to ``backend_settings`` (``fuser_settings``)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        value = data.get("backends")
        if isinstance(value, (str, bytes)) or not isinstance(value, (dict, Sequence)):
            raise TypeError(
                f"backends must be a list of chat models or a name -> chat model mapping, got {type(value).__name__}"
            )
        named = name_backends(value if isinstance(value, dict) else [(model_name(unwrap(m)), m) for m in value])
        data["backends"], settings = split_backends(named)
        data["backend_settings"] = {**settings, **dict(data.get("backend_settings") or {})}
        if isinstance(data.get("fuser"), Backend):
            data["fuser_settings"], data["fuser"] = data["fuser"].settings(), data["fuser"].model
        return data

    @field_validator("backends", mode="before")
    @classmethod
    def _check_backends(cls, value: Any) -> dict[str, Any]:
        named = name_backends(value)
        for name, model in named.items():
            if not isinstance(model, Runnable):
                raise TypeError(
                    f"backend {name!r} is a {type(model).__name__}, not a LangChain chat model (Runnable)"
                )
        return named

    @field_validator("fuser")
    @classmethod
    def _check_fuser(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, (BaseFuser, Runnable)):
            raise TypeError(
                f"fuser must be None, a blender_core fuser or a chat model; got {type(value).__name__}"
            )
        return value

    @model_validator(mode="after")
    def _build_engine(self) -> Self:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        fuser = ChatModelFuser(self.fuser) if isinstance(self.fuser, Runnable) else self.fuser
        self._engine = Ensemble.from_settings(self, fuser)
        return self

    @property
    def engine(self) -> Ensemble:
        """The core ensemble engine (its ranker is loaded on first use)."""
        return self._engine

    # ------------------------------------------------------------------ LangChain plumbing
    @property
    def _llm_type(self) -> str:
        return "blender-llm"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        fuser = self._engine.fuser
        return {
            "model_name": self.model_name,
            "backends": list(self.backends),
            "ranker": spec_name(self.ranker),
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
        # model_copy keeps the private engine: the bound copy shares the (possibly loaded) ranker
        copy = self.model_copy(update={"backends": bound})
        structured = own.get("ls_structured_output_format")
        if isinstance(structured, dict) and "schema" in structured:
            copy._answer_check = structured_output_check(structured["schema"])
        return copy.bind(**own)

    # ------------------------------------------------------------------ entry points (parent run hand-over)
    @override
    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        config, token = enter(self, config, CallbackManager)
        try:
            return super().invoke(input, config, stop=stop, **kwargs)
        finally:
            leave(token)

    @override
    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        config, token = enter(self, config, AsyncCallbackManager)
        try:
            return await super().ainvoke(input, config, stop=stop, **kwargs)
        finally:
            leave(token)

    @override
    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        config, token = enter(self, config, CallbackManager)
        try:
            yield from super().stream(input, config, stop=stop, **kwargs)
        finally:
            leave(token)

    @override
    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        config, token = enter(self, config, AsyncCallbackManager)
        try:
            async for chunk in super().astream(input, config, stop=stop, **kwargs):
                yield chunk
        finally:
            leave(token)

    # ------------------------------------------------------------------ LangChain -> engine
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

    def _call_options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """How each backend is called: its call kwargs, retries, and the structured-output check."""
        return {
            "call_kwargs": self._call_kwargs(stop, kwargs),
            "max_retries": self.max_retries,
            "check": self._answer_check,
        }

    def _turns(self, messages: list[BaseMessage]) -> list[dict[str, str]] | None:
        """The chat for the engine's sinks (None when there are none: nothing to convert)."""
        return chat_turns(messages) if self._engine.sinks else None

    def _fuse_kwargs(self, manager: BaseCallbackManager | None) -> dict[str, Any]:
        """A chat-model fuser's call is a child run too."""
        if isinstance(self._engine.fuser, ChatModelFuser):
            return {"config": child_config(manager, FUSER_TAGS, "fuser")}
        return {}

    @override
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        manager = children(self, run_manager, self.backend_callbacks)
        calls = backend_calls(self.backends, messages, manager, **self._call_options(stop, kwargs))
        outcome = self._engine.run(
            prompt_text(messages), calls, fuse_kwargs=self._fuse_kwargs(manager), messages=self._turns(messages)
        )
        return ChatResult(generations=[ChatGeneration(message=outcome_message(outcome, self.model_name))])

    @override
    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        manager = children(self, run_manager, self.backend_callbacks)
        calls = abackend_calls(self.backends, messages, manager, **self._call_options(stop, kwargs))
        outcome = await self._engine.arun(
            prompt_text(messages), calls, fuse_kwargs=self._fuse_kwargs(manager), messages=self._turns(messages)
        )
        return ChatResult(generations=[ChatGeneration(message=outcome_message(outcome, self.model_name))])

    @override
    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        manager = children(self, run_manager, self.backend_callbacks)
        calls = backend_calls(self.backends, messages, manager, **self._call_options(stop, kwargs))
        for event in self._engine.stream(
            prompt_text(messages), calls, fuse_kwargs=self._fuse_kwargs(manager), messages=self._turns(messages)
        ):
            chunk = event_chunk(event, self.model_name)
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
        manager = children(self, run_manager, self.backend_callbacks)
        calls = abackend_calls(self.backends, messages, manager, **self._call_options(stop, kwargs))
        async for event in self._engine.astream(
            prompt_text(messages), calls, fuse_kwargs=self._fuse_kwargs(manager), messages=self._turns(messages)
        ):
            chunk = event_chunk(event, self.model_name)
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


__all__ = ["BACKEND_TAGS", "FUSER_TAGS", "BlenderLLM"]

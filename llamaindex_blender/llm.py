"""BlenderLLM: a LlamaIndex LLM that asks several LLMs at once, ranks their answers and fuses the best.

The ensemble itself is ``blender_core.ensemble.Ensemble``; this module turns LlamaIndex messages and LLMs
into its calls, and its pieces and outcome back into LlamaIndex responses.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator, model_validator
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW, DEFAULT_NUM_OUTPUTS
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

from blender_core.base.usage import openai_usage
from blender_core.ensemble import (
    AsyncCall,
    Backend,
    BackendAnswer,
    BackendRequest,
    BackendSettings,
    Blocking,
    Delta,
    Ensemble,
    EnsembleOutcome,
    EnsembleSettings,
    name_backends,
    render_prompt,
    split_backends,
    unwrap,
)
from blender_core.ensemble.fields import RankerField, TracerProviderField
from blender_core.ensemble.prompts import references_prompt
from blender_core.ensemble.sinks import SinkFields
from blender_core.fusion.base import BaseFuser

from .fusers import LlamaIndexFuser, blocks_the_loop, llm_name, usage_of

T = TypeVar("T")


# ---------------------------------------------------------------------- one backend call
def _copies(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Each backend gets its own copy: some LLMs rewrite the messages they are given."""
    return [m.model_copy(deep=True) for m in messages]


def _with_references(messages: Sequence[ChatMessage], request: BackendRequest) -> Sequence[ChatMessage]:
    """A later layer's references go into the system message (merged with one the chat has)."""
    if not request.references:
        return messages
    note = references_prompt(request.references)
    if messages and messages[0].role == MessageRole.SYSTEM:
        first = ChatMessage(role=MessageRole.SYSTEM, content=f"{messages[0].content or ''}\n\n{note}")
        return [first, *messages[1:]]
    return [ChatMessage(role=MessageRole.SYSTEM, content=note), *messages]


def _seeded(llm: LLM, kwargs: Mapping[str, Any], request: BackendRequest) -> Mapping[str, Any]:
    """A sample's seed, for an LLM that declares one."""
    if request.seed is not None and "seed" in type(llm).model_fields:
        return {**kwargs, "seed": request.seed}
    return kwargs


def _chat_answer(
    llm: LLM, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any], request: BackendRequest
) -> BackendAnswer:
    chat = _copies(_with_references(messages, request))
    response = llm.chat(chat, **_seeded(llm, kwargs, request))
    return BackendAnswer(response.message.content or "", usage=usage_of(response), payload=response)


async def _achat_answer(
    llm: LLM, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any], request: BackendRequest
) -> BackendAnswer:
    chat = _copies(_with_references(messages, request))
    response = await llm.achat(chat, **_seeded(llm, kwargs, request))
    return BackendAnswer(response.message.content or "", usage=usage_of(response), payload=response)


def _prompt_for(prompt: str, request: BackendRequest) -> str:
    return f"{references_prompt(request.references)}\n\n{prompt}" if request.references else prompt


def _complete_answer(
    llm: LLM, prompt: str, formatted: bool, kwargs: Mapping[str, Any], request: BackendRequest
) -> BackendAnswer:
    text = _prompt_for(prompt, request)
    response = llm.complete(text, formatted=formatted, **_seeded(llm, kwargs, request))
    return BackendAnswer(response.text, usage=usage_of(response), payload=response)


async def _acomplete_answer(
    llm: LLM, prompt: str, formatted: bool, kwargs: Mapping[str, Any], request: BackendRequest
) -> BackendAnswer:
    text = _prompt_for(prompt, request)
    response = await llm.acomplete(text, formatted=formatted, **_seeded(llm, kwargs, request))
    return BackendAnswer(response.text, usage=usage_of(response), payload=response)


def _in_context(fn: Callable[..., T], *args: Any) -> Callable[[BackendRequest], T]:
    """Run ``fn`` in a copy of the context it is called in: the engine's worker thread's, itself a copy of
    the caller's with the call's OpenTelemetry span current, as an asyncio task would, so that the backends'
    spans and callback events nest under this LLM's and their own under their call's (a copy per call: a
    backend's samples run at once, and one context cannot be entered twice)."""

    def call(request: BackendRequest) -> T:
        return contextvars.copy_context().run(fn, *args, request)

    return call


def _chat_prompt(messages: Sequence[ChatMessage]) -> str:
    role = lambda m: m.role.value if isinstance(m.role, MessageRole) else str(m.role)  # noqa: E731
    return render_prompt([(role(m), m.content or "") for m in messages])


def _chat_turns(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """The chat as ``{"role", "content"}`` dicts, for the engine's sinks."""
    role = lambda m: m.role.value if isinstance(m.role, MessageRole) else str(m.role)  # noqa: E731
    return [{"role": role(m), "content": m.content or ""} for m in messages]


def _positive_min(values: Sequence[int], default: int) -> int:
    """The smallest known value; LLMs report unknown limits as -1 or 0."""
    known = [v for v in values if v and v > 0]
    return min(known) if known else default


# ---------------------------------------------------------------------- the LLM
class BlenderLLM(LLM, EnsembleSettings, SinkFields):
    """Ask several LlamaIndex LLMs concurrently, rank their answers with a pairwise ranker and fuse the top-K.

    Backends that fail or exceed ``timeout`` are dropped (and reported); fewer than ``min_successes``
    answers raise :class:`blender_core.ensemble.EnsembleError`. Without a fuser the top-ranked answer is
    returned; with one (a :class:`~blender_core.fusion.BaseFuser` or any LlamaIndex LLM, prompted with the
    fusion prompt) the top-K answers are merged. ``raw`` holds ``{"blender": <per-candidate details>,
    "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}``, the usage summed over the backends
    and the fuser, where LlamaIndex's token counting reads it. Streaming streams the final answer only.

    Example:
        >>> from llama_index.core import Settings
        >>> llm = BlenderLLM([gpt, claude, llama], ranker="llm-blender/PairRM", timeout=30)  # doctest: +SKIP
        >>> Settings.llm = llm  # doctest: +SKIP
        >>> print(llm.complete("What is 2+2?"))  # doctest: +SKIP
        4
        >>> llm.complete("What is 2+2?").raw["blender"]["best"]  # doctest: +SKIP
        'gpt-4o'
    """

    backends: dict[str, LLM] = Field(
        description="The LLMs to ensemble, by name (a list is named after each model; a repeat gets name#2)."
    )
    ranker: RankerField = Field(
        default=None,
        exclude=True,
        description="A ranker, a folder / hub id / built-in name, or None for the default ranker.",
    )
    fuser: Any = Field(
        default=None,
        exclude=True,
        description="None (pick the best), a BaseFuser, or a LlamaIndex LLM to fuse with "
        "(Backend(llm, price_in=..., price_out=...) prices its calls).",
    )
    backend_settings: dict[str, BackendSettings] = Field(
        default_factory=dict,
        description="Per-backend settings by name (tier, samples, price_in, price_out); a backend given as "
        "Backend(llm, tier=2, ...) lands here.",
    )
    fuser_settings: BackendSettings | None = Field(
        default=None, description="The fuser's prices, from fuser=Backend(llm, price_in=..., price_out=...)."
    )
    tracer_provider: TracerProviderField = None

    _engine: Ensemble = PrivateAttr()

    def __init__(self, backends: Sequence[LLM | Backend] | Mapping[str, LLM | Backend], **kwargs: Any) -> None:
        super().__init__(backends=backends, **kwargs)  # type: ignore[call-arg]  # pydantic fields

    @model_validator(mode="before")
    @classmethod
    def _split_settings(cls, data: Any) -> Any:
        """Backends (and the fuser) given as ``Backend(llm, **settings)``: the LLMs go to ``backends``, their
        settings to ``backend_settings`` (``fuser_settings``)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        value = data.get("backends")
        if isinstance(value, Mapping):
            named = name_backends(value)
        elif not isinstance(value, Sequence) or isinstance(value, str):
            raise ValueError(
                f"backends must be a list of LLMs or a dict name -> LLM, got {type(value).__name__}"
            )
        else:
            for k, llm in enumerate(value):
                if not isinstance(unwrap(llm), LLM):
                    raise ValueError(f"backends[{k}] is a {type(llm).__name__}, not a LlamaIndex LLM")
            named = name_backends([(llm_name(unwrap(llm)), llm) for llm in value])
        data["backends"], settings = split_backends(named)
        data["backend_settings"] = {**settings, **dict(data.get("backend_settings") or {})}
        if isinstance(data.get("fuser"), Backend):
            data["fuser_settings"], data["fuser"] = data["fuser"].settings(), data["fuser"].model
        return data

    @field_validator("fuser")
    @classmethod
    def _wrap_fuser(cls, value: Any) -> BaseFuser | None:
        if value is None or isinstance(value, BaseFuser):
            return value
        if isinstance(value, LLM):
            return LlamaIndexFuser(value)
        raise ValueError(f"fuser must be None, a BaseFuser or a LlamaIndex LLM, got {type(value).__name__}")

    @model_validator(mode="after")
    def _build(self) -> BlenderLLM:
        self._engine = Ensemble.from_settings(self, self.fuser)
        return self

    def _turns(self, messages: Sequence[ChatMessage]) -> list[dict[str, str]] | None:
        """The chat for the engine's sinks (None when there are none: nothing to convert)."""
        return _chat_turns(messages) if self._engine.sinks else None

    def _prompt_turns(self, prompt: str) -> list[dict[str, str]] | None:
        """A completion's prompt as a one-turn chat, for the engine's sinks."""
        return [{"role": "user", "content": prompt}] if self._engine.sinks else None

    @property
    def engine(self) -> Ensemble:
        """The core ensemble engine (its ranker is loaded on first use)."""
        return self._engine

    @classmethod
    def class_name(cls) -> str:
        return "BlenderLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """Context window and output length are the smallest of the backends'; a chat model."""
        metas = [llm.metadata for llm in self.backends.values()]
        return LLMMetadata(
            context_window=_positive_min([m.context_window for m in metas], DEFAULT_CONTEXT_WINDOW),
            num_output=_positive_min([m.num_output for m in metas], DEFAULT_NUM_OUTPUTS),
            is_chat_model=True,
            is_function_calling_model=False,
            model_name=f"blender({','.join(self.backends)})",
        )

    # ------------------------------------------------------------------ engine -> LlamaIndex
    @staticmethod
    def _raw(outcome: EnsembleOutcome) -> dict[str, Any]:
        return {
            "blender": outcome.metadata(),
            # the keys LlamaIndex's token counting (get_tokens_from_response) reads
            "usage": openai_usage(outcome.usage),
        }

    @staticmethod
    def _message(outcome: EnsembleOutcome) -> ChatMessage:
        """The chosen backend's own message (a copy) when not fused, else a new assistant message."""
        payload = outcome.best_answer.payload
        if not outcome.blend.fused and isinstance(payload, ChatResponse):
            return payload.message.model_copy(deep=True)
        return ChatMessage(role=MessageRole.ASSISTANT, content=outcome.text)

    @staticmethod
    def _pieces(events: Iterator[Delta | EnsembleOutcome]) -> Iterator[tuple[str, EnsembleOutcome | None]]:
        """(delta, None) pieces of the final answer; the last one, held back, carries the ended outcome
        (LlamaIndex reads ``raw`` from the last response of a stream)."""
        pending: str | None = None
        for event in events:
            if isinstance(event, EnsembleOutcome):
                yield pending or "", event
                return
            if pending is not None:
                yield pending, None
            pending = event.text

    @staticmethod
    async def _apieces(
        events: AsyncIterator[Delta | EnsembleOutcome],
    ) -> AsyncIterator[tuple[str, EnsembleOutcome | None]]:
        """Async :meth:`_pieces`."""
        pending: str | None = None
        async for event in events:
            if isinstance(event, EnsembleOutcome):
                yield pending or "", event
                return
            if pending is not None:
                yield pending, None
            pending = event.text

    def _chat_response(self, text: str, delta: str, final: EnsembleOutcome | None) -> ChatResponse:
        message = (
            self._message(final)
            if final is not None
            else ChatMessage(role=MessageRole.ASSISTANT, content=text)
        )
        return ChatResponse(message=message, delta=delta, raw=self._raw(final) if final is not None else None)

    def _calls(
        self, make: Callable[[LLM], Callable[[BackendRequest], Any]]
    ) -> dict[str, Callable[[BackendRequest], Any]]:
        return {name: make(llm) for name, llm in self.backends.items()}

    def _acalls(self, method: str, *args: Any) -> dict[str, AsyncCall]:
        """Async calls of ``method`` (``achat`` / ``acomplete``); a backend whose async method only runs the
        blocking sync one (LlamaIndex's ``CustomLLM``) is called through the sync method in a thread, so it
        cannot freeze the event loop or outlive its timeout."""
        sync, coro = (
            (_chat_answer, _achat_answer) if method == "achat" else (_complete_answer, _acomplete_answer)
        )
        return {
            name: Blocking(_in_context(sync, llm, *args))
            if blocks_the_loop(llm, method)
            else partial(coro, llm, *args)
            for name, llm in self.backends.items()
        }

    # ------------------------------------------------------------------ chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Ask every backend (concurrently, in threads), rank, fuse; kwargs go to each backend's ``chat``."""
        calls = self._calls(lambda llm: _in_context(_chat_answer, llm, messages, kwargs))
        outcome = self._engine.run(_chat_prompt(messages), calls, messages=self._turns(messages))
        return ChatResponse(message=self._message(outcome), raw=self._raw(outcome))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async :meth:`chat`: the backends' ``achat`` are awaited concurrently; ranking runs in a thread."""
        calls = self._acalls("achat", messages, kwargs)
        outcome = await self._engine.arun(_chat_prompt(messages), calls, messages=self._turns(messages))
        return ChatResponse(message=self._message(outcome), raw=self._raw(outcome))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Stream the final answer: the backends answer in full (they must, to be ranked), then the fuser's
        tokens are streamed, its first token due within ``timeout`` (if it fails or is late, the top-ranked
        answer is streamed instead); without a fuser the chosen answer comes as one delta. The last chunk's
        ``raw`` carries the details and usage."""

        def gen() -> ChatResponseGen:
            calls = self._calls(lambda llm: _in_context(_chat_answer, llm, messages, kwargs))
            text = ""
            for delta, final in self._pieces(self._engine.stream(_chat_prompt(messages), calls, messages=self._turns(messages))):
                text += delta
                yield self._chat_response(text, delta, final)

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Async :meth:`stream_chat`."""

        async def gen() -> ChatResponseAsyncGen:
            calls = self._acalls("achat", messages, kwargs)
            text = ""
            async for delta, final in self._apieces(self._engine.astream(_chat_prompt(messages), calls, messages=self._turns(messages))):
                text += delta
                yield self._chat_response(text, delta, final)

        return gen()

    # ------------------------------------------------------------------ complete
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Ask every backend's ``complete`` (concurrently, in threads), rank against ``prompt``, fuse."""
        calls = self._calls(lambda llm: _in_context(_complete_answer, llm, prompt, formatted, kwargs))
        outcome = self._engine.run(prompt, calls, messages=self._prompt_turns(prompt))
        return CompletionResponse(text=outcome.text, raw=self._raw(outcome))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Async :meth:`complete`: the backends' ``acomplete`` are awaited concurrently."""
        calls = self._acalls("acomplete", prompt, formatted, kwargs)
        outcome = await self._engine.arun(prompt, calls, messages=self._prompt_turns(prompt))
        return CompletionResponse(text=outcome.text, raw=self._raw(outcome))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Stream the final answer of :meth:`complete` (see :meth:`stream_chat`)."""

        def gen() -> CompletionResponseGen:
            calls = self._calls(lambda llm: _in_context(_complete_answer, llm, prompt, formatted, kwargs))
            text = ""
            for delta, final in self._pieces(self._engine.stream(prompt, calls, messages=self._prompt_turns(prompt))):
                text += delta
                yield CompletionResponse(
                    text=text, delta=delta, raw=self._raw(final) if final is not None else None
                )

        return gen()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async :meth:`stream_complete`."""

        async def gen() -> CompletionResponseAsyncGen:
            calls = self._acalls("acomplete", prompt, formatted, kwargs)
            text = ""
            async for delta, final in self._apieces(self._engine.astream(prompt, calls, messages=self._prompt_turns(prompt))):
                text += delta
                yield CompletionResponse(
                    text=text, delta=delta, raw=self._raw(final) if final is not None else None
                )

        return gen()

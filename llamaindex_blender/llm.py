"""BlenderLLM: a LlamaIndex LLM that asks several LLMs at once, ranks their answers and fuses the best."""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
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

from blender_core.ensemble.engine import (
    BackendAnswer,
    CandidateRecord,
    Ensemble,
    EnsembleOutcome,
    acall_backends,
    call_backends,
    render_prompt,
    sum_usage,
)
from blender_core.ensemble.pipeline import Blender, FusionError
from blender_core.ensemble.streaming import StreamReport, aguarded_stream, guarded_stream
from blender_core.fusion.base import BaseFuser

from .fusers import LlamaIndexFuser, usage_of

T = TypeVar("T")


# ---------------------------------------------------------------------- one backend call
def _copies(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Each backend gets its own copy: some LLMs rewrite the messages they are given."""
    return [m.model_copy(deep=True) for m in messages]


def _chat_answer(llm: LLM, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]) -> BackendAnswer:
    response = llm.chat(_copies(messages), **kwargs)
    return BackendAnswer(response.message.content or "", usage=usage_of(response), payload=response)


async def _achat_answer(llm: LLM, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]) -> BackendAnswer:
    response = await llm.achat(_copies(messages), **kwargs)
    return BackendAnswer(response.message.content or "", usage=usage_of(response), payload=response)


def _complete_answer(llm: LLM, prompt: str, formatted: bool, kwargs: Mapping[str, Any]) -> BackendAnswer:
    response = llm.complete(prompt, formatted=formatted, **kwargs)
    return BackendAnswer(response.text, usage=usage_of(response), payload=response)


async def _acomplete_answer(llm: LLM, prompt: str, formatted: bool, kwargs: Mapping[str, Any]) -> BackendAnswer:
    response = await llm.acomplete(prompt, formatted=formatted, **kwargs)
    return BackendAnswer(response.text, usage=usage_of(response), payload=response)


def _in_context(fn: Callable[..., T], *args: Any) -> Callable[[], T]:
    """Run ``fn`` in a worker thread within a copy of the caller's context, as an asyncio task would, so
    that the backends' spans and callback events nest under this LLM's."""
    return partial(contextvars.copy_context().run, fn, *args)


def _chat_prompt(messages: Sequence[ChatMessage]) -> str:
    role = lambda m: m.role.value if isinstance(m.role, MessageRole) else str(m.role)  # noqa: E731
    return render_prompt([(role(m), m.content or "") for m in messages])


def _backend_name(llm: LLM) -> str:
    model = llm.metadata.model_name
    return model if model and model != "unknown" else llm.class_name()


def _positive_min(values: Sequence[int], default: int) -> int:
    """The smallest known value; LLMs report unknown limits as -1 or 0."""
    known = [v for v in values if v and v > 0]
    return min(known) if known else default


# ---------------------------------------------------------------------- the LLM
class BlenderLLM(LLM):
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
        description="The LLMs to ensemble, by name (a list is named after each model, made unique)."
    )
    ranker: Any = Field(
        default=None, exclude=True, description="A PairRanker, a path / hub id, or None for the built-in default."
    )
    fuser: Any = Field(
        default=None, exclude=True, description="None (pick the best), a BaseFuser, or a LlamaIndex LLM to fuse with."
    )
    # the paper fuses the top 3
    top_k: int = Field(default=3, description="How many top-ranked answers the fuser merges.")
    strategy: str = Field(default="full", description="Ranking strategy: full, bubble, knockout or sort.")
    timeout: float | None = Field(default=None, description="Seconds each backend may take (None: no limit).")
    min_successes: int = Field(default=1, description="Fewer answers than this is an error.")
    max_concurrency: int | None = Field(default=None, description="At most this many backend calls at once.")
    fallback_on_fuser_error: bool = Field(
        default=True, description="When the fuser fails, answer with the top-ranked candidate instead of raising."
    )

    _ensemble: Ensemble = PrivateAttr()

    def __init__(self, backends: Sequence[LLM] | Mapping[str, LLM], **kwargs: Any) -> None:
        super().__init__(backends=backends, **kwargs)  # type: ignore[call-arg]  # pydantic fields

    @field_validator("backends", mode="before")
    @classmethod
    def _name_backends(cls, value: Any) -> dict[str, Any]:
        if isinstance(value, Mapping):
            named = dict(value)
        elif isinstance(value, Sequence) and not isinstance(value, str):
            named = {}
            for k, llm in enumerate(value):
                if not isinstance(llm, LLM):
                    raise ValueError(f"backends[{k}] is a {type(llm).__name__}, not a LlamaIndex LLM")
                base = name = _backend_name(llm)
                n = 1
                while name in named:
                    n += 1
                    name = f"{base}-{n}"
                named[name] = llm
        else:
            raise ValueError(f"backends must be a list of LLMs or a dict name -> LLM, got {type(value).__name__}")
        if not named:
            raise ValueError("backends is empty; give at least one LLM (two or more to have something to rank)")
        return named

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
        if self.min_successes > len(self.backends):
            raise ValueError(
                f"min_successes={self.min_successes} but only {len(self.backends)} backends; "
                "lower min_successes or add backends"
            )
        blender = Blender(
            self.ranker, self.fuser, top_k=self.top_k, strategy=self.strategy,
            fallback_on_fuser_error=self.fallback_on_fuser_error,
        )
        self._ensemble = Ensemble(
            blender, timeout=self.timeout, min_successes=self.min_successes, max_concurrency=self.max_concurrency
        )
        return self

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

    # ------------------------------------------------------------------ shared steps
    def _sync_records(self, make: Callable[[LLM], Callable[[], BackendAnswer]]) -> list[CandidateRecord]:
        calls = {name: make(llm) for name, llm in self.backends.items()}
        ens = self._ensemble
        return call_backends(calls, timeout=ens.timeout, max_concurrency=ens.max_concurrency)

    async def _async_records(self, make: Callable[[LLM], Callable[[], Awaitable[BackendAnswer]]]) -> list[CandidateRecord]:
        calls = {name: make(llm) for name, llm in self.backends.items()}
        ens = self._ensemble
        return await acall_backends(calls, timeout=ens.timeout, max_concurrency=ens.max_concurrency)

    def _fuser_kwargs(self, sink: list[dict[str, int]]) -> dict[str, Any]:
        return {"usage_sink": sink} if isinstance(self._ensemble.blender.fuser, LlamaIndexFuser) else {}

    def _select(self, prompt: str, records: list[CandidateRecord]) -> EnsembleOutcome:
        sink: list[dict[str, int]] = []
        outcome = self._ensemble.select(prompt, records, **self._fuser_kwargs(sink))
        return replace(outcome, fuser_usage=sum_usage(sink) if sink else None)

    async def _aselect(self, prompt: str, records: list[CandidateRecord]) -> EnsembleOutcome:
        sink: list[dict[str, int]] = []
        outcome = await self._ensemble.aselect(prompt, records, **self._fuser_kwargs(sink))
        return replace(outcome, fuser_usage=sum_usage(sink) if sink else None)

    @staticmethod
    def _raw(outcome: EnsembleOutcome) -> dict[str, Any]:
        usage = outcome.usage
        return {
            "blender": outcome.metadata(),
            # the keys LlamaIndex's token counting (get_tokens_from_response) reads
            "usage": {
                "prompt_tokens": usage["input_tokens"],
                "completion_tokens": usage["output_tokens"],
                "total_tokens": usage["total_tokens"],
            },
        }

    @staticmethod
    def _message(outcome: EnsembleOutcome) -> ChatMessage:
        """The chosen backend's own message (a copy) when not fused, else a new assistant message."""
        answer = outcome.best.answer
        if not outcome.blend.fused and answer is not None and isinstance(answer.payload, ChatResponse):
            return answer.payload.message.model_copy(deep=True)
        return ChatMessage(role=MessageRole.ASSISTANT, content=outcome.text)

    def _streamed(
        self, outcome: EnsembleOutcome, text: str, report: StreamReport, sink: list[dict[str, int]]
    ) -> EnsembleOutcome:
        """The outcome once the fuser's stream has ended, or fell back to the top-ranked answer."""
        fuser = self._ensemble.blender.fuser
        timings = {**outcome.blend.timings, "fuse_s": report.elapsed_s}
        if report.first_item_s is not None:
            timings["fuse_first_token_s"] = report.first_item_s
        blend = replace(
            outcome.blend,
            text=text,
            fused=not report.fell_back,
            fuser=fuser.name if fuser is not None else None,
            fuser_error=report.error,
            timings=timings,
        )
        return replace(outcome, blend=blend, text=text, fuser_usage=sum_usage(sink) if sink else None)

    def _fallback(self, outcome: EnsembleOutcome) -> Callable[[], list[str]] | None:
        """What streams when fusion fails before its first token: the top-ranked answer (unless switched off)."""
        return (lambda: [outcome.text]) if self._ensemble.blender.fallback_on_fuser_error else None

    def _fusion_error(self, exc: Exception) -> FusionError:
        fuser = self._ensemble.blender.fuser
        return FusionError(f"the fuser {getattr(fuser, 'name', 'fuser')!r} failed: {type(exc).__name__}: {exc}")

    def _final_pieces(self, prompt: str, outcome: EnsembleOutcome) -> Iterator[tuple[str, EnsembleOutcome | None]]:
        """(delta, None) pieces of the final answer; the last one, held back, carries the finished outcome.

        The fuser's stream goes through :func:`blender_core.ensemble.streaming.guarded_stream`: its first token must
        come within ``timeout``, and a failure before it streams the top-ranked answer instead."""
        blender = self._ensemble.blender
        if blender.fuser is None:
            yield outcome.text, outcome
            return
        sink: list[dict[str, int]] = []
        report = StreamReport()
        pieces = guarded_stream(
            lambda: blender.stream_fuse(prompt, outcome.blend, **self._fuser_kwargs(sink)),
            timeout=self.timeout,
            fallback=self._fallback(outcome),
            report=report,
        )
        pending: str | None = None
        text = ""
        try:
            for piece in pieces:
                if pending is not None:
                    yield pending, None
                pending = piece
                text += piece
        except Exception as exc:
            if report.first_item_s is None:  # failed before any output, with the fallback switched off
                raise self._fusion_error(exc) from exc
            raise
        yield pending or "", self._streamed(outcome, text, report, sink)

    async def _afinal_pieces(
        self, prompt: str, outcome: EnsembleOutcome
    ) -> AsyncIterator[tuple[str, EnsembleOutcome | None]]:
        """Async :meth:`_final_pieces`, from the fuser's ``astream`` through ``aguarded_stream``."""
        blender = self._ensemble.blender
        if blender.fuser is None:
            yield outcome.text, outcome
            return
        sink: list[dict[str, int]] = []
        report = StreamReport()
        pieces = aguarded_stream(
            lambda: blender.astream_fuse(prompt, outcome.blend, **self._fuser_kwargs(sink)),
            timeout=self.timeout,
            fallback=self._fallback(outcome),
            report=report,
        )
        pending: str | None = None
        text = ""
        try:
            async for piece in pieces:
                if pending is not None:
                    yield pending, None
                pending = piece
                text += piece
        except Exception as exc:
            if report.first_item_s is None:
                raise self._fusion_error(exc) from exc
            raise
        yield pending or "", self._streamed(outcome, text, report, sink)

    # ------------------------------------------------------------------ chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Ask every backend (concurrently, in threads), rank, fuse; kwargs go to each backend's ``chat``."""
        records = self._sync_records(lambda llm: _in_context(_chat_answer, llm, messages, kwargs))
        outcome = self._select(_chat_prompt(messages), records)
        return ChatResponse(message=self._message(outcome), raw=self._raw(outcome))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async :meth:`chat`: the backends' ``achat`` are awaited concurrently; ranking runs in a thread."""
        records = await self._async_records(lambda llm: partial(_achat_answer, llm, messages, kwargs))
        outcome = await self._aselect(_chat_prompt(messages), records)
        return ChatResponse(message=self._message(outcome), raw=self._raw(outcome))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Stream the final answer: the backends answer in full (they must, to be ranked), then the fuser's
        tokens are streamed, its first token due within ``timeout`` (if it fails or is late, the top-ranked
        answer is streamed instead); without a fuser the chosen answer comes as one delta. The last chunk's
        ``raw`` carries the details and usage."""
        prompt = _chat_prompt(messages)

        def gen() -> ChatResponseGen:
            records = self._sync_records(lambda llm: _in_context(_chat_answer, llm, messages, kwargs))
            outcome = self._ensemble.select(prompt, records, fuse=False)
            text = ""
            for delta, final in self._final_pieces(prompt, outcome):
                text += delta
                message = self._message(final) if final is not None else ChatMessage(role=MessageRole.ASSISTANT, content=text)
                yield ChatResponse(message=message, delta=delta, raw=self._raw(final) if final is not None else None)

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Async :meth:`stream_chat`."""
        prompt = _chat_prompt(messages)

        async def gen() -> ChatResponseAsyncGen:
            records = await self._async_records(lambda llm: partial(_achat_answer, llm, messages, kwargs))
            outcome = await self._ensemble.aselect(prompt, records, fuse=False)
            text = ""
            async for delta, final in self._afinal_pieces(prompt, outcome):
                text += delta
                message = self._message(final) if final is not None else ChatMessage(role=MessageRole.ASSISTANT, content=text)
                yield ChatResponse(message=message, delta=delta, raw=self._raw(final) if final is not None else None)

        return gen()

    # ------------------------------------------------------------------ complete
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Ask every backend's ``complete`` (concurrently, in threads), rank against ``prompt``, fuse."""
        records = self._sync_records(lambda llm: _in_context(_complete_answer, llm, prompt, formatted, kwargs))
        outcome = self._select(prompt, records)
        return CompletionResponse(text=outcome.text, raw=self._raw(outcome))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Async :meth:`complete`: the backends' ``acomplete`` are awaited concurrently."""
        records = await self._async_records(lambda llm: partial(_acomplete_answer, llm, prompt, formatted, kwargs))
        outcome = await self._aselect(prompt, records)
        return CompletionResponse(text=outcome.text, raw=self._raw(outcome))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Stream the final answer of :meth:`complete` (see :meth:`stream_chat`)."""

        def gen() -> CompletionResponseGen:
            records = self._sync_records(lambda llm: _in_context(_complete_answer, llm, prompt, formatted, kwargs))
            outcome = self._ensemble.select(prompt, records, fuse=False)
            text = ""
            for delta, final in self._final_pieces(prompt, outcome):
                text += delta
                yield CompletionResponse(text=text, delta=delta, raw=self._raw(final) if final is not None else None)

        return gen()

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        """Async :meth:`stream_complete`."""

        async def gen() -> CompletionResponseAsyncGen:
            records = await self._async_records(lambda llm: partial(_acomplete_answer, llm, prompt, formatted, kwargs))
            outcome = await self._ensemble.aselect(prompt, records, fuse=False)
            text = ""
            async for delta, final in self._afinal_pieces(prompt, outcome):
                text += delta
                yield CompletionResponse(text=text, delta=delta, raw=self._raw(final) if final is not None else None)

        return gen()

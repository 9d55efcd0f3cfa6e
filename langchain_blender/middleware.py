"""BestOfModelsMiddleware: send each agent model call to several models and keep the best response.

For ``langchain.agents.create_agent`` (shaped like LangChain's ``ModelFallbackMiddleware``); needs the
``agents`` extra. Other frameworks (LangGraph nodes) use :func:`langchain_blender.choose_best_message`.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
from collections.abc import Awaitable, Callable

try:
    from langchain.agents.middleware.types import AgentMiddleware, ModelRequest, ModelResponse
    from langchain.chat_models import init_chat_model
    from langgraph.errors import GraphBubbleUp
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'BestOfModelsMiddleware needs langchain >= 1.0 (create_agent); install it with pip install "blender-llm[agents]"'
    ) from exc

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage

from blender_core.ensemble import (
    BackendAnswer,
    Ensemble,
    EnsembleConfig,
    EnsembleOutcome,
    EnsembleSettings,
    name_backends,
)
from blender_core.ranking.registry import RankerSpec

from .fusers import model_name
from .messages import message_answer, prompt_text

#: Tags on the candidate model calls: their tokens stay out of LangGraph's ``stream_mode="messages"``
#: (only the kept response reaches the agent's state, and the stream, at the end of the model node).
CANDIDATE_TAGS = ("blender:candidate", "nostream")
# the ensemble's defaults, declared once
_DEFAULTS = EnsembleSettings()


def _last_ai(response: ModelResponse | AIMessage) -> AIMessage:
    messages = [response] if isinstance(response, AIMessage) else response.result
    for message in reversed(messages):
        if isinstance(message, AIMessage):
            return message
    raise ValueError("the model call returned no AI message")


def _tagged(model: BaseChatModel) -> BaseChatModel:
    """A copy of the model whose runs carry the candidate tags (the caller's model is not modified)."""
    tags = [*(model.tags or []), *(t for t in CANDIDATE_TAGS if t not in (model.tags or []))]
    return model.model_copy(update={"tags": tags})


class BestOfModelsMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """Send each model call to several models concurrently and keep the best response (text or tool calls).

    The agent's own model takes part as ``"primary"`` (unless ``include_primary=False``); the others are
    named after their model ids. A model that fails or times out is dropped; fewer than ``min_successes``
    answers fail the call. The kept message carries ``response_metadata["blender"]`` (every candidate's
    score, rank, latency, error and usage).

    Example:
        .. code-block:: python

            from langchain.agents import create_agent
            from langchain_blender.middleware import BestOfModelsMiddleware

            agent = create_agent(
                model="openai:gpt-4.1-mini",
                tools=[get_weather],
                middleware=[BestOfModelsMiddleware("anthropic:claude-sonnet-4-5", ranker="llm-blender/PairRM")],
            )
    """

    def __init__(
        self,
        first_model: str | BaseChatModel,
        *additional_models: str | BaseChatModel,
        ranker: RankerSpec = None,
        strategy: str = _DEFAULTS.strategy,
        include_primary: bool = True,
        timeout: float | None = _DEFAULTS.timeout,
        min_successes: int = _DEFAULTS.min_successes,
        max_concurrency: int | None = _DEFAULTS.max_concurrency,
    ) -> None:
        """Args:
        first_model, additional_models: the other models (instances, or ``"provider:model"`` strings).
        ranker: a ranker, a folder / hub id / built-in name (loaded on first use), or None for the default.
        strategy: ranking strategy.
        include_primary: whether the agent's own model is one of the candidates.
        timeout: seconds each model call may take (None: no limit).
        The defaults are the ensemble's (:class:`~blender_core.ensemble.EnsembleSettings`).
        min_successes: fewer answers than this fails the model call.
        max_concurrency: at most this many model calls at once (None: all).
        """
        super().__init__()
        instances = []
        for model in (first_model, *additional_models):
            instance = init_chat_model(model) if isinstance(model, str) else model
            if not isinstance(instance, BaseChatModel):
                raise TypeError(
                    f"models must be chat models or 'provider:model' strings, got {type(model).__name__}"
                )
            instances.append(instance)
        # "primary" is the agent's own model: named first, so another model of that name becomes primary#2
        named = name_backends([("primary", None), *((model_name(m), _tagged(m)) for m in instances)])
        named.pop("primary")
        self.models: dict[str, BaseChatModel] = {k: v for k, v in named.items() if v is not None}
        self.include_primary = include_primary
        if not include_primary and len(self.models) < 2:
            raise ValueError("with include_primary=False, pass at least two models to choose from")
        config = EnsembleConfig(
            strategy=strategy, timeout=timeout, min_successes=min_successes, max_concurrency=max_concurrency
        )
        self.ensemble = Ensemble(ranker, None, config)
        self.ensemble.check_backend_count(len(self.models) + include_primary)

    def _requests(self, request: ModelRequest) -> dict[str, ModelRequest]:
        requests = {"primary": request.override(model=_tagged(request.model))} if self.include_primary else {}
        requests.update({name: request.override(model=model) for name, model in self.models.items()})
        return requests

    @staticmethod
    def _prompt(request: ModelRequest) -> str:
        messages: list[BaseMessage] = [
            *([request.system_message] if request.system_message else []),
            *request.messages,
        ]
        return prompt_text(messages)

    @staticmethod
    def _kept(outcome: EnsembleOutcome) -> ModelResponse | AIMessage:
        response = outcome.best_answer.payload
        message = _last_ai(response)
        annotated = message.model_copy(
            update={"response_metadata": {**message.response_metadata, "blender": outcome.metadata()}}
        )
        if isinstance(response, AIMessage):
            return annotated
        result = [annotated if m is message else m for m in response.result]
        return dataclasses.replace(response, result=result)

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse | AIMessage:
        """Call every model concurrently (threads), rank the responses, return the best one."""
        bubbled: list[BaseException] = []

        def call(req: ModelRequest, ctx: contextvars.Context) -> BackendAnswer:
            try:
                response = ctx.run(handler, req)
            except GraphBubbleUp as exc:  # interrupts are not failures: re-raised below
                bubbled.append(exc)
                raise
            return message_answer(_last_ai(response), payload=response)

        calls = {
            name: functools.partial(call, req, contextvars.copy_context())
            for name, req in self._requests(request).items()
        }
        records = self.ensemble.call(calls)
        if bubbled:
            raise bubbled[0]
        return self._kept(self.ensemble.select(self._prompt(request), records))

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> ModelResponse | AIMessage:
        """Await every model concurrently, rank the responses off the event loop, return the best one."""
        bubbled: list[BaseException] = []

        async def call(req: ModelRequest) -> BackendAnswer:
            try:
                response = await handler(req)
            except GraphBubbleUp as exc:
                bubbled.append(exc)
                raise
            return message_answer(_last_ai(response), payload=response)

        calls = {name: functools.partial(call, req) for name, req in self._requests(request).items()}
        records = await self.ensemble.acall(calls)
        if bubbled:
            raise bubbled[0]
        return self._kept(await self.ensemble.aselect(self._prompt(request), records))


__all__ = ["CANDIDATE_TAGS", "BestOfModelsMiddleware"]

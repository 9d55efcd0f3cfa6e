"""An OpenAI-compatible chat completions endpoint as a LangChain chat model, on one shared ``httpx`` client.

The server's ``kind = "openai"`` backends (and a fuser naming one) are :class:`UpstreamChat`: the request
written as the chat completions API takes it (the ``openai`` package's parameter types), sent over the
upstream's one ``httpx.AsyncClient`` (its pooled connections shared by every request of the server), and the
answer read straight into an ``AIMessage``: no SDK client and no thread hop per response, a third of the CPU
of ``langchain_openai.ChatOpenAI`` per call. What the server asked of ``ChatOpenAI`` it does the same way:
the request's options and a sample's ``seed`` sent as they are (``max_tokens`` as ``max_completion_tokens``),
tools bound with ``bind_tools``, tool calls parsed (arguments that are not JSON kept as invalid tool calls),
usage read (streamed too, with ``stream_usage``), retries of failed calls (``max_retries``), and failures
raised as the ``openai`` package's exceptions with the SDK's texts (``InternalServerError: Error code: 500 -
{...}``), which the ensemble records on the candidate. Cancelling a call closes its HTTP request.

Library users pass any LangChain or LlamaIndex model; this one is only the server's (async only).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import httpx
import openai
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import ToolCall, invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from openai.types.chat import ChatCompletionMessageParam
from pydantic import ConfigDict, Field

CHAT_PATH = "/chat/completions"
# the statuses worth another try (as the openai SDK retries them): timeouts, conflicts, rate limits, the
# server's own failures
_RETRIED = frozenset({408, 409, 429})
_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


def status_error(response: httpx.Response) -> openai.APIStatusError:
    """The ``openai`` package's exception for an error response, with the SDK's text (``Error code: 500 -
    {body}``); the body was scrubbed of keys as it arrived (the server's HTTP client does that)."""
    text = response.text.strip()
    body: Any = text
    try:
        body = json.loads(text)
        message = f"Error code: {response.status_code} - {body}"
    except ValueError:
        message = text or f"Error code: {response.status_code}"
    kind = _STATUS_ERRORS.get(response.status_code)
    if kind is None:
        kind = openai.InternalServerError if response.status_code >= 500 else openai.APIStatusError
    return kind(message, response=response, body=body)


def _retried(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRIED or exc.status_code >= 500
    return isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError))


def usage_metadata(usage: Mapping[str, Any] | None) -> UsageMetadata | None:
    """OpenAI's ``usage`` as LangChain's token counts (None when the upstream reported none)."""
    if not usage:
        return None
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    total = int(usage.get("total_tokens") or prompt + completion)
    return UsageMetadata(input_tokens=prompt, output_tokens=completion, total_tokens=total)


def _tool_calls(raw: Sequence[Mapping[str, Any]]) -> tuple[list[ToolCall], list[Any]]:
    """An answer's tool calls, their arguments parsed; arguments that are not a JSON object are kept as
    invalid tool calls, as written."""
    calls, invalid = [], []
    for call in raw:
        function = call.get("function") or {}
        name, arguments, call_id = function.get("name"), function.get("arguments") or "{}", call.get("id")
        try:
            args = json.loads(arguments)
        except ValueError as exc:
            invalid.append(invalid_tool_call(name=name, args=arguments, id=call_id, error=f"not JSON: {exc}"))
            continue
        if not isinstance(args, dict):
            invalid.append(
                invalid_tool_call(name=name, args=arguments, id=call_id, error="not a JSON object")
            )
            continue
        calls.append(tool_call(name=name or "", args=args, id=call_id))
    return calls, invalid


def completion_message(data: Mapping[str, Any]) -> AIMessage:
    """A ``chat.completion`` body's first choice as an AI message, with its usage and finish reason."""
    choice = data["choices"][0]
    message = choice["message"]
    calls, invalid = _tool_calls(message.get("tool_calls") or [])
    return AIMessage(
        content=message.get("content") or "",
        tool_calls=calls,
        invalid_tool_calls=invalid,
        usage_metadata=usage_metadata(data.get("usage")),
        response_metadata={"finish_reason": choice.get("finish_reason"), "model_name": data.get("model")},
        id=data.get("id"),
    )


def chunk_message(data: Mapping[str, Any]) -> AIMessageChunk:
    """A ``chat.completion.chunk``'s piece (its text, tool-call pieces, usage) as a message chunk."""
    choices = data.get("choices") or [{}]
    delta = choices[0].get("delta") or {}
    chunks = [
        tool_call_chunk(
            name=(c.get("function") or {}).get("name"),
            args=(c.get("function") or {}).get("arguments"),
            id=c.get("id"),
            index=c.get("index"),
        )
        for c in delta.get("tool_calls") or []
    ]
    finish = choices[0].get("finish_reason")
    return AIMessageChunk(
        content=delta.get("content") or "",
        tool_call_chunks=chunks,
        usage_metadata=usage_metadata(data.get("usage")),
        response_metadata={"finish_reason": finish} if finish else {},
    )


def tool_choice_param(choice: Any, names: Sequence[str]) -> Any:
    """``bind_tools``' ``tool_choice`` as the API takes it (as ``ChatOpenAI`` writes it): a tool's name as
    ``{"type": "function", ...}``, ``any`` or ``True`` as ``required``; the rest as given."""
    if isinstance(choice, bool):
        return "required" if choice else None
    if isinstance(choice, str) and choice in names:
        return {"type": "function", "function": {"name": choice}}
    if choice == "any":
        return "required"
    return choice


class UpstreamChat(BaseChatModel):
    """One OpenAI-compatible endpoint's model, called over a shared ``httpx.AsyncClient`` (whose base URL,
    ``Authorization`` header, timeout and connection limits the server set once).

    Example:
        >>> http = httpx.AsyncClient(base_url="http://127.0.0.1:11434/v1")  # doctest: +SKIP
        >>> chat = UpstreamChat(model="llama3.2", client=http, name="llama")  # doctest: +SKIP
        >>> (await chat.ainvoke("2+2?")).content  # doctest: +SKIP
        '4'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str
    """The upstream's model id, sent as ``model``."""
    client: Any = Field(exclude=True, repr=False)
    """The upstream's ``httpx.AsyncClient`` (shared; it holds the key in its headers)."""
    max_retries: int = Field(default=0, ge=0)
    """Further tries of a call that failed on the way (connection, timeout, 408/409/429/5xx)."""
    stream_usage: bool = True
    """Ask for usage in streamed answers (``stream_options``)."""
    seed: int | None = None
    """Declared so that a sample's seed is sent (``takes_seed``); a call's ``seed`` option sets it."""

    @property
    def _llm_type(self) -> str:
        return "openai-compatible"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model}

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: Any = None,
        parallel_tool_calls: bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (OpenAI's tool dicts, or anything LangChain turns into one) to every call."""
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        names = [t["function"]["name"] for t in formatted if "function" in t]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice_param(tool_choice, names)
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, **kwargs)

    # ------------------------------------------------------------------ the request
    def _messages(self, messages: list[BaseMessage]) -> list[ChatCompletionMessageParam]:
        out: list[Any] = convert_to_openai_messages(messages)
        if re.match(r"o\d", self.model):  # o-series models take the system message as the developer's
            out = [{**m, "role": "developer"} if m["role"] == "system" else m for m in out]
        return out

    def _body(
        self, messages: list[BaseMessage], stop: list[str] | None, options: dict[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": self._messages(messages)}
        body.update(options)
        if "max_tokens" in body:  # the name OpenAI took it to in 2024; every compatible server reads it
            body["max_completion_tokens"] = body.pop("max_tokens")
        if stop:
            body["stop"] = stop
        if self.seed is not None:
            body.setdefault("seed", self.seed)
        return body

    async def _send(self, body: dict[str, Any], *, stream: bool) -> httpx.Response:
        """The upstream's response (its status checked), retried as ``max_retries`` allows; a stream's body
        is left to read (and to close)."""
        content = json.dumps(body, ensure_ascii=False).encode()
        headers = {"content-type": "application/json"}
        attempt = 0
        while True:
            request = self.client.build_request(
                "POST", CHAT_PATH.lstrip("/"), content=content, headers=headers
            )
            try:
                try:
                    response = await self.client.send(request, stream=stream)
                except httpx.TimeoutException as exc:
                    raise openai.APITimeoutError(request=request) from exc
                except httpx.TransportError as exc:
                    raise openai.APIConnectionError(request=request) from exc
                if response.status_code >= 400:
                    await response.aread()
                    await response.aclose()
                    raise status_error(response)
                return response
            except openai.APIError as exc:
                if attempt >= self.max_retries or not _retried(exc):
                    raise
            attempt += 1
            await asyncio.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.75 + random.random() / 4))

    # ------------------------------------------------------------------ LangChain's entry points
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise NotImplementedError(
            f"{type(self).__name__} is the server's async backend; call ainvoke() or astream(), or use "
            "langchain_openai.ChatOpenAI for blocking calls"
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        response = await self._send(self._body(messages, stop, kwargs), stream=False)
        message = completion_message(json.loads(response.content))
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        body = self._body(messages, stop, kwargs)
        body["stream"] = True
        if self.stream_usage:
            body["stream_options"] = {"include_usage": True}
        response = await self._send(body, stream=True)
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank lines between events, comments, event names
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if isinstance(event, dict) and event.get("error"):
                    error = event["error"]
                    message = error.get("message") if isinstance(error, dict) else str(error)
                    raise openai.APIError(
                        message or "the upstream's stream failed", response.request, body=error
                    )
                yield ChatGenerationChunk(message=chunk_message(event))
        finally:
            await response.aclose()

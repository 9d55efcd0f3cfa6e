"""The OpenAI chat completions wire format, to and from LangChain messages.

A request body becomes a checked :class:`ChatRequest`, its messages LangChain messages and its sampling
fields the call options every OpenAI-compatible backend gets; ``BlenderLLM``'s answer becomes a
``chat.completion`` (or ``chat.completion.chunk`` server-sent events), with ``usage`` summed over the
backends, the ranker and the fuser. Errors have OpenAI's shape:
``{"error": {"message", "type", "param", "code"}}``.

The one extension: a request with ``"blender": {"account": true}`` gets the ensemble's account of every
candidate (backend, text, score, rank, latency, error, usage; the choice, the fuser, the timings) as a
top-level ``"blender"`` field of the completion, or of the last chunk of a stream.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_messages
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DONE = b"data: [DONE]\n\n"
# the request fields passed to every OpenAI-compatible backend as they are
_SAMPLING = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")


class ApiError(Exception):
    """An error answered in OpenAI's shape, with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlenderOptions(_Options):
    """The request's ``"blender"`` field: what the ensemble adds to the OpenAI protocol."""

    # the per-candidate account in the response's "blender" field
    account: bool = False


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """A ``POST /v1/chat/completions`` body: the fields the ensemble uses (others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    n: int = 1
    logprobs: bool | None = None
    response_format: dict[str, Any] | None = None
    blender: BlenderOptions | None = None

    @property
    def wants_account(self) -> bool:
        return self.blender is not None and self.blender.account

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def call_options(self) -> dict[str, Any]:
        """The options every OpenAI-compatible backend gets (local backends keep their config's)."""
        out = {k: getattr(self, k) for k in _SAMPLING if getattr(self, k) is not None}
        max_tokens = self.max_completion_tokens or self.max_tokens
        if max_tokens is not None:
            out["max_tokens"] = max_tokens
        if self.stop:
            out["stop"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        return out

    def tool_options(self) -> dict[str, Any]:
        """``bind_tools`` keyword arguments besides the tools."""
        out: dict[str, Any] = {}
        if self.tool_choice is not None:
            out["tool_choice"] = self.tool_choice
        if self.parallel_tool_calls is not None:
            out["parallel_tool_calls"] = self.parallel_tool_calls
        return out


def _param(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if k else str(p)) for k, p in enumerate(loc))


def parse_request(body: bytes, *, max_messages: int) -> ChatRequest:
    """The checked request.

    Raises:
        ApiError: 400: not JSON, a field of the wrong type, too many messages, or an option the ensemble
            cannot honour (``n`` > 1, ``logprobs``, a ``response_format`` other than text).
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    messages = data.get("messages")
    if isinstance(messages, list) and len(messages) > max_messages:
        raise ApiError(
            400,
            f"{len(messages)} messages, more than this server's limit of {max_messages}; shorten the chat",
            param="messages",
            code="too_many_messages",
        )
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _param(tuple(err["loc"]))
        raise ApiError(400, f"{where}: {err['msg']}", param=where) from None
    if request.n != 1:
        raise ApiError(400, f"n={request.n}: the ensemble returns one choice; ask with n=1", param="n")
    if request.logprobs:
        raise ApiError(400, "logprobs are not available: the answer may be a fusion", param="logprobs")
    if request.response_format and request.response_format.get("type", "text") != "text":
        raise ApiError(
            400,
            "response_format other than text is not supported; use tools for structured output",
            param="response_format",
        )
    return request


def to_messages(raw: list[dict[str, Any]]) -> list[BaseMessage]:
    """OpenAI chat messages (system, developer, user, assistant with tool calls, tool) as LangChain messages."""
    try:
        return convert_to_messages(raw)
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"messages: {exc}", param="messages") from None


def account(metadata: Mapping[str, Any], redact: Callable[[str], str]) -> dict[str, Any]:
    """The ensemble's account (``response_metadata["blender"]``), its error texts scrubbed of secrets."""
    out = dict(metadata)
    out["candidates"] = [
        {**c, "error": redact(c["error"]) if c.get("error") else c.get("error")}
        for c in metadata["candidates"]
    ]
    if out.get("fuser_error"):
        out["fuser_error"] = redact(out["fuser_error"])
    out["ranker_issues"] = [redact(str(i)) for i in out.get("ranker_issues") or []]
    return out


def _usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    prompt, completion = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens", prompt + completion)),
    }


def _tool_calls(message: AIMessage) -> list[dict[str, Any]]:
    calls = [
        {
            "id": c.get("id") or f"call_{k}",
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c.get("args") or {}, ensure_ascii=False)},
        }
        for k, c in enumerate(message.tool_calls)
    ]
    calls.extend(  # arguments that did not parse: handed on as written
        {
            "id": c.get("id") or f"call_{len(calls) + k}",
            "type": "function",
            "function": {"name": c.get("name") or "", "arguments": c.get("args") or ""},
        }
        for k, c in enumerate(message.invalid_tool_calls)
    )
    return calls


class Completion:
    """One response under construction: its id, creation time and model name."""

    def __init__(self, model: str, redact: Callable[[str], str]) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.redact = redact

    def body(self, message: AIMessage, *, with_account: bool) -> dict[str, Any]:
        """The ``chat.completion`` of the ensemble's answer."""
        calls = _tool_calls(message)
        text = message.text
        reply: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            reply["tool_calls"] = calls
        out: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": reply,
                    "finish_reason": "tool_calls" if calls else "stop",
                    "logprobs": None,
                }
            ],
            "usage": _usage(message.usage_metadata),
        }
        if with_account:
            out["blender"] = account(message.response_metadata["blender"], self.redact)
        return out


class ChunkStream:
    """The ensemble's streamed chunks as ``chat.completion.chunk`` server-sent events."""

    def __init__(self, completion: Completion, *, include_usage: bool, with_account: bool) -> None:
        self.completion = completion
        self.include_usage = include_usage
        self.with_account = with_account
        self.tool_calls = 0
        self.usage: Mapping[str, Any] | None = None
        self.metadata: Mapping[str, Any] | None = None

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        c = self.completion
        payload = {
            "id": c.id,
            "object": "chat.completion.chunk",
            "created": c.created,
            "model": c.model,
            "system_fingerprint": None,
            "choices": choices,
            **extra,
        }
        return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"

    def _delta(
        self, delta: dict[str, Any], finish: Literal["stop", "tool_calls"] | None = None
    ) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]

    def start(self) -> bytes:
        return self._event(self._delta({"role": "assistant", "content": ""}))

    def piece(self, chunk: AIMessageChunk) -> bytes:
        """The events of one chunk (none for a chunk with nothing to show); remembers usage and account."""
        if chunk.usage_metadata:
            self.usage = chunk.usage_metadata
        if "blender" in chunk.response_metadata:
            self.metadata = chunk.response_metadata["blender"]
        delta: dict[str, Any] = {}
        if chunk.text:
            delta["content"] = chunk.text
        if chunk.tool_call_chunks:
            delta["tool_calls"] = [
                {
                    "index": tc.get("index") if tc.get("index") is not None else k,
                    "id": tc.get("id"),
                    "type": "function",
                    "function": {"name": tc.get("name") or "", "arguments": tc.get("args") or ""},
                }
                for k, tc in enumerate(chunk.tool_call_chunks)
            ]
            self.tool_calls += len(delta["tool_calls"])
        return self._event(self._delta(delta)) if delta else b""

    def end(self) -> bytes:
        """The finishing chunk (with the account when asked), the usage chunk when asked, then ``[DONE]``."""
        extra = {}
        if self.with_account and self.metadata is not None:
            extra["blender"] = account(self.metadata, self.completion.redact)
        out = self._event(self._delta({}, "tool_calls" if self.tool_calls else "stop"), **extra)
        if self.include_usage:
            out += self._event([], usage=_usage(self.usage))
        return out + DONE

    def error(self, error: ApiError) -> bytes:
        """An error after the stream began: an ``error`` event (the openai client raises it), then ``[DONE]``."""
        return (
            b"data: "
            + json.dumps(error.body(), ensure_ascii=False, separators=(",", ":")).encode()
            + b"\n\n"
            + DONE
        )

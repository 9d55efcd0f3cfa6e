"""The OpenAI chat completions wire format, on the ``openai`` package's own types.

A request body becomes a typed :class:`ChatCompletionRequest` (its messages typed by role, its tools and
tool choice openai's own ``ChatCompletionToolParam`` / ``ChatCompletionToolChoiceOptionParam``), its
messages LangChain messages and its sampling fields the call options every OpenAI-compatible backend
gets. ``BlenderLLM``'s answer becomes an ``openai.types.chat.ChatCompletion`` (or ``ChatCompletionChunk``
server-sent events), with ``openai.types.CompletionUsage`` summed over the backends, the ranker and the
fuser. Errors have OpenAI's shape, ``{"error": ErrorObject}``: ``{"message", "type", "param", "code"}``.

Fields a client sends that the ensemble does not use (``user``, ``metadata``, ``store``, ...) are accepted
and ignored, as vLLM does; what a client adds to a message travels on to the backends.

The one extension: a request with ``"blender": {"account": true}`` gets the ensemble's account of every
candidate (backend, text, score, rank, latency, error, usage; the choice, the fuser, the timings) as a
top-level ``"blender"`` field of the completion, or of the last chunk of a stream (openai's models keep
extra fields: ``reply.model_extra["blender"]``).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_messages
from openai.types import CompletionUsage
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageToolCallParam,
    ChatCompletionStreamOptionsParam,
    ChatCompletionToolChoiceOptionParam,
    ChatCompletionToolParam,
)
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import (
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
)
from openai.types.chat.chat_completion_message_tool_call import ChatCompletionMessageToolCall, Function
from openai.types.shared import ErrorObject
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import from_json

from blender_core.app.serve.redaction import Redactor
from blender_core.base.usage import openai_usage

logger = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
DONE = b"data: [DONE]\n\n"
# the request fields passed to every OpenAI-compatible backend as they are
_SAMPLING = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
# JSON nesting a request may have: a tool's parameters are a JSON schema, rarely 20 deep; deeper bodies are
# refused before anything recursive (validation, LangChain, the backends' JSON encoders) walks them
MAX_JSON_DEPTH = 64
# OpenAI's rule for a function's name
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# a \uD800-\uDBFF escape without its \uDC00-\uDFFF pair, or one of those alone (after an even run of \\)
_LONE_SURROGATE = re.compile(
    rb"(?<!\\)(?:\\\\)*(?:\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)
FinishReason = Literal["stop", "tool_calls"]


# ---------------------------------------------------------------------------- errors
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
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": ErrorObject(message=message, type=type, param=param, code=code).model_dump()}


# ---------------------------------------------------------------------------- the request
class _Open(BaseModel):
    # what a client adds beyond the protocol is accepted, and travels on to the backends
    model_config = ConfigDict(extra="allow")


class ContentPart(_Open):
    """One part of a message's content: ``text``, ``image_url``, ``input_audio``, ``file``, or another
    kind a backend may know; each backend reads it as the OpenAI protocol writes it."""

    type: str

    @model_validator(mode="after")
    def _text(self) -> ContentPart:
        if self.type == "text" and not isinstance((self.model_extra or {}).get("text"), str):
            raise ValueError("a text part needs a string 'text'")
        return self


# A string, or parts; None (sent by some clients) reads as empty, as LangChain reads it.
Content = str | list[ContentPart] | None


class DeveloperMessage(_Open):
    role: Literal["developer"]
    content: Content
    name: str | None = None


class SystemMessage(_Open):
    role: Literal["system"]
    content: Content
    name: str | None = None


class UserMessage(_Open):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(_Open):
    role: Literal["assistant"]
    # none with tool calls
    content: Content = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ChatCompletionMessageToolCallParam] | None = None


class ToolMessage(_Open):
    role: Literal["tool"]
    content: Content
    tool_call_id: str


class FunctionMessage(_Open):
    """The deprecated ``function`` role (a function's result before tools)."""

    role: Literal["function"]
    content: str | None
    name: str


ChatMessage = Annotated[
    DeveloperMessage | SystemMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]
_ROLES = ("developer", "system", "user", "assistant", "tool", "function")


class BlenderOptions(BaseModel):
    """The request's ``"blender"`` field: what the ensemble adds to the OpenAI protocol."""

    # an unknown option is a typo to report, not to ignore
    model_config = ConfigDict(extra="forbid")

    # the per-candidate account in the response's "blender" field
    account: bool = False


class ChatCompletionRequest(BaseModel):
    """A ``POST /v1/chat/completions`` body: the fields the ensemble uses, typed (others are accepted and
    ignored: ``model_extra``)."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: ChatCompletionStreamOptionsParam | None = None
    tools: list[ChatCompletionToolParam] | None = None
    # OpenAI's choices, or a tool's name (LangChain's bind_tools takes one)
    tool_choice: ChatCompletionToolChoiceOptionParam | str | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    n: int | None = 1
    logprobs: bool | None = None
    # only its type is read: anything but text is refused (400), whatever the rest says
    response_format: dict[str, Any] | None = None
    blender: BlenderOptions | None = None

    @model_validator(mode="after")
    def _tools(self) -> ChatCompletionRequest:
        check_tools(self.tools or [], self.tool_choice)
        return self

    @property
    def wants_account(self) -> bool:
        return self.blender is not None and self.blender.account

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))

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


class ToolError(ValueError):
    """A malformed tool setting: its field (``tools`` or ``tool_choice``) and what is wrong, placed."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def check_tools(tools: list[ChatCompletionToolParam], choice: Any) -> None:
    """Refuse tool settings no backend can honour, before any is called: a function name that is not
    OpenAI's (letters, digits, _ and -, at most 64) or is given twice, and a ``tool_choice`` that is none of
    ``none`` / ``auto`` / ``required`` nor names a function of ``tools``.

    Raises:
        ToolError: naming the field and the place in it, e.g. ``tools[1].function.name: ...``.
    """
    names: list[str] = []
    for k, tool in enumerate(tools):
        name = tool["function"]["name"]
        if not _TOOL_NAME.fullmatch(name):
            raise ToolError(
                "tools",
                f"tools[{k}].function.name: {name!r} is not a tool name; use letters, digits, _ and -, "
                "at most 64",
            )
        if name in names:
            raise ToolError("tools", f"tools[{k}].function.name: {name!r} is named twice; names must be unique")
        names.append(name)
    listed = f"tools ({', '.join(names)})"
    if isinstance(choice, str):
        if choice in names or choice in ("none", "auto"):
            return
        if choice == "required":
            if not names:
                raise ToolError("tool_choice", "tool_choice: 'required' needs tools; send tools or leave it out")
            return
        raise ToolError(
            "tool_choice",
            f"tool_choice: {choice!r} is none of 'none', 'auto', 'required' nor a tool in "
            + (listed if names else "tools (the request has none)"),
        )
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "function":
            wanted = [choice["function"]["name"]]
        elif kind == "allowed_tools":
            listed_functions = [t.get("function") for t in choice["allowed_tools"]["tools"]]
            wanted = [f.get("name") if isinstance(f, dict) else None for f in listed_functions]
        else:  # a custom tool's: no custom tool is accepted
            raise ToolError("tool_choice", f"tool_choice: type {kind!r} names no function tool; use 'function'")
        for name in wanted:
            if not names:
                raise ToolError(
                    "tool_choice", f"tool_choice: names the function {name!r}, but the request has no tools"
                )
            if name not in names:
                raise ToolError("tool_choice", f"tool_choice: names the function {name!r}, not in {listed}")


def _too_deep(value: Any, limit: int) -> bool:
    """Whether JSON data nests containers more than ``limit`` deep (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def _read_json(body: bytes) -> Any:
    """The body's JSON, refused (400) when it is not JSON, is not text or nests too deep.

    ``pydantic_core.from_json`` parses it without recursing in Python (its own nesting limit is far above
    :data:`MAX_JSON_DEPTH`) and refuses a lone UTF-16 surrogate escape (``"\\ud800"``): such a string is
    no text, and no backend could encode it.
    """
    too_deep = ApiError(
        400,
        f"the request body is nested more than {MAX_JSON_DEPTH} levels deep; flatten it",
        code="too_deep",
    )
    try:
        data = from_json(body)
    except ValueError as exc:
        text = str(exc)
        if "recursion limit" in text:
            raise too_deep from None
        if _LONE_SURROGATE.search(body):
            raise ApiError(
                400,
                "the request body holds a lone UTF-16 surrogate escape (\\ud800 to \\udfff without its pair), "
                f"which is not text ({text}); send valid Unicode",
                code="invalid_unicode",
            ) from None
        raise ApiError(400, f"the request body is not valid JSON: {text}") from None
    if isinstance(data, (dict, list)) and _too_deep(data, MAX_JSON_DEPTH):
        raise too_deep
    return data


def _where(loc: tuple[int | str, ...]) -> str:
    """``('messages', 0, 'user', 'content', 'str')`` as ``messages[0].content``: without the role tag
    and the names pydantic gives a union's members."""
    out = ""
    for k, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif k == 2 and loc[0] == "messages" and part in _ROLES:  # the role tag of messages[i]
            continue
        elif part in ("str", "int", "float", "bool", "none") or "[" in part or "-" in part:
            continue  # a union member's label, e.g. 'list[ContentPart]'
        else:
            out += f".{part}" if out else part
    return out


def parse_request(body: bytes, *, max_messages: int) -> ChatCompletionRequest:
    """The checked request.

    Raises:
        ApiError: 400: not JSON (or a lone surrogate escape, or nested more than :data:`MAX_JSON_DEPTH`
            deep), a field of the wrong type, too many messages, malformed tool settings
            (:func:`check_tools`), or an option the ensemble cannot honour (``n`` > 1, ``logprobs``, a ``response_format`` other than text). Its ``param``
            is the request's field; the message says where in it, e.g. ``messages[0].role: ...``.
    """
    data = _read_json(body)
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
        request = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():  # a tool check's error is placed already
            tool_error = err.get("ctx", {}).get("error")
            if isinstance(tool_error, ToolError):
                raise ApiError(400, str(tool_error), param=tool_error.param) from None
        # the deepest error says most: of a union's members, the one the value came closest to
        err = max(exc.errors(), key=lambda e: len(e["loc"]))
        loc = tuple(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ApiError(400, f"{_where(loc)}: {msg}", param=str(loc[0]) if loc else None) from None
    if request.model_extra:
        logger.debug("ignored request fields: %s", ", ".join(sorted(request.model_extra)))
    if request.n not in (None, 1):
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


def to_messages(messages: list[ChatMessage]) -> list[BaseMessage]:
    """The request's messages (system, developer, user, assistant with tool calls, tool, function) as
    LangChain messages."""
    raw = [{"content": None, **m.model_dump(exclude_unset=True)} for m in messages]
    try:
        return convert_to_messages(raw)
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"messages: {exc}", param="messages") from None


# ---------------------------------------------------------------------------- the response
def account(metadata: Mapping[str, Any], redactor: Redactor) -> dict[str, Any]:
    """The ensemble's account (``response_metadata["blender"]``), every text in it (candidates' answers and
    errors, the fuser's error, the ranker's issues) scrubbed of secrets."""
    out = dict(metadata)
    out["ranker_issues"] = [str(i) for i in out.get("ranker_issues") or []]
    return redactor.tree(out)


def usage(tokens: Mapping[str, Any] | None) -> CompletionUsage:
    """The library's token usage as OpenAI's ``usage``."""
    return CompletionUsage.model_validate(openai_usage(tokens))


def _tool_calls(message: AIMessage, redact: Redactor) -> list[ChatCompletionMessageToolCall]:
    calls = [
        ChatCompletionMessageToolCall(
            id=redact(c.get("id") or f"call_{k}"),
            type="function",
            function=Function(
                name=redact(c["name"]), arguments=redact(json.dumps(c.get("args") or {}, ensure_ascii=False))
            ),
        )
        for k, c in enumerate(message.tool_calls)
    ]
    calls.extend(  # arguments that did not parse: handed on as written
        ChatCompletionMessageToolCall(
            id=redact(c.get("id") or f"call_{len(calls) + k}"),
            type="function",
            function=Function(name=redact(c.get("name") or ""), arguments=redact(c.get("args") or "")),
        )
        for k, c in enumerate(message.invalid_tool_calls)
    )
    return calls


def _delta_tool_calls(chunk: AIMessageChunk, redact: Redactor) -> list[ChoiceDeltaToolCall]:
    """A chunk's tool calls (the ensemble streams each one whole, in one chunk: scrubbed as they are)."""
    out = []
    for k, tc in enumerate(chunk.tool_call_chunks):
        index = tc.get("index")
        out.append(
            ChoiceDeltaToolCall(
                index=k if index is None else index,
                id=redact.optional(tc.get("id")),
                type="function",
                function=ChoiceDeltaToolCallFunction(
                    name=redact(tc.get("name") or ""), arguments=redact(tc.get("args") or "")
                ),
            )
        )
    return out


def sse(payload: BaseModel | Mapping[str, Any]) -> bytes:
    """One server-sent event holding ``payload`` as JSON (a model: the fields it was given)."""
    if isinstance(payload, BaseModel):
        data = payload.model_dump_json(exclude_unset=True).encode()
    else:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return b"data: " + data + b"\n\n"


class Completion:
    """One response under construction: its id, creation time and model name, and the redactor every text
    of it goes through."""

    def __init__(self, model: str, redact: Redactor) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.redact = redact

    def _common(self) -> dict[str, Any]:
        """The fields a completion and each of its chunks share."""
        return {"id": self.id, "created": self.created, "model": self.model, "system_fingerprint": None}

    def response(self, message: AIMessage, *, with_account: bool) -> ChatCompletion:
        """The ``chat.completion`` of the ensemble's answer."""
        calls = _tool_calls(message, self.redact)
        text = self.redact(message.text)
        tools: dict[str, Any] = {"tool_calls": calls} if calls else {}
        reply = ChatCompletionMessage(role="assistant", content=text if text or not calls else None, **tools)
        extra: dict[str, Any] = {}
        if with_account:
            extra["blender"] = account(message.response_metadata["blender"], self.redact)
        return ChatCompletion(
            object="chat.completion",
            **self._common(),
            choices=[
                Choice(index=0, message=reply, finish_reason="tool_calls" if calls else "stop", logprobs=None)
            ],
            usage=usage(message.usage_metadata),
            **extra,
        )

    def chunk(self, choices: list[ChunkChoice], **fields: Any) -> ChatCompletionChunk:
        """A ``chat.completion.chunk`` of this response."""
        return ChatCompletionChunk(object="chat.completion.chunk", **self._common(), choices=choices, **fields)


class ChunkStream:
    """The ensemble's streamed chunks as ``chat.completion.chunk`` server-sent events.

    The streamed text is scrubbed of secrets across chunks: an end of the text so far that is the beginning
    of a secret is held back until more text (or the end) shows whether the secret follows, so that a key
    split over two chunks leaves in neither. Other text goes out as the chunks bring it.
    """

    def __init__(self, completion: Completion, *, include_usage: bool, with_account: bool) -> None:
        self.completion = completion
        self.include_usage = include_usage
        self.with_account = with_account
        self.tool_calls = 0
        self.usage: Mapping[str, Any] | None = None
        self.metadata: Mapping[str, Any] | None = None
        self.held = ""  # the text's end, not sent yet: it is the beginning of a secret

    def _text(self, text: str) -> str:
        """The part of the text so far that can be sent (scrubbed); the rest is held back."""
        redact = self.completion.redact
        text = redact(self.held + text)
        cut = len(text) - redact.partial_end(text)
        self.held = text[cut:]
        return text[:cut]

    def _flush(self) -> bytes:
        """The text held back, sent (the stream ends, or a tool call follows it)."""
        text, self.held = self.held, ""
        return self._event(ChoiceDelta(content=text)) if text else b""

    def _event(self, delta: ChoiceDelta, finish: FinishReason | None = None, **fields: Any) -> bytes:
        choice = ChunkChoice(index=0, delta=delta, finish_reason=finish, logprobs=None)
        return sse(self.completion.chunk([choice], **fields))

    def start(self) -> bytes:
        return self._event(ChoiceDelta(role="assistant", content=""))

    def piece(self, chunk: AIMessageChunk) -> bytes:
        """The events of one chunk (none for a chunk with nothing to show); remembers usage and account."""
        if chunk.usage_metadata:
            self.usage = chunk.usage_metadata
        if "blender" in chunk.response_metadata:
            self.metadata = chunk.response_metadata["blender"]
        delta: dict[str, Any] = {}
        text = self._text(chunk.text) if chunk.text else ""
        if text:
            delta["content"] = text
        if not chunk.tool_call_chunks:
            return self._event(ChoiceDelta(**delta)) if delta else b""
        out = self._event(ChoiceDelta(**delta)) if delta else b""
        tool_calls = _delta_tool_calls(chunk, self.completion.redact)
        self.tool_calls += len(tool_calls)
        return out + self._flush() + self._event(ChoiceDelta(tool_calls=tool_calls))

    def end(self) -> bytes:
        """The finishing chunk (with the account when asked), the usage chunk when asked, then ``[DONE]``."""
        extra: dict[str, Any] = {}
        if self.with_account and self.metadata is not None:
            extra["blender"] = account(self.metadata, self.completion.redact)
        out = self._flush() + self._event(ChoiceDelta(), "tool_calls" if self.tool_calls else "stop", **extra)
        if self.include_usage:
            out += sse(self.completion.chunk([], usage=usage(self.usage)))
        return out + DONE

    def error(self, error: ApiError) -> bytes:
        """An error after the stream began: the text held back, an ``error`` event (the openai client raises
        it), then ``[DONE]``."""
        return self._flush() + sse(error.body()) + DONE

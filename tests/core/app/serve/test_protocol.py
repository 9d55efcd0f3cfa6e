"""The server's wire format without a server: the typed request (what it accepts, what it refuses and how
the error says so), and the responses as the ``openai`` package's own types."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("openai")
pytest.importorskip("langchain_core")

from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from blender_core.app.serve.protocol import (
    DONE,
    ApiError,
    ChunkStream,
    Completion,
    parse_request,
    to_messages,
)
from blender_core.app.serve.redaction import Redactor

MODEL = "blender-llm"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def parse(**fields: Any) -> Any:
    return parse_request(json.dumps({"model": MODEL, "messages": QUESTION, **fields}).encode(), max_messages=8)


def refusal(**fields: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(**fields)
    assert info.value.status == 400
    return info.value


def test_fields_the_ensemble_does_not_use_are_accepted_and_ignored() -> None:
    request = parse(user="u-1", metadata={"k": "v"}, store=False, service_tier="auto", n=None)
    assert request.model_extra == {"user": "u-1", "metadata": {"k": "v"}, "store": False, "service_tier": "auto"}
    assert request.call_options() == {}


def test_sampling_options_and_tools_are_typed() -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    request = parse(
        temperature=0.2, max_completion_tokens=40, max_tokens=50, stop="END", tools=[tool], tool_choice="auto",
        parallel_tool_calls=False, stream=True, stream_options={"include_usage": True},
        blender={"account": True},
    )  # fmt: skip
    assert request.call_options() == {"temperature": 0.2, "max_tokens": 40, "stop": ["END"]}
    assert request.tools == [tool]
    assert request.tool_options() == {"tool_choice": "auto", "parallel_tool_calls": False}
    assert (request.include_usage, request.wants_account) == (True, True)
    assert parse(tools=[tool], tool_choice="get_weather").tool_options() == {"tool_choice": "get_weather"}  # a tool's name


def test_messages_are_typed_by_role_and_keep_what_clients_add() -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather?", "cache_control": {"type": "x"}}]},
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "file:///clip.mp4"}}]},
    ]  # fmt: skip
    request = parse(messages=messages)
    assert [type(m).__name__ for m in request.messages] == [
        "DeveloperMessage", "UserMessage", "AssistantMessage", "ToolMessage", "UserMessage",
    ]  # fmt: skip
    out = to_messages(request.messages)
    assert [m.type for m in out] == ["system", "human", "ai", "tool", "human"]
    assert isinstance(out[1], HumanMessage)
    assert out[1].content == [{"type": "text", "text": "Weather?", "cache_control": {"type": "x"}}]
    assert isinstance(out[2], AIMessage)
    assert [(c["name"], c["args"], c["id"]) for c in out[2].tool_calls] == [("get_weather", {"city": "Paris"}, "c1")]
    assert isinstance(out[3], ToolMessage)
    assert out[3].tool_call_id == "c1"
    assert out[4].content == [{"type": "video_url", "video_url": {"url": "file:///clip.mp4"}}]


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages",
         "messages[0]: Input tag 'wizard' found using 'role' does not match any of the expected tags"),
        ({"messages": [{"role": "tool", "content": "sunny"}]}, "messages", "messages[0].tool_call_id: Field required"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages",
         "messages[0].content[0]: a text part needs a string 'text'"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {}}]}]},
         "messages", "messages[0].tool_calls[0].function.arguments: Field required"),
        ({"messages": []}, "messages", "messages: List should have at least 1 item"),
        ({"temperature": "hot"}, "temperature", "temperature: Input should be a valid number"),
        ({"stream_options": {"include_usage": "maybe"}}, "stream_options", "stream_options.include_usage:"),
        ({"blender": {"acount": True}}, "blender", "blender.acount: Extra inputs are not permitted"),
        ({"n": 2}, "n", "n=2: the ensemble returns one choice"),
        ({"logprobs": True}, "logprobs", "logprobs are not available"),
        ({"response_format": {"type": "json_object"}}, "response_format", "response_format other than text is not supported"),
    ],
)  # fmt: skip
def test_a_bad_field_is_a_400_naming_it(fields: dict[str, Any], param: str, message: str) -> None:
    error = refusal(**fields)
    assert error.param == param
    assert error.message.startswith(message), error.message
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}


def test_too_many_messages_are_refused_before_they_are_checked() -> None:
    with pytest.raises(ApiError, match="9 messages, more than this server's limit of 8") as info:
        parse_request(json.dumps({"model": MODEL, "messages": [5] * 9}).encode(), max_messages=8)
    assert (info.value.code, info.value.param) == ("too_many_messages", "messages")


def test_the_completion_is_an_openai_chat_completion_with_the_account_as_an_extra_field() -> None:
    secret = "sk-upstream-123456"
    meta = {"candidates": [{"backend": "a", "error": f"bad key {secret}"}], "best": "b", "ranker_issues": []}
    message = AIMessage(
        "Paris.",
        usage_metadata={"input_tokens": 30, "output_tokens": 12, "total_tokens": 42},
        response_metadata={"blender": meta},
    )
    completion = Completion(MODEL, Redactor([secret]))
    reply = completion.response(message, with_account=True)
    assert isinstance(reply, ChatCompletion)
    wire = json.loads(reply.model_dump_json(exclude_unset=True))
    assert wire["object"] == "chat.completion"
    assert wire["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop", "logprobs": None}
    ]
    assert wire["usage"] == {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
    assert wire["blender"]["candidates"][0]["error"] == "bad key ***"
    assert ChatCompletion.model_validate(wire).model_extra == {"blender": wire["blender"]}
    assert "blender" not in json.loads(completion.response(message, with_account=False).model_dump_json())


def test_a_stream_is_chat_completion_chunks_then_done() -> None:
    events = ChunkStream(Completion(MODEL, Redactor([])), include_usage=True, with_account=False)
    call = {"name": "get_weather", "args": '{"city": "Paris"}', "id": "c1", "index": 0, "type": "tool_call_chunk"}
    raw = (
        events.start()
        + events.piece(AIMessageChunk("Par"))
        + events.piece(AIMessageChunk("", usage_metadata={"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}))
        + events.piece(AIMessageChunk("", tool_call_chunks=[call]))  # type: ignore[list-item]
        + events.end()
    )
    assert raw.endswith(DONE)
    lines = raw.removesuffix(DONE).decode().split("\n\n")[:-1]
    chunks = [ChatCompletionChunk.model_validate_json(line.removeprefix("data: ")) for line in lines]
    assert [c.choices[0].delta.content if c.choices else None for c in chunks] == ["", "Par", None, None, None]
    tool_call = chunks[2].choices[0].delta.tool_calls[0]  # type: ignore[index]
    assert (tool_call.index, tool_call.id, tool_call.function.name) == (0, "c1", "get_weather")  # type: ignore[union-attr]
    assert chunks[3].choices[0].finish_reason == "tool_calls"
    assert chunks[4].choices == []
    assert chunks[4].usage is not None
    assert chunks[4].usage.total_tokens == 4
    assert '"usage"' not in lines[1]  # only the last chunk carries usage


# ---------------------------------------------------------------------------- bad input (issue 20)
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def test_a_body_nested_too_deep_is_a_400_not_a_recursion_error() -> None:
    deep = b'{"model": "blender-llm", "messages": [{"role": "user", "content": "hi", "x": '
    for body in (deep + b"[" * 1000 + b"]" * 1000 + b"}]}", b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(ApiError, match=r"nested more than 64 levels deep") as info:
            parse_request(body, max_messages=8)
        assert info.value.status == 400
    # 64 levels pass: a tool's parameters may be a deep JSON schema
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(29):
        schema = {"type": "object", "properties": {"a": schema}}
    assert parse(tools=[{"type": "function", "function": {"name": "deep", "parameters": schema}}]).tools


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"tools": [{"type": "function", "function": {}}]}, "tools", "tools[0].function.name: Field required"),
        ({"tools": [{"type": "function"}]}, "tools", "tools[0].function: Field required"),
        ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools",
         "tools[0].function.name: '' is not a tool name"),
        ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "tools",
         "tools[0].function.name: 'get weather' is not a tool name"),
        ({"tools": [WEATHER, WEATHER]}, "tools", "tools[1].function.name: 'get_weather' is named twice"),
        ({"tools": [WEATHER], "tool_choice": "bogus"}, "tool_choice",
         "tool_choice: 'bogus' is none of 'none', 'auto', 'required' nor a tool in tools (get_weather)"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice",
         "tool_choice: names the function 'other', not in tools (get_weather)"),
        ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "allowed_tools": {
            "mode": "auto", "tools": [{"type": "function", "function": {"name": "other"}}]}}}, "tool_choice",
         "tool_choice: names the function 'other', not in tools (get_weather)"),
        ({"tool_choice": "required"}, "tool_choice", "tool_choice: 'required' needs tools; send tools"),
        ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice",
         "tool_choice: names the function 'get_weather', but the request has no tools"),
    ],
)  # fmt: skip
def test_malformed_tool_settings_are_a_400_naming_the_field(
    fields: dict[str, Any], param: str, message: str
) -> None:
    error = refusal(**fields)
    assert error.param == param
    assert error.message.startswith(message), error.message


def test_well_formed_tool_choices_pass() -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("none", "auto", "required", "get_weather", named):
        assert parse(tools=[WEATHER], tool_choice=choice).tool_options() == {"tool_choice": choice}
    assert parse(tool_choice="auto").tool_choice == "auto"  # harmless without tools: nothing to choose


def test_a_lone_surrogate_escape_is_a_400_and_a_pair_is_text() -> None:
    for escape in (rb"\ud800", rb"\udfff", rb"\ud800\u0041"):
        body = b'{"model": "blender-llm", "messages": [{"role": "user", "content": "a' + escape + b'b"}]}'
        with pytest.raises(ApiError, match="lone UTF-16 surrogate") as info:
            parse_request(body, max_messages=8)
        assert info.value.status == 400
    pair = rb'{"model": "blender-llm", "messages": [{"role": "user", "content": "\ud83d\ude00"}]}'
    assert parse_request(pair, max_messages=8).messages[0].content == "\U0001f600"


def test_a_secret_split_across_streamed_chunks_never_leaves_whole_or_in_part() -> None:
    secret = "sk-upstream-SECRET-4242"
    redactor = Redactor([secret])
    events = ChunkStream(Completion(MODEL, redactor), include_usage=False, with_account=False)
    text = f"I was called with Bearer {secret}, thanks."
    raw = events.start() + b"".join(events.piece(AIMessageChunk(text[k : k + 3])) for k in range(0, len(text), 3))
    raw += events.end()
    lines = raw.removesuffix(DONE).decode().split("\n\n")[:-1]
    pieces = [ChatCompletionChunk.model_validate_json(line.removeprefix("data: ")) for line in lines]
    sent = [c.choices[0].delta.content or "" for c in pieces if c.choices]
    assert "".join(sent) == "I was called with Bearer ***, thanks."
    assert all(not secret.startswith(p[-k:]) for p in sent for k in range(4, len(p) + 1))  # no tail of a piece...
    assert "sk-u" not in raw.decode()  # ...nor any of the key's own characters in a row
    assert len(sent) > 3  # and it still streams


def test_every_text_of_an_answer_is_scrubbed_of_secrets() -> None:
    secret = "sk-upstream-SECRET-4242"
    meta = {
        "candidates": [{"backend": "a", "text": f"my key is {secret}", "error": None}],
        "fuser": "writer",
        "ranker_issues": [],
    }
    call = {"name": "lookup", "args": {"q": f"key {secret}"}, "id": "c1", "type": "tool_call"}
    message = AIMessage(f"fused: {secret}", tool_calls=[call], response_metadata={"blender": meta})
    wire = Completion(MODEL, Redactor([secret])).response(message, with_account=True).model_dump_json()
    assert secret not in wire
    assert json.loads(wire)["choices"][0]["message"]["content"] == "fused: ***"

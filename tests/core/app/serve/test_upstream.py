"""The server's OpenAI-compatible backend (:class:`UpstreamChat`) against fake upstreams on loopback: what
it sends (options, seed, tools, the key), what it reads (text, tool calls, usage, streamed pieces), the
errors it raises (the ``openai`` package's, with the SDK's texts), its retries, and a cancelled call
closing its HTTP request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

pytest.importorskip("openai")

import httpx
import openai
from langchain_core.messages import HumanMessage, SystemMessage

from blender_core.app.serve.redaction import Redactor, redacting_http_client
from blender_core.app.serve.upstream import UpstreamChat, completion_message
from tests.core.app.serve.support import UPSTREAM_KEY, WEATHER_TOOL
from tests.helpers.openai_upstreams import FakeUpstream

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

QUESTION = [SystemMessage("Be brief."), HumanMessage("What is the capital of France?")]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    client = redacting_http_client(
        Redactor([UPSTREAM_KEY]),
        max_connections=4,
        headers={"authorization": f"Bearer {UPSTREAM_KEY}"},
        timeout=10.0,
    )
    yield client
    await client.aclose()


def chat(fake: FakeUpstream, http: httpx.AsyncClient, **kwargs: object) -> UpstreamChat:
    http.base_url = httpx.URL(fake.base_url + "/")
    return UpstreamChat(model=f"{fake.name}-model", client=http, name=fake.name, **kwargs)  # type: ignore[arg-type]


async def test_a_call_sends_the_options_and_reads_the_answer_and_usage(http: httpx.AsyncClient) -> None:
    with FakeUpstream("fast", answer="Paris is the capital.", usage=(10, 5)) as fake:
        message = await chat(fake, http).ainvoke(
            QUESTION, temperature=0.2, max_tokens=50, seed=7, stop=["\n"]
        )
    assert message.content == "Paris is the capital."
    assert message.usage_metadata == {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    assert message.response_metadata["finish_reason"] == "stop"
    (sent,) = fake.requests
    assert sent["model"] == "fast-model"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert (sent["temperature"], sent["max_completion_tokens"], sent["seed"], sent["stop"]) == (
        0.2,
        50,
        7,
        ["\n"],
    )
    assert "max_tokens" not in sent
    assert "stream" not in sent
    assert fake.auth == [f"Bearer {UPSTREAM_KEY}"]


async def test_bound_tools_are_sent_and_the_tool_calls_parsed(http: httpx.AsyncClient) -> None:
    with FakeUpstream("fast", tool_call=("get_weather", {"city": "Paris"})) as fake:
        bound = chat(fake, http).bind_tools(
            [WEATHER_TOOL], tool_choice="get_weather", parallel_tool_calls=False
        )
        message = await bound.ainvoke(QUESTION)
    assert message.tool_calls == [
        {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_fast", "type": "tool_call"}
    ]
    (sent,) = fake.requests
    assert sent["tools"] == [WEATHER_TOOL]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False


def test_tool_call_arguments_that_are_not_json_are_kept_as_invalid_calls() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": '}}
    body = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
    message = completion_message(body)
    assert message.tool_calls == []
    assert [(c["name"], c["args"], c["id"]) for c in message.invalid_tool_calls] == [
        ("get_weather", '{"city": ', "c1")
    ]


async def test_a_stream_yields_the_pieces_then_the_usage(http: httpx.AsyncClient) -> None:
    with FakeUpstream("writer", answer="Paris is the capital of France.", usage=(3, 6)) as fake:
        chunks = [c async for c in chat(fake, http).astream(QUESTION)]
    assert "".join(c.text for c in chunks) == "Paris is the capital of France."
    assert len([c for c in chunks if c.text]) == 6  # word by word
    assert [c.usage_metadata for c in chunks if c.usage_metadata] == [
        {"input_tokens": 3, "output_tokens": 6, "total_tokens": 9}
    ]
    (sent,) = fake.requests
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_errors_are_the_openai_packages_with_the_sdks_text_and_scrubbed_keys(
    http: httpx.AsyncClient,
) -> None:
    with FakeUpstream("failing", "error") as failing, FakeUpstream("malformed", "malformed") as malformed:
        with pytest.raises(openai.InternalServerError, match=r"^Error code: 500 - \{'error'") as error:
            await chat(failing, http).ainvoke(QUESTION)
        with pytest.raises(json.JSONDecodeError):
            await chat(malformed, http).ainvoke(QUESTION)
    assert "request authorization: Bearer ***" in str(error.value)
    assert UPSTREAM_KEY not in str(error.value)


async def test_max_retries_tries_a_failing_call_again(http: httpx.AsyncClient) -> None:
    with FakeUpstream("failing", "error") as fake:
        with pytest.raises(openai.InternalServerError):
            await chat(fake, http, max_retries=1).ainvoke(QUESTION)
        assert len(fake.requests) == 2
        fake.reset()
        with pytest.raises(openai.InternalServerError):
            await chat(fake, http).ainvoke(QUESTION)
        assert len(fake.requests) == 1


async def test_a_cancelled_call_closes_its_http_request(http: httpx.AsyncClient) -> None:
    with FakeUpstream("hanging", "hang") as fake:
        call = asyncio.ensure_future(chat(fake, http).ainvoke(QUESTION))
        assert await asyncio.to_thread(fake.received.wait, 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await asyncio.to_thread(fake.closed.wait, 5)


async def test_blocking_calls_say_to_use_the_async_ones(http: httpx.AsyncClient) -> None:
    with (
        FakeUpstream("fast") as fake,
        pytest.raises(NotImplementedError, match=r"call ainvoke\(\) or astream\(\)"),
    ):
        chat(fake, http).invoke(QUESTION)

"""``blender-llm serve`` from its clients' side: the real server on a loopback port, called with the official
``openai`` client (sync, async, streaming), with LangChain's ``ChatOpenAI(base_url=...)``, LlamaIndex's
``OpenAILike`` and plain HTTP; its backends are small OpenAI-compatible servers on loopback
(``tests.helpers.openai_upstreams``). The ranker is the tiny offline checkpoint of ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import openai
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("langchain_openai")

from langchain_openai import ChatOpenAI

from tests.core.app.serve.support import (
    FUSED,
    MODEL,
    QUESTION,
    SERVER_KEY,
    UPSTREAM_KEY,
    WEATHER_TOOL,
    client,
)
from tests.helpers.openai_upstreams import FakeUpstream, LiveServer

pytestmark = [pytest.mark.allow_hosts(["127.0.0.1"]), pytest.mark.usefixtures("fresh_fakes")]


# ---------------------------------------------------------------------------- the official client
def test_sync_client_gets_the_best_answer_with_usage_and_account(
    main_server: LiveServer, fakes: dict[str, FakeUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with client(main_server) as c:
        raw = c.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=QUESTION,
            temperature=0.2,
            max_tokens=50,
            extra_body={"blender": {"account": True}},
        )
    reply = raw.parse()
    account = reply.model_extra["blender"] if reply.model_extra else {}
    by_backend = {c["backend"]: c for c in account["candidates"]}
    assert list(by_backend) == ["fast", "slow", "failing", "malformed", "hanging"]
    # the answer is the top-ranked backend's, unfused
    best = next(c for c in account["candidates"] if c["rank"] == 1)
    assert account["best"] == best["backend"]
    assert account["fused"] is False
    assert reply.choices[0].message.content == best["text"]
    assert reply.choices[0].finish_reason == "stop"
    assert {by_backend["fast"]["rank"], by_backend["slow"]["rank"]} == {1, 2}
    assert by_backend["slow"]["latency_s"] >= 0.2
    assert "Error code: 500" in by_backend["failing"]["error"]
    assert by_backend["malformed"]["error"].startswith("JSONDecodeError")
    assert by_backend["hanging"]["error"] == "TimeoutError: no answer within 1.5 s"
    assert all(by_backend[n]["rank"] is None for n in ("failing", "malformed", "hanging"))
    # usage: the backends that answered (10 + 20 in, 5 + 7 out)
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        30,
        12,
        42,
    )
    # the request's sampling options reach every backend; the server's key does not
    sent = fakes["fast"].requests[-1]
    assert sent["temperature"] == 0.2
    assert sent.get("max_tokens", sent.get("max_completion_tokens")) == 50
    assert sent["model"] == "fast-model"
    assert fakes["fast"].auth[-1] == f"Bearer {UPSTREAM_KEY}"
    # the failing upstream echoed its key: it is masked in the response and in the log
    assert fakes["failing"].auth[-1] == f"Bearer {UPSTREAM_KEY}"
    assert "request authorization: Bearer ***" in by_backend["failing"]["error"]
    assert UPSTREAM_KEY not in raw.http_response.text
    assert "backend 'failing' dropped" in caplog.text
    assert UPSTREAM_KEY not in caplog.text
    assert SERVER_KEY not in caplog.text


def test_without_the_account_the_response_is_plain_openai(main_server: LiveServer) -> None:
    with client(main_server) as c:
        reply = c.chat.completions.create(model=MODEL, messages=QUESTION)
    assert not (reply.model_extra or {}).get("blender")
    assert reply.model == MODEL
    assert reply.object == "chat.completion"


async def test_async_client_gets_a_fused_answer_with_summed_usage(
    fused_server: LiveServer, fakes: dict[str, FakeUpstream]
) -> None:
    async with openai.AsyncOpenAI(base_url=f"{fused_server.base_url}/v1", api_key="none", max_retries=0) as c:
        reply = await c.chat.completions.create(
            model=MODEL, messages=QUESTION, extra_body={"blender": {"account": True}}
        )
    assert reply.choices[0].message.content == FUSED
    account = (reply.model_extra or {})["blender"]
    assert account["fused"] is True
    assert len(account["chosen"]) == 2
    assert account["fuser"] == "chat:writer-model"
    # three backends (10+20+3 in, 5+7+1 out) and the fuser's streamed call (3 in, 1 out)
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        36,
        14,
        50,
    )
    assert account["fuser_usage"] == {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}
    # the fuser got the fusion prompt with the two chosen answers
    fusion = fakes["writer"].requests[-1]
    assert fusion["stream"] is True
    chosen_texts = [c["text"] for c in account["candidates"] if c["backend"] in account["chosen"]]
    assert all(text in fusion["messages"][1]["content"] for text in chosen_texts)


async def test_async_requests_run_concurrently(fused_server: LiveServer) -> None:
    async with openai.AsyncOpenAI(base_url=f"{fused_server.base_url}/v1", api_key="none", max_retries=0) as c:
        start = time.monotonic()
        replies = await asyncio.gather(
            *(c.chat.completions.create(model=MODEL, messages=QUESTION) for _ in range(4))
        )
        elapsed = time.monotonic() - start
    assert [r.choices[0].message.content for r in replies] == [FUSED] * 4
    # one fusion streams for about 2 s (13 words, 0.15 s apart); four one after another would take 8 s
    assert elapsed < 6.0


def test_streaming_sends_the_fusion_as_it_is_written(fused_server: LiveServer) -> None:
    with client(fused_server, None) as c:
        stream = c.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"blender": {"account": True}},
        )
        chunks = list(stream)
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert "".join(pieces) == FUSED
    assert len(pieces) == len(FUSED.split())  # word by word, as the fuser wrote it
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert [ch.choices[0].finish_reason for ch in finish] == ["stop"]
    assert (finish[0].model_extra or {})["blender"]["fused"] is True
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.total_tokens == 50


def test_streaming_without_include_usage_sends_no_usage_chunk(main_server: LiveServer) -> None:
    with client(main_server) as c:
        chunks = list(c.chat.completions.create(model=MODEL, messages=QUESTION, stream=True))
    assert all(ch.usage is None for ch in chunks)
    assert all(ch.choices for ch in chunks)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
    assert text in ("Paris is the capital.", "The capital of France is Paris.")


def test_sse_wire_format_ends_with_done(fused_server: LiveServer) -> None:
    body = {"model": MODEL, "messages": QUESTION, "stream": True}
    with httpx.stream("POST", f"{fused_server.base_url}/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"


def test_tool_calls_are_returned_never_fused(
    fused_server: LiveServer, fakes: dict[str, FakeUpstream]
) -> None:
    with client(fused_server, None) as c:
        reply = c.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            tool_choice="auto",
            extra_body={"blender": {"account": True}},
        )
        streamed = list(
            c.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Weather in Paris?"}],
                tools=[WEATHER_TOOL],  # type: ignore[list-item]
                stream=True,
            )
        )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    account = (reply.model_extra or {})["blender"]
    assert account["fused"] is False
    assert call.id == f"call_{account['best']}"
    # every backend got the tool; none was asked to fuse
    for name in ("fast", "slow", "writer"):
        assert all(r["tools"][0]["function"]["name"] == "get_weather" for r in fakes[name].requests)
    assert not any(r.get("stream") for r in fakes["writer"].requests)
    deltas = [tc for ch in streamed if ch.choices for tc in ch.choices[0].delta.tool_calls or []]
    assert [d.function.name for d in deltas if d.function] == ["get_weather"]
    assert json.loads("".join(d.function.arguments or "" for d in deltas if d.function)) == {"city": "Paris"}
    assert [ch.choices[0].finish_reason for ch in streamed if ch.choices and ch.choices[0].finish_reason] == [
        "tool_calls"
    ]


# ---------------------------------------------------------------------------- LangChain as the client
def test_langchain_chat_openai_invokes_and_streams(main_server: LiveServer) -> None:
    llm = ChatOpenAI(base_url=f"{main_server.base_url}/v1", api_key=SERVER_KEY, model=MODEL, max_retries=0)  # type: ignore[arg-type]
    message = llm.invoke("What is the capital of France?")
    assert message.content in ("Paris is the capital.", "The capital of France is Paris.")
    assert message.usage_metadata is not None
    assert message.usage_metadata["total_tokens"] == 42
    streamed = "".join(str(chunk.content) for chunk in llm.stream("What is the capital of France?"))
    assert streamed == message.content


def test_langchain_chat_openai_binds_tools(fused_server: LiveServer) -> None:
    llm = ChatOpenAI(base_url=f"{fused_server.base_url}/v1", api_key="none", model=MODEL, max_retries=0)  # type: ignore[arg-type]
    message = llm.bind_tools([WEATHER_TOOL]).invoke("Weather in Paris?")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": "Paris"})]  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- LlamaIndex as the client
def test_llamaindex_openai_like_completes_streams_and_calls_tools(main_server: LiveServer) -> None:
    openai_like = pytest.importorskip("llama_index.llms.openai_like")
    from llama_index.core.llms import ChatMessage
    from llama_index.core.tools import FunctionTool

    llm = openai_like.OpenAILike(
        model=MODEL,
        api_base=f"{main_server.base_url}/v1",
        api_key=SERVER_KEY,
        is_chat_model=True,
        is_function_calling_model=True,
        context_window=8192,
        max_retries=0,
    )
    answers = ("Paris is the capital.", "The capital of France is Paris.")
    assert llm.complete("What is the capital of France?").text in answers
    streamed = "".join(r.delta or "" for r in llm.stream_chat([ChatMessage(role="user", content="Capital?")]))
    assert streamed in answers

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    tool = FunctionTool.from_defaults(fn=get_weather)
    response = llm.chat_with_tools([tool], user_msg="Weather in Paris?")
    calls = llm.get_tool_calls_from_response(response, error_on_no_tool_call=True)
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [("get_weather", {"city": "Paris"})]

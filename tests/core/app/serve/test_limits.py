"""``blender-llm serve`` under bad requests and faults: keys, body and message limits, requests beyond
``max_in_flight``, failing backends, clients that leave, deadlines, shutdown, and a local Hugging Face
backend; the real server on a loopback port over fake upstreams (``tests.helpers.openai_upstreams``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("langchain_openai")


from blender_core.app.serve.app import create_app
from blender_core.app.serve.config import parse_config
from tests.core.app.serve.support import (
    ENV,
    FUSED,
    MODEL,
    QUESTION,
    SERVER_KEY,
    UPSTREAM_KEY,
    WEATHER_TOOL,
    assert_openai_error,
    backend,
    client,
    health,
    post,
    serve,
    wait_until_idle,
)
from tests.helpers.openai_upstreams import FakeUpstream, LiveServer, port_is_closed

pytestmark = [pytest.mark.allow_hosts(["127.0.0.1"]), pytest.mark.usefixtures("fresh_fakes")]


# ---------------------------------------------------------------------------- endpoints and security
def test_models_and_health(main_server: LiveServer) -> None:
    with client(main_server) as c:
        assert [m.id for m in c.models.list()] == [MODEL]
    state = health(main_server)
    assert 0 <= state.pop("loop_lag_ms") < 1000
    assert state == {
        "status": "ok", "in_flight": 0, "max_in_flight": 2, "running": 0, "waiting": 0, "running_limit": 2,
    }  # fmt: skip
    r = httpx.get(f"{main_server.base_url}/v1/nothing", headers={"authorization": f"Bearer {SERVER_KEY}"})
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found"


def test_auth_is_refused_without_the_right_key(main_server: LiveServer) -> None:
    for key in (None, "wrong-key", SERVER_KEY[:-1]):
        with client(main_server, key) as c, pytest.raises(openai.AuthenticationError) as info:
            c.chat.completions.create(model=MODEL, messages=QUESTION)
        assert info.value.status_code == 401
        assert info.value.code == "invalid_api_key"
        assert info.value.response.headers["www-authenticate"] == "Bearer"
    r = httpx.get(f"{main_server.base_url}/v1/models", timeout=10)
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "invalid_request_error"
    # the health check is open (load balancers), and says nothing of the backends
    assert httpx.get(f"{main_server.base_url}/health", timeout=10).status_code == 200


def test_a_server_without_keys_lets_anyone_on_loopback_in(fused_server: LiveServer) -> None:
    r = httpx.get(f"{fused_server.base_url}/v1/models", timeout=10)
    assert r.status_code == 200


def test_a_body_over_the_limit_is_refused_with_413(
    main_server: LiveServer, fakes: dict[str, FakeUpstream]
) -> None:
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 20_000}]}
    error = assert_openai_error(post(main_server, json=big), 413, "request_too_large")
    assert "at most 16384 bytes, got 20" in error["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield json.dumps(big).encode()

    assert_openai_error(post(main_server, content=chunked()), 413, "request_too_large")
    assert fakes["fast"].requests == []  # no backend was called


@pytest.mark.parametrize(("key", "status"), [(SERVER_KEY, 413), ("wrong-key", 401)])
def test_a_refused_endless_chunked_body_is_not_read_on_the_connection_is_closed(
    main_server: LiveServer, key: str, status: int
) -> None:
    """The server answers, stops reading and closes: the client's writes fail after a few MB (the kernel's
    buffers), not after the whole body (the server used to read and discard it: 2 GB in seconds)."""
    budget, piece = 128 * 2**20, b"x" * 2**16
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    sent, refused = 0, False
    deadline = time.monotonic() + 20
    with socket.create_connection(("127.0.0.1", main_server.port), timeout=5) as sock:
        sock.sendall(head.encode())
        try:
            while sent < budget and time.monotonic() < deadline:
                sock.sendall(chunk)  # blocks (then times out) if the server stops reading but keeps it open
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            refused = True
        answer = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while data := sock.recv(65536):  # b"": the server closed the connection
                answer += data
    assert refused, f"the server read {sent / 2**20:.0f} MB of a refused body, answering {answer[:12]!r}"
    assert sent < 32 * 2**20
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert b"connection: close" in answer.lower()
    assert wait_until_idle(main_server)


def test_too_many_messages_and_bad_requests_are_400(main_server: LiveServer) -> None:
    many = {"model": MODEL, "messages": QUESTION * 9}
    error = assert_openai_error(post(main_server, json=many), 400, "too_many_messages", "messages")
    assert error["message"].startswith("9 messages, more than this server's limit of 8")
    assert_openai_error(post(main_server, content=b"{not json"), 400, None)
    assert_openai_error(post(main_server, json={"model": MODEL, "messages": []}), 400, None, "messages")
    error = assert_openai_error(
        post(main_server, json={"model": MODEL, "messages": QUESTION, "temperature": "hot"}),
        400,
        None,
        "temperature",
    )
    assert "temperature" in error["message"]
    assert_openai_error(
        post(main_server, json={"model": MODEL, "messages": QUESTION, "n": 2}), 400, None, "n"
    )
    bad_role = {"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}
    assert_openai_error(post(main_server, json=bad_role), 400, None, "messages")
    assert_openai_error(
        post(main_server, json={"model": "gpt-4", "messages": QUESTION}), 404, "model_not_found", "model"
    )


def test_a_body_nested_too_deep_is_a_400_and_the_server_keeps_serving(
    main_server: LiveServer, fakes: dict[str, FakeUpstream]
) -> None:
    # 4 KB, 1000 deep: the JSON parser's recursion was a 500 in text/plain
    deep = b'{"model": "blender-llm", "messages": [{"role": "user", "content": "hi", "x": '
    deep += b"[" * 1000 + b"]" * 1000 + b"}]}"
    r = post(main_server, content=deep, headers={"content-type": "application/json"})
    error = assert_openai_error(r, 400, "too_deep")
    assert "nested more than 64 levels deep" in error["message"]
    assert fakes["fast"].requests == []
    assert post(main_server, json={"model": MODEL, "messages": QUESTION}).status_code == 200


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "function", "function": {}}]}, "tools"),  # no name: was a KeyError, 500
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
        ({"tools": [WEATHER_TOOL], "tool_choice": "bogus"}, "tool_choice"),  # was a forced call of "bogus"
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)  # fmt: skip
def test_malformed_tool_settings_are_a_400_and_never_reach_a_backend(
    main_server: LiveServer, fakes: dict[str, FakeUpstream], fields: dict[str, object], param: str
) -> None:
    r = post(main_server, json={"model": MODEL, "messages": QUESTION, **fields})
    assert_openai_error(r, 400, None, param)
    assert [f.requests for f in fakes.values()] == [[]] * len(fakes)


def test_an_error_that_quotes_the_request_never_quotes_a_key(main_server: LiveServer) -> None:
    r = post(main_server, json={"model": MODEL, "messages": QUESTION, "tools": [WEATHER_TOOL], "tool_choice": SERVER_KEY})
    error = assert_openai_error(r, 400, None, "tool_choice")
    assert error["message"].startswith("tool_choice: '***' is none of")
    assert SERVER_KEY not in r.text


def test_a_lone_surrogate_is_a_400_and_never_reaches_a_backend(
    main_server: LiveServer, fakes: dict[str, FakeUpstream]
) -> None:
    body = rb'{"model": "blender-llm", "messages": [{"role": "user", "content": "a\ud800b"}]}'
    r = post(main_server, content=body, headers={"content-type": "application/json"})
    error = assert_openai_error(r, 400, "invalid_unicode")
    assert "lone UTF-16 surrogate" in error["message"]
    assert fakes["fast"].requests == []


def test_beyond_max_in_flight_requests_get_429_with_retry_after(main_server: LiveServer) -> None:
    with ThreadPoolExecutor(2) as pool:
        # each takes the 1.5 s the hanging backend is given
        busy = [pool.submit(post, main_server, json={"model": MODEL, "messages": QUESTION}) for _ in range(2)]
        deadline = time.monotonic() + 10
        while health(main_server)["in_flight"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = post(main_server, json={"model": MODEL, "messages": QUESTION})
        done = [f.result(timeout=30) for f in busy]
    error = assert_openai_error(refused, 429, "too_many_requests")
    assert error["type"] == "rate_limit_exceeded"
    assert refused.headers["retry-after"] == "3"
    assert [r.status_code for r in done] == [200, 200]
    assert wait_until_idle(main_server)
    assert post(main_server, json={"model": MODEL, "messages": QUESTION}).status_code == 200


def test_a_request_waits_for_a_running_slot_within_its_deadline_or_is_refused_at_once(
    tiny_reference_ckpt: Path,
) -> None:
    with FakeUpstream("steady", delay=1.0, answer="Paris.") as steady:
        server = serve(
            tiny_reference_ckpt,
            [steady],
            limits={"max_running": 1, "max_in_flight": 10, "request_timeout": 2.8, "retry_after": 1},
        )
        body = {"model": MODEL, "messages": QUESTION}
        try:
            assert post(server, json=body).status_code == 200  # a completion takes about 1 s: now known
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(post, server, json=body)
                assert steady.received.wait(10)
                start = time.monotonic()
                second = pool.submit(post, server, json=body)  # waits about 1 s, then runs 1 s: in time
                deadline = time.monotonic() + 10
                while health(server)["waiting"] < 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                third = post(server, json=body)  # two ahead of it: 3 s, past its deadline: refused now
                refused_after = time.monotonic() - start
                assert first.result(timeout=30).status_code == 200
                waited = second.result(timeout=30)
                served_after = time.monotonic() - start
        finally:
            server.stop()
    assert waited.status_code == 200, waited.text
    assert 1.0 <= served_after < 2.8
    error = assert_openai_error(third, 429, "too_many_requests")
    assert "no slot would free before this request's deadline" in error["message"]
    assert int(third.headers["retry-after"]) >= 2
    assert refused_after < 1.0


def test_all_backends_failing_is_a_502_without_keys_in_it(
    tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream]
) -> None:
    server = serve(tiny_reference_ckpt, [fakes["failing"], fakes["malformed"]])
    try:
        with client(server, None) as c, pytest.raises(openai.APIStatusError) as info:
            c.chat.completions.create(model=MODEL, messages=QUESTION)
    finally:
        server.stop()
    assert info.value.status_code == 502
    assert info.value.code == "backends_failed"
    text = info.value.response.text
    assert "only 0 of 2 backends answered" in text
    assert "Bearer ***" in text
    assert UPSTREAM_KEY not in text
    assert fakes["failing"].auth == [f"Bearer {UPSTREAM_KEY}"]


def test_an_upstream_quoting_its_key_in_an_answer_never_gets_it_to_the_client(tiny_reference_ckpt: Path) -> None:
    with (
        FakeUpstream("echo", echo_auth=True, answer="Paris.") as echo,
        FakeUpstream("writer", echo_auth=True, piece_chars=3, answer="Paris!", fusion_answer="Paris, fused.") as writer,
    ):
        server = serve(tiny_reference_ckpt, [echo, writer], ensemble={"fuser": "writer", "timeout": 10.0})
        try:
            body = {"model": MODEL, "messages": QUESTION, "blender": {"account": True}}
            whole = post(server, json=body)
            with httpx.stream(
                "POST", f"{server.base_url}/v1/chat/completions", json={**body, "stream": True}, timeout=30
            ) as r:
                streamed = b"".join(r.iter_bytes())
        finally:
            server.stop()
    assert writer.auth[-1] == f"Bearer {UPSTREAM_KEY}"  # the key it quoted
    assert whole.status_code == 200, whole.text
    assert UPSTREAM_KEY not in whole.text  # neither in the answer nor in the account's candidates
    reply = whole.json()
    assert reply["choices"][0]["message"]["content"] == "Paris, fused. (I got 'Authorization: Bearer ***')"
    assert [c["text"] for c in reply["blender"]["candidates"]] == [
        "Paris. (I got 'Authorization: Bearer ***')",
        "Paris! (I got 'Authorization: Bearer ***')",
    ]
    # streamed 3 characters at a time: the key was split across chunks, and is in none of them
    events = [json.loads(line[6:]) for line in streamed.decode().split("\n\n") if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "Paris, fused. (I got 'Authorization: Bearer ***')"
    assert UPSTREAM_KEY[:10] not in streamed.decode()
    assert UPSTREAM_KEY not in json.dumps(events[-1]["blender"])


# ---------------------------------------------------------------------------- faults: disconnects, deadlines
@pytest.mark.parametrize("stream", [True, False])
async def test_a_client_that_disconnects_cancels_its_backend_calls(
    hang_server: LiveServer, fakes: dict[str, FakeUpstream], stream: bool
) -> None:
    hanging = fakes["hanging"]
    body = {"model": MODEL, "messages": QUESTION, "stream": stream}
    async with httpx.AsyncClient(base_url=hang_server.base_url, timeout=30) as http:
        request = asyncio.ensure_future(http.post("/v1/chat/completions", json=body))
        assert await asyncio.to_thread(hanging.received.wait, 10)
        request.cancel()  # the client goes away: its connection closes
        left = time.monotonic()
        closed = await asyncio.to_thread(hanging.closed.wait, 10)
        took = time.monotonic() - left
    assert closed
    # well before the backend's timeout (30 s) and the request's deadline (3 s): the disconnect did it
    assert took < 1.5
    assert await asyncio.to_thread(wait_until_idle, hang_server)


def test_a_client_that_leaves_mid_stream_stops_the_fusion(
    fused_server: LiveServer, fakes: dict[str, FakeUpstream]
) -> None:
    writer = fakes["writer"]
    body = {"model": MODEL, "messages": QUESTION, "stream": True}
    with httpx.stream("POST", f"{fused_server.base_url}/v1/chat/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                break  # the first piece of the fusion: leave now
    left = time.monotonic()
    # the fuser's stream (2 s long) is closed as soon as the client is gone
    assert writer.closed.wait(10)
    assert time.monotonic() - left < 1.5
    assert wait_until_idle(fused_server)


def test_the_request_deadline_is_a_504_and_stops_the_backends(
    hang_server: LiveServer, fakes: dict[str, FakeUpstream]
) -> None:
    start = time.monotonic()
    with client(hang_server, None) as c, pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model=MODEL, messages=QUESTION)
    took = time.monotonic() - start
    assert info.value.status_code == 504
    assert info.value.type == "timeout"
    assert 3.0 <= took < 6.0
    assert fakes["hanging"].closed.wait(5)


def test_shutdown_finishes_the_requests_in_flight(tiny_reference_ckpt: Path) -> None:
    with FakeUpstream("steady", delay=1.0, answer="Finished after the shutdown began.") as steady:
        server = serve(tiny_reference_ckpt, [steady])
        with ThreadPoolExecutor(1) as pool, client(server, None) as c:
            reply = pool.submit(c.chat.completions.create, model=MODEL, messages=QUESTION)
            assert steady.received.wait(10)
            server.server.should_exit = True  # as SIGTERM does
            deadline = time.monotonic() + 5
            while not port_is_closed(server.port) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert port_is_closed(server.port)  # no new connection is accepted...
            assert not reply.done()  # ...while the request in flight goes on
            answer = reply.result(timeout=10)
        server.thread.join(10)
    assert answer.choices[0].message.content == "Finished after the shutdown began."
    assert not server.thread.is_alive()
    assert not steady.closed.is_set()  # its backend call was not cut


def test_a_local_hugging_face_backend_answers_and_fuses(
    tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream], tmp_path_factory: pytest.TempPathFactory
) -> None:
    pytest.importorskip("langchain_huggingface")
    from blender_core.testing.fusers import make_tiny_causal_lm

    folder = make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-chat-lm"))
    local = {
        "name": "local",
        "kind": "huggingface",
        "model": str(folder),
        "max_new_tokens": 6,
        "device": "cpu",
    }
    config = parse_config(
        {
            "ensemble": {"ranker": str(tiny_reference_ckpt), "fuser": "local", "timeout": 60.0},
            "backends": [local, backend(fakes["fast"])],
        }
    )
    with LiveServer(create_app(config, environ=ENV)) as server, client(server, None) as c:
        reply = c.chat.completions.create(
            model=MODEL, messages=QUESTION, temperature=0.5, extra_body={"blender": {"account": True}}
        )
        streamed = list(c.chat.completions.create(model=MODEL, messages=QUESTION, stream=True))
        with pytest.raises(openai.BadRequestError, match=r"backend 'local'.*no bind_tools") as info:
            c.chat.completions.create(model=MODEL, messages=QUESTION, tools=[WEATHER_TOOL])  # type: ignore[list-item]
    assert info.value.param == "tools"
    account = (reply.model_extra or {})["blender"]
    assert [(c["backend"], c["error"]) for c in account["candidates"]] == [("local", None), ("fast", None)]
    assert account["fused"] is True
    assert account["fuser"].startswith("local (")
    assert reply.choices[0].message.content
    assert fakes["fast"].requests[0]["temperature"] == 0.5  # the local model keeps its own settings
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices)


def test_the_deadline_ends_a_started_stream_with_an_error_event(
    tiny_reference_ckpt: Path, fakes: dict[str, FakeUpstream]
) -> None:
    server = serve(
        tiny_reference_ckpt,
        [fakes["fast"], fakes["writer"]],
        ensemble={"fuser": "writer", "timeout": 10.0},
        limits={"request_timeout": 1.0},
    )
    pieces: list[str] = []

    def read_stream(c: openai.OpenAI) -> None:
        for chunk in c.chat.completions.create(model=MODEL, messages=QUESTION, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)

    try:
        with client(server, None) as c, pytest.raises(openai.APIError, match="passed its deadline"):
            read_stream(c)
    finally:
        server.stop()
    # the fusion had begun (2 s long), and was stopped at the deadline
    assert 0 < len(pieces) < len(FUSED.split())
    assert fakes["writer"].closed.wait(5)

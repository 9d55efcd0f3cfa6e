"""Small OpenAI-compatible chat servers on loopback, the boundary fakes of the server's tests and load
benchmark, and a runner for the real server in a background thread.

A :class:`FakeUpstream` speaks just enough HTTP/1.1 (keep-alive, chunked streaming) to answer
``POST /v1/chat/completions`` the way a vLLM or OpenAI endpoint would, in one of five modes:

- ``answer``: a fixed answer after ``delay`` seconds, with usage; streamed word by word when asked
  (``chunk_delay`` between words), or ``piece_chars`` characters at a time; a tool call when the request
  brings tools and ``tool_call`` is set; the ``fusion_answer`` when asked to fuse (the request carries the
  fusion prompt). With ``echo_auth`` every answer quotes the ``Authorization`` header it got, as a careless
  (or hostile) upstream might.
- ``error``: HTTP 500 whose message quotes the ``Authorization`` header it got, as careless servers do.
- ``hang``: never answers; notes when the client closes the connection (:attr:`closed`).
- ``malformed``: HTTP 200 with a body that is not JSON.

Like OpenAI, every mode refuses a ``tool_choice`` that is none of ``none`` / ``auto`` / ``required`` nor names a
function in ``tools`` (HTTP 400).

Every request is recorded (:attr:`requests`, JSON bodies; :attr:`auth`, the bearer headers), and a
response the client walked away from (its connection closed while waiting or streaming) sets
:attr:`closed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from blender_core.fusion.base import FUSION_SYSTEM_PROMPT

HOST = "127.0.0.1"
MODES = ("answer", "error", "hang", "malformed")


class FakeUpstream:
    """One fake OpenAI-compatible endpoint on ``127.0.0.1``, served from its own thread and event loop."""

    def __init__(
        self,
        name: str,
        mode: str = "answer",
        *,
        answer: str = "",
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        usage: tuple[int, int] = (10, 5),
        tool_call: tuple[str, dict[str, Any]] | None = None,
        fusion_answer: str | None = None,
        echo_auth: bool = False,
        piece_chars: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.name = name
        self.mode = mode
        self.answer = answer or f"The answer of {name}."
        self.delay = delay
        self.chunk_delay = chunk_delay
        self.usage = usage
        self.tool_call = tool_call
        self.fusion_answer = fusion_answer or f"A fusion by {name} of the best answers."
        self.echo_auth = echo_auth
        self.piece_chars = piece_chars
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.received = threading.Event()  # a request arrived
        self.closed = threading.Event()  # a client closed its connection before the response ended
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def reset(self) -> None:
        """Forget the requests seen so far."""
        self.requests.clear()
        self.auth.clear()
        self.received.clear()
        self.closed.clear()

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 10.0) -> FakeUpstream:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def serve() -> None:
                self._server = await asyncio.start_server(self._connection, HOST, 0)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()

            loop.run_until_complete(serve())
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-upstream:{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"the fake upstream {self.name!r} did not start within {timeout} s")
        return self

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ HTTP
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        carry: bytes | None = b""
        try:
            while carry is not None:  # keep-alive: one request after another until the client closes
                head = carry + await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {}
                for line in lines:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                carry = await self._respond(method, path, headers, body, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bytes | None:
        """Answer one request: None when the connection is done, else the bytes of the next request that
        the close watch read meanwhile."""
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            self._send(writer, 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}})
            return b""
        request = json.loads(body or b"{}")
        self.requests.append(request)
        self.auth.append(headers.get("authorization", ""))
        self.received.set()
        refusal = _tool_choice_error(request)
        if refusal is not None:
            self._send(writer, 400, {"error": {"message": refusal, "type": "invalid_request_error"}})
            return b""
        gone = asyncio.ensure_future(reader.read(1))  # b"": the client closed the connection
        try:
            if self.mode == "hang":
                await gone
                self.closed.set()
                return None
            if await _closed_within(gone, self.delay):
                self.closed.set()
                return None
            if self.mode == "error":
                message = (
                    f"upstream {self.name} failed (request authorization: {headers.get('authorization')})"
                )
                self._send(writer, 500, {"error": {"message": message, "type": "server_error"}})
            elif self.mode == "malformed":
                self._send_raw(
                    writer, 200, b'{"id": "chatcmpl-x", "choices": [{"message": ', "application/json"
                )
            elif request.get("stream"):
                if not await self._stream(writer, request, gone, headers.get("authorization", "")):
                    self.closed.set()
                    return None
            else:
                self._send(writer, 200, self._completion(request, headers.get("authorization", "")))
            await writer.drain()
        finally:
            gone.cancel()
            await asyncio.wait({gone})  # unwound before the next read of this connection
        if not gone.cancelled():
            return gone.result() or None  # the next request's first byte, or b"": closed
        return b""

    def _text(self, request: dict[str, Any], auth: str) -> str:
        messages = request.get("messages") or [{}]
        fusing = messages[0].get("role") == "system" and messages[0].get("content") == FUSION_SYSTEM_PROMPT
        text = self.fusion_answer if fusing else self.answer
        return f"{text} (I got 'Authorization: {auth}')" if self.echo_auth else text

    def _usage(self) -> dict[str, int]:
        prompt, completion = self.usage
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _tool_calls(self, request: dict[str, Any]) -> list[dict[str, Any]] | None:
        if not request.get("tools") or self.tool_call is None:
            return None
        name, args = self.tool_call
        return [
            {
                "id": f"call_{self.name}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
        ]

    def _completion(self, request: dict[str, Any], auth: str) -> dict[str, Any]:
        calls = self._tool_calls(request)
        message: dict[str, Any] = {"role": "assistant", "content": None if calls else self._text(request, auth)}
        if calls:
            message["tool_calls"] = calls
        return {
            "id": f"chatcmpl-{self.name}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", self.name),
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": self._usage(),
        }

    async def _stream(
        self, writer: asyncio.StreamWriter, request: dict[str, Any], gone: asyncio.Future[bytes], auth: str
    ) -> bool:
        """Stream the answer as server-sent events; False when the client closed the connection meanwhile."""
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
            "Connection: keep-alive\r\n\r\n"
        )
        writer.write(head.encode())
        base = {
            "id": f"chatcmpl-{self.name}",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": self.name,
        }

        def event(payload: dict[str, Any] | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps({**base, **payload})
            raw = f"data: {data}\n\n".encode()
            writer.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")

        event(
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        )
        text = self._text(request, auth)
        n = self.piece_chars
        pieces = [text[k : k + n] for k in range(0, len(text), n)] if n else re.findall(r"\S+\s*", text)
        for piece in pieces:
            await writer.drain()
            if await _closed_within(gone, self.chunk_delay):
                return False
            event({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (request.get("stream_options") or {}).get("include_usage"):
            event({"choices": [], "usage": self._usage()})
        event("[DONE]")
        writer.write(b"0\r\n\r\n")
        return True

    def _send(self, writer: asyncio.StreamWriter, status: int, payload: dict[str, Any]) -> None:
        self._send_raw(writer, status, json.dumps(payload).encode(), "application/json")

    @staticmethod
    def _send_raw(writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str) -> None:
        reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}.get(status, "Status")
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: keep-alive\r\n\r\n"
        )
        writer.write(head.encode() + body)


def _tool_choice_error(request: dict[str, Any]) -> str | None:
    """OpenAI's refusal of a ``tool_choice`` it does not know or that names a function not in ``tools``
    (None: no refusal)."""
    choice = request.get("tool_choice")
    if isinstance(choice, str) and choice not in ("none", "auto", "required"):
        return f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'."
    if not isinstance(choice, dict) or choice.get("type") != "function":
        return None
    names = {(t.get("function") or {}).get("name") for t in request.get("tools") or []}
    name = (choice.get("function") or {}).get("name")
    if name in names:
        return None
    return f"Invalid value for 'tool_choice': function '{name}' not found in 'tools'."


async def _closed_within(gone: asyncio.Future[bytes], seconds: float) -> bool:
    """Wait ``seconds``; True as soon as the client closes its connection."""
    if seconds > 0:
        await asyncio.wait({gone}, timeout=seconds)
    return gone.done() and not gone.cancelled() and gone.result() == b""


@contextlib.contextmanager
def upstreams(*fakes: FakeUpstream) -> Iterator[tuple[FakeUpstream, ...]]:
    """Start the fakes, and stop them all on exit."""
    started: list[FakeUpstream] = []
    try:
        for fake in fakes:
            started.append(fake.start())
        yield fakes
    finally:
        for fake in started:
            fake.stop()


class LiveServer:
    """The real server (a FastAPI app under uvicorn) on a loopback port, in a background thread.

    ``start`` waits, bounded, until uvicorn has run the app's startup (ranker loaded) and listens;
    ``stop`` asks it to shut down as SIGTERM does (finishing the requests in flight) and joins the thread.
    """

    def __init__(self, app: Any, *, shutdown_timeout: float = 10.0) -> None:
        import uvicorn

        config = uvicorn.Config(
            app,
            host=HOST,
            port=0,
            log_level="warning",
            timeout_graceful_shutdown=shutdown_timeout,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="blender-serve", daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 60.0) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server stopped while starting (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within {timeout} s")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"the server did not stop within {timeout} s")

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def port_is_closed(port: int) -> bool:
    """Whether nothing listens on ``127.0.0.1:port`` any more."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) != 0

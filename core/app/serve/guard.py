"""The server's front door, as plain ASGI middleware: bearer keys, admission (the bound on requests in
flight, and their wait for a running slot) and the request body limit; each refusal is an OpenAI-shaped
JSON error sent before the app sees the request.

- ``/v1/*`` and ``/metrics`` need ``Authorization: Bearer <key>`` when keys are configured (401 otherwise). The key is
  compared with each accepted key in constant time: both are hashed (SHA-256, so lengths leak nothing) and
  compared with :func:`hmac.compare_digest`, every accepted key every time.
- ``POST /v1/chat/completions`` is admitted by :class:`~blender_core.app.serve.admission.Admission`: it runs
  at once, or waits for a running slot within its deadline, or is refused with 429 and ``Retry-After``
  (beyond ``max_in_flight``, or when no slot would free in time). Its deadline (``request_timeout``) counts
  from its arrival, its wait included (the app reads it from ``request.state.deadline``). A request counts
  until its response has ended, streams included.
- A body over ``max_body_bytes``: 413, from its ``Content-Length`` before reading it (or waiting for a
  slot), or as soon as a chunked body passes the limit.

A response sent before its request's body was read whole says ``Connection: close`` when that body may be
long (chunked, whose end nobody knows, or declared over the limit): uvicorn then closes the connection after
it, instead of reading and discarding the rest of a body that may never end. A short declared body is left
to uvicorn to discard, and the connection is kept (closing it with unread bytes would reset it, and the
client could lose the answer).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from blender_core.app.serve.admission import Admission, Overloaded
from blender_core.app.serve.protocol import CHAT_PATH, error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


CLOSE = (b"connection", b"close")


def has_body(scope: Scope) -> bool:
    """Whether the request comes with a body (chunked, or a ``Content-Length`` above 0)."""
    for name, value in scope.get("headers") or []:
        name = name.lower()
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
    return False


def declared_size(scope: Scope) -> int | None:
    """The request's ``Content-Length`` (None: none, or chunked)."""
    for name, value in scope.get("headers") or []:
        if name.lower() == b"content-length" and value.isdigit():
            return int(value)
    return None


def needs_key(path: str) -> bool:
    """Whether a request to ``path`` needs a key (when keys are configured): the API and the metrics."""
    return path in ("/v1", "/metrics") or path.startswith("/v1/")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def send_error(
    send: Send,
    status: int,
    message: str,
    type: str,
    code: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    *,
    close: bool = False,
) -> None:
    """Send a whole JSON error response in OpenAI's shape (``close``: then close the connection)."""
    body = json.dumps(error_body(message, type, None, code)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers]
    if close:
        raw.append(CLOSE)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Guard:
    """ASGI middleware: auth on ``/v1``, admission of chat completions, the body limit.

    Args:
        app: the application behind it.
        keys: accepted bearer keys (empty: no auth; the server then listens on loopback only).
        admission: the shared admission of chat completions.
        max_body_bytes: the largest request body accepted.
        request_timeout: a chat completion's deadline, in seconds from its arrival.
        retry_after: the least seconds a 429 asks the client to wait.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: Iterable[str],
        admission: Admission,
        max_body_bytes: int,
        request_timeout: float,
        retry_after: int,
    ) -> None:
        self.app = app
        self._digests = [_digest(k) for k in keys]
        self.admission = admission
        self.max_body_bytes = max_body_bytes
        self.request_timeout = request_timeout
        self.retry_after = retry_after

    def authorized(self, scope: Scope) -> bool:
        """Whether the request carries an accepted bearer key (compared in constant time)."""
        header = b""
        for name, value in scope.get("headers") or []:
            if name.lower() == b"authorization":
                header = value
        scheme, _, token = header.decode("latin-1").strip().partition(" ")
        given = _digest(token.strip() if scheme.lower() == "bearer" else "")
        ok = False
        for digest in self._digests:  # no early exit: the time does not say which key matched
            ok |= hmac.compare_digest(given, digest)
        return ok and bool(token.strip())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if self._digests and needs_key(path) and not self.authorized(scope):
            await send_error(
                send,
                401,
                "missing or invalid API key: send the header 'Authorization: Bearer <key>'",
                "invalid_request_error",
                "invalid_api_key",
                headers=[("www-authenticate", "Bearer")],
                close=self._long_body(scope),
            )
            return
        if path != CHAT_PATH or scope.get("method") != "POST":
            await self._limited(scope, receive, send)
            return
        size = declared_size(scope)
        if size is not None and size > self.max_body_bytes:
            await self._too_large(send, size)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        scope.setdefault("state", {})["deadline"] = deadline
        try:
            await self.admission.enter(deadline)
        except Overloaded as exc:
            wait = max(self.retry_after, math.ceil(exc.retry_after))
            await send_error(
                send,
                429,
                f"{exc}; retry after {wait} s",
                "rate_limit_exceeded",
                "too_many_requests",
                headers=[("retry-after", str(wait))],
                close=self._long_body(scope),
            )
            return
        start = loop.time()
        try:
            await self._limited(scope, receive, send)
        finally:
            self.admission.leave(loop.time() - start)

    def _long_body(self, scope: Scope) -> bool:
        """Whether an answer before the body was read must close the connection: the body is chunked (its
        end unknown) or declared over the limit, so the rest of it is not read."""
        if not has_body(scope):
            return False
        size = declared_size(scope)
        return size is None or size > self.max_body_bytes

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, refusing a body over the limit with 413."""
        limit = self.max_body_bytes
        size = declared_size(scope)
        if size is not None and size > limit:
            await self._too_large(send, size)
            return
        seen = 0
        too_large = False
        body_read = not has_body(scope)

        async def counted_receive() -> Message:
            # past the limit the app sees the client leave, and its answer is replaced by the 413
            nonlocal seen, too_large, body_read
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = True
                    return {"type": "http.disconnect"}
                body_read = not message.get("more_body", False)
            else:
                body_read = True  # the client is gone: nothing more to read
            return message

        async def guarded_send(message: Message) -> None:
            if too_large:
                return
            if message["type"] == "http.response.start" and not body_read and self._long_body(scope):
                message = {**message, "headers": [*message.get("headers", []), CLOSE]}
            await send(message)

        await self.app(scope, counted_receive, guarded_send)
        if too_large:
            await self._too_large(send, None)

    async def _too_large(self, send: Send, size: int | None) -> None:
        got = f"{size} bytes" if size is not None else "a longer body"
        await send_error(
            send,
            413,
            f"the request body may be at most {self.max_body_bytes} bytes, got {got}",
            "invalid_request_error",
            "request_too_large",
            close=True,
        )

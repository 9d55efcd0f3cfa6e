"""The server's front door, as plain ASGI middleware: bearer keys, the bound on requests in flight, and
the request body limit; each refusal is an OpenAI-shaped JSON error sent before the app sees the request.

- ``/v1/*`` needs ``Authorization: Bearer <key>`` when keys are configured (401 otherwise). The key is
  compared with each accepted key in constant time: both are hashed (SHA-256, so lengths leak nothing) and
  compared with :func:`hmac.compare_digest`, every accepted key every time.
- ``POST /v1/chat/completions`` beyond ``max_in_flight`` at once: 429 with ``Retry-After``. A request
  counts until its response has ended, streams included.
- A body over ``max_body_bytes``: 413, from its ``Content-Length`` before reading it, or as soon as a
  chunked body passes the limit.

A response sent before its request's body was read whole (every refusal here, and anything the app answers
early) says ``Connection: close``: uvicorn then closes the connection after it, instead of reading and
discarding the rest of a body that may never end.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from blender_core.app.serve.protocol import CHAT_PATH, error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class InFlight:
    """Counts the chat completions in flight (one event loop: no lock needed) against their bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def try_enter(self) -> bool:
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1


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
    """ASGI middleware: auth on ``/v1``, the in-flight bound on chat completions, the body limit.

    Args:
        app: the application behind it.
        keys: accepted bearer keys (empty: no auth; the server then listens on loopback only).
        in_flight: the shared counter of chat completions in flight.
        max_body_bytes: the largest request body accepted.
        retry_after: seconds a 429 asks the client to wait.
    """

    def __init__(
        self, app: ASGIApp, *, keys: Iterable[str], in_flight: InFlight, max_body_bytes: int, retry_after: int
    ) -> None:
        self.app = app
        self._digests = [_digest(k) for k in keys]
        self.in_flight = in_flight
        self.max_body_bytes = max_body_bytes
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
        if self._digests and (path == "/v1" or path.startswith("/v1/")) and not self.authorized(scope):
            await send_error(
                send,
                401,
                "missing or invalid API key: send the header 'Authorization: Bearer <key>'",
                "invalid_request_error",
                "invalid_api_key",
                headers=[("www-authenticate", "Bearer")],
                close=has_body(scope),
            )
            return
        if path != CHAT_PATH or scope.get("method") != "POST":
            await self._limited(scope, receive, send)
            return
        if not self.in_flight.try_enter():
            await send_error(
                send,
                429,
                f"{self.in_flight.limit} requests are in flight, this server's limit; retry after "
                f"{self.retry_after} s",
                "rate_limit_exceeded",
                "too_many_requests",
                headers=[("retry-after", str(self.retry_after))],
                close=has_body(scope),
            )
            return
        try:
            await self._limited(scope, receive, send)
        finally:
            self.in_flight.leave()

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, refusing a body over the limit with 413."""
        limit = self.max_body_bytes
        for name, value in scope.get("headers") or []:
            if name.lower() == b"content-length" and value.isdigit() and int(value) > limit:
                await self._too_large(send, int(value))
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
            if message["type"] == "http.response.start" and not body_read:
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

"""The metrics on the wire: the middleware that counts each chat completion, ``GET /metrics`` on the API's
port (behind the API's keys: the guard's), or a listener of its own (``[server] metrics = "port"``).

:class:`Metering` sits in front of everything, the guard included, so that a refusal (401, 413, 429)
counts too and a request's time runs from its arrival. What the ensemble did comes from the request's state,
where the chat route leaves it (:mod:`blender_core.app.serve.serving`): ``blender_account``, the answered
request's account; ``blender_failure``, what failed it (an ``EnsembleError`` carries every backend's record;
the deadline is an ``ApiError`` 504).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from blender_core.app.serve.config import ServeConfig
from blender_core.app.serve.guard import ASGIApp, Message, Receive, Scope, Send
from blender_core.app.serve.metrics import CONTENT_TYPE, ServeMetrics
from blender_core.app.serve.protocol import CHAT_PATH, ApiError
from blender_core.app.serve.startup import listen_error
from blender_core.ensemble import EnsembleError

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"


def outcome(status: int, ended: bool, failure: BaseException | None) -> str:
    """A chat completion's outcome label (see :mod:`~blender_core.app.serve.metrics`)."""
    if failure is not None:  # also after a 200: an error event ended the stream
        return "timeout" if isinstance(failure, ApiError) and failure.status == 504 else "error"
    if status == 499 or not ended:
        return "client_gone"
    if status == 429:
        return "overloaded"
    if status == 504:
        return "timeout"
    if status >= 500:
        return "error"
    return "rejected" if status >= 400 else "ok"


class Metering:
    """ASGI middleware: counts each ``POST /v1/chat/completions`` in the app's :class:`ServeMetrics`."""

    def __init__(self, app: ASGIApp, *, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != CHAT_PATH or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status, stream, ended = 0, False, False
        first: float | None = None

        async def metered_send(message: Message) -> None:
            nonlocal status, stream, ended, first
            if message["type"] == "http.response.start":
                status = message["status"]
                stream = any(
                    k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                    for k, v in message.get("headers") or []
                )
            elif message["type"] == "http.response.body":
                if stream and first is None and message.get("body"):
                    first = time.perf_counter() - start
                ended = ended or not message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, receive, metered_send)
        except BaseException:
            if not status:  # unhandled before any answer: the server's 500 follows
                status, ended = 500, True
            raise
        finally:
            state = scope.get("state") or {}
            self._count(status, stream, ended, time.perf_counter() - start, first, state)

    def _count(
        self, status: int, stream: bool, ended: bool, seconds: float, first: float | None, state: Any
    ) -> None:
        failure = state.get("blender_failure")
        try:
            self.metrics.request(
                outcome=outcome(status, ended, failure),
                status=status,
                stream=stream,
                seconds=seconds,
                first_chunk=first,
            )
            account = state.get("blender_account")
            if account is not None:
                self.metrics.account(account)
            elif isinstance(failure, EnsembleError):
                self.metrics.records(failure.records)
        except Exception:  # counting never fails a request
            logger.exception("counting a request in the metrics failed")


def install_metrics(app: FastAPI, config: ServeConfig, metrics: ServeMetrics) -> None:
    """Count the app's chat completions in ``metrics`` (unless ``metrics = "off"``), and serve
    ``GET /metrics`` on the app with ``metrics = "api"`` (the guard asks for the API's keys there). Call
    it after the guard is added, so that the metering is in front of it."""
    mode = config.server.metrics
    if mode == "off":
        return
    app.add_middleware(Metering, metrics=metrics)
    if mode == "api":

        async def scrape(request: Request) -> Response:
            return Response(metrics.exposition(), media_type=CONTENT_TYPE)

        app.add_api_route(METRICS_PATH, scrape, methods=["GET"], include_in_schema=False)


def serve_metrics_port(metrics: ServeMetrics, host: str, port: int) -> Callable[[], None]:
    """Serve ``GET /metrics`` on ``host:port`` from a thread of its own (no keys); returns what stops it.

    Raises:
        StartupError: the port is in use or the address not this machine's, naming ``server.metrics_port``
            or ``server.metrics_host``.
    """
    from prometheus_client import start_http_server

    try:
        httpd, _ = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise listen_error(
            exc, host, port, host_is="server.metrics_host", port_is="server.metrics_port"
        ) from exc

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()

    return stop

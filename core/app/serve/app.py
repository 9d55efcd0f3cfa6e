"""The OpenAI-compatible server of ``blender-llm serve``: FastAPI routes over the served ``BlenderLLM``.

- ``POST /v1/chat/completions``: the ensemble's answer, whole or streamed (server-sent events ending with
  ``data: [DONE]``); tools; ``usage`` summed over backends, ranker and fuser; the account with
  ``"blender": {"account": true}`` (see :mod:`blender_core.app.serve.protocol`).
- ``GET /v1/models``: the one model this server is. ``GET /health``: ready (the ranker is loaded before the
  server accepts requests) and the requests in flight; it needs no key.

Each chat completion runs in a task of its own, so that it can be stopped: past the request's deadline
(504, or an error event once streaming), or as soon as the client disconnects, while waiting for the
answer or mid-stream. Stopping it cancels the backend calls (their HTTP requests are closed upstream) and
the fusion. A stream's headers go out with its first piece: a request that fails before (all backends
down: 502) gets a plain HTTP error.

Example:
    >>> from blender_core.app.serve.app import create_app
    >>> from blender_core.app.serve.config import load_config
    >>> app = create_app(load_config("ensemble.toml"))  # doctest: +SKIP
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from blender_core.app.serve.backends import ServedEnsemble, build_served
from blender_core.app.serve.config import ServeConfig
from blender_core.app.serve.guard import CHAT_PATH, Guard, InFlight
from blender_core.app.serve.protocol import (
    ApiError,
    ChunkStream,
    Completion,
    error_body,
    parse_request,
    to_messages,
)
from blender_core.ensemble import EnsembleError, FusionError

logger = logging.getLogger(__name__)

T = TypeVar("T")
_END = object()


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body has been read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _settle(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has unwound (its backend connections closed)."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: it ended on its own meanwhile, and nobody wants its outcome now


class Answering:
    """One chat completion in flight: its ensemble call in a task of its own, and how it ends.

    ``deadline`` is in the event loop's clock; ``describe`` turns the call's exceptions into API errors.
    """

    def __init__(
        self, request: Request, deadline: float, describe: Callable[[BaseException], ApiError]
    ) -> None:
        self.request = request
        self.deadline = deadline
        self.describe = describe
        self.loop = asyncio.get_running_loop()

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.loop.time())

    def deadline_error(self) -> ApiError:
        return ApiError(
            504,
            "the request passed its deadline (limits.request_timeout) before the answer was ready",
            type="timeout",
            code="deadline_exceeded",
        )

    async def until_ready(self, task: asyncio.Future[T]) -> T:
        """The task's result, unless the client leaves (:class:`ClientGone`) or the deadline passes
        (:class:`ApiError` 504) first; either way the task is cancelled."""
        gone = asyncio.ensure_future(_disconnected(self.request))
        waiting: set[asyncio.Future[Any]] = {task, gone}
        try:
            done, _ = await asyncio.wait(
                waiting, timeout=self.remaining(), return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:  # the server is being stopped hard
            await _settle(task)
            raise
        finally:
            gone.cancel()
        if task in done:
            try:
                return task.result()
            except Exception as exc:
                raise self.describe(exc) from exc
        await _settle(task)
        if gone in done:
            raise ClientGone
        raise self.deadline_error()


class ChunkQueue:
    """The ensemble's stream, driven in a task of its own (one task for the whole stream, as LangChain's
    run context needs); its chunks wait in a queue until the response sends them."""

    def __init__(self, chunks: Callable[[], AsyncIterator[Any]]) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._drive(chunks))

    async def _drive(self, chunks: Callable[[], AsyncIterator[Any]]) -> None:
        try:
            async for chunk in chunks():
                self.queue.put_nowait(chunk)
            self.queue.put_nowait(_END)
        except Exception as exc:
            self.queue.put_nowait(exc)

    def next(self) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self.queue.get())

    async def stop(self) -> None:
        await _settle(self.task)


def create_app(
    config: ServeConfig, *, environ: Mapping[str, str] | None = None, served: ServedEnsemble | None = None
) -> FastAPI:
    """The server's ASGI app for a validated config.

    Args:
        config: the validated config.
        environ: where the keys' environment variables are read (default ``os.environ``).
        served: an already built ensemble (default: built from the config).

    Raises:
        ConfigError: an environment variable the config names is not set.
        ImportError: a package the server or a backend needs is missing (naming the extra to install).
    """
    served = (
        served if served is not None else build_served(config, os.environ if environ is None else environ)
    )
    limits = config.limits
    in_flight = InFlight(limits.max_in_flight)
    redact = served.redactor

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(served.warm_up)
        logger.info("serving %s: %d backends", served.model_name, len(served.llm.backends))
        yield
        await served.aclose()

    app = FastAPI(title="blender-llm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served
    app.state.in_flight = in_flight

    def describe(exc: BaseException) -> ApiError:
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, EnsembleError):
            return ApiError(502, redact(str(exc)), type="upstream_error", code="backends_failed")
        if isinstance(exc, FusionError):  # the fuser failed and the fallback is off
            return ApiError(502, redact(str(exc)), type="upstream_error", code="fuser_failed")
        logger.error("chat completion failed: %s", redact(f"{type(exc).__name__}: {exc}"))
        return ApiError(
            500, "the ensemble failed; see the server log", type="server_error", code="internal_error"
        )

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(
            error_body(str(exc.detail), kind), status_code=exc.status_code, headers=exc.headers
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "in_flight": in_flight.count, "max_in_flight": in_flight.limit}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": served.model_name, "object": "model", "created": 0, "owned_by": "blender-llm"}],
        }

    @app.post(CHAT_PATH)
    async def chat_completions(request: Request) -> Response:
        answering = Answering(request, asyncio.get_running_loop().time() + limits.request_timeout, describe)
        try:
            body = await asyncio.wait_for(request.body(), answering.remaining())
        except ClientDisconnect:  # gone, or (the guard says) its body passed the limit
            return Response(status_code=499)
        except (TimeoutError, asyncio.TimeoutError):
            raise answering.deadline_error() from None
        req = parse_request(body, max_messages=limits.max_messages)
        if req.model != served.model_name:
            raise ApiError(
                404,
                f"the model {req.model!r} does not exist here; this server is {served.model_name!r}",
                param="model",
                code="model_not_found",
            )
        messages = to_messages(req.messages)
        llm: Any = served.llm
        if req.tools:
            try:
                llm = llm.bind_tools(req.tools, **req.tool_options())
            except (TypeError, ValueError) as exc:
                raise ApiError(400, redact(str(exc)), param="tools") from None
        options = req.call_options()
        completion = Completion(served.model_name, redact)
        try:
            if not req.stream:
                message = await answering.until_ready(asyncio.ensure_future(llm.ainvoke(messages, **options)))
                return JSONResponse(completion.body(message, with_account=req.wants_account))
            return await _stream(
                answering,
                ChunkQueue(lambda: llm.astream(messages, **options)),
                ChunkStream(completion, include_usage=req.include_usage, with_account=req.wants_account),
            )
        except ClientGone:
            return Response(status_code=499)  # nobody reads it; the ensemble call is already stopped

    app.add_middleware(
        Guard,
        keys=served.server_keys,
        in_flight=in_flight,
        max_body_bytes=limits.max_body_bytes,
        retry_after=limits.retry_after,
    )
    return app


async def _stream(answering: Answering, chunks: ChunkQueue, events: ChunkStream) -> Response:
    """Wait for the first piece (errors before it are plain HTTP errors), then stream the rest."""
    try:
        first = await answering.until_ready(chunks.next())
    except BaseException:
        await chunks.stop()
        raise
    if isinstance(first, BaseException):
        await chunks.stop()
        raise answering.describe(first)

    async def body() -> AsyncIterator[bytes]:
        item = first
        try:
            yield events.start()
            while item is not _END:
                if isinstance(item, BaseException):
                    yield events.error(answering.describe(item))
                    return
                piece = events.piece(item)
                if piece:
                    yield piece
                try:
                    item = await asyncio.wait_for(chunks.next(), answering.remaining())
                except (TimeoutError, asyncio.TimeoutError):
                    yield events.error(answering.deadline_error())
                    return
            yield events.end()
        finally:  # the end, an error, or the client gone mid-stream: stop the ensemble call
            await chunks.stop()

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    # the background task runs however the response ends, even when the body was abandoned mid-way
    return StreamingResponse(
        body(), media_type="text/event-stream", headers=headers, background=BackgroundTask(chunks.stop)
    )

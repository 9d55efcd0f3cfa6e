"""Serving one chat completion: the request read before its deadline, the ensemble called in a task of its
own, and how that task ends (vLLM's ``OpenAIServingChat``, for the ensemble).

Each chat completion runs in a task of its own, so that it can be stopped: past the request's deadline
(504, or an error event once streaming), or as soon as the client disconnects, while waiting for the
answer or mid-stream. Stopping it cancels the backend calls (their HTTP requests are closed upstream) and
the fusion. A stream's headers go out with its first piece: a request that fails before (all backends
down: 502) gets a plain HTTP error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from blender_core.app.serve.backends import ServedEnsemble
from blender_core.app.serve.config import LimitSettings
from blender_core.app.serve.protocol import (
    ApiError,
    ChunkStream,
    Completion,
    parse_request,
    to_messages,
)
from blender_core.ensemble import EnsembleError, FusionError

logger = logging.getLogger(__name__)

T = TypeVar("T")
_END = object()


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


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
    What ended the call is left in the request's state for the metrics
    (:mod:`~blender_core.app.serve.metrics_http`): ``blender_account``, ``blender_failure``.
    """

    def __init__(
        self, request: Request, deadline: float, describe: Callable[[BaseException], ApiError]
    ) -> None:
        self.request = request
        self.deadline = deadline
        self._describe = describe
        self.loop = asyncio.get_running_loop()

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.loop.time())

    def describe(self, exc: BaseException) -> ApiError:
        """The API error of an exception of the ensemble call (noted as the request's failure)."""
        self.request.state.blender_failure = exc
        return self._describe(exc)

    def answered(self, account: Any) -> None:
        """Note the ensemble's account of the answer (``response_metadata["blender"]``)."""
        self.request.state.blender_account = account

    def deadline_error(self) -> ApiError:
        error = ApiError(
            504,
            "the request passed its deadline (limits.request_timeout) before the answer was ready",
            type="timeout",
            code="deadline_exceeded",
        )
        self.request.state.blender_failure = error
        return error

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


class ChatServing:
    """``POST /v1/chat/completions`` over the served ensemble, within the config's limits."""

    def __init__(self, served: ServedEnsemble, limits: LimitSettings) -> None:
        self.served = served
        self.limits = limits

    def describe(self, exc: BaseException) -> ApiError:
        """The API error of an exception of the ensemble call, its text scrubbed of secrets."""
        redact = self.served.redactor
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

    async def create_chat_completion(self, raw_request: Request) -> Response:
        """The completion, whole or streamed; 499 (unsent) when the client left first.

        Raises:
            ApiError: 400 a bad request, 404 another model, 502 the backends or the fuser failed, 504 the
                deadline passed (before the stream began).
        """
        loop = asyncio.get_running_loop()
        # the deadline counts from the request's arrival, its wait for a slot included (set by the guard)
        deadline = raw_request.scope.get("state", {}).get("deadline", loop.time() + self.limits.request_timeout)
        answering = Answering(raw_request, deadline, self.describe)
        try:
            body = await asyncio.wait_for(raw_request.body(), answering.remaining())
        except ClientDisconnect:  # gone, or (the guard says) its body passed the limit
            return Response(status_code=499)
        except (TimeoutError, asyncio.TimeoutError):
            raise answering.deadline_error() from None
        request = parse_request(body, max_messages=self.limits.max_messages)
        served = self.served
        if request.model != served.model_name:
            raise ApiError(
                404,
                f"the model {request.model!r} does not exist here; this server is {served.model_name!r}",
                param="model",
                code="model_not_found",
            )
        messages = to_messages(request.messages)
        llm: Any = served.llm
        if request.tools:
            try:
                llm = llm.bind_tools(request.tools, **request.tool_options())
            except (TypeError, ValueError) as exc:
                raise ApiError(400, served.redactor(str(exc)), param="tools") from None
        options = request.call_options()
        completion = Completion(served.model_name, served.redactor)
        try:
            if not request.stream:
                call = asyncio.ensure_future(llm.ainvoke(messages, **options))
                message = await answering.until_ready(call)
                answering.answered(message.response_metadata.get("blender"))
                reply = completion.response(message, with_account=request.wants_account)
                return Response(reply.model_dump_json(exclude_unset=True), media_type="application/json")
            return await _stream(
                answering,
                ChunkQueue(lambda: llm.astream(messages, **options)),
                ChunkStream(
                    completion, include_usage=request.include_usage, with_account=request.wants_account
                ),
            )
        except ClientGone:
            return Response(status_code=499)  # nobody reads it; the ensemble call is already stopped


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
            answering.answered(events.metadata)
            yield events.end()
        finally:  # the end, an error, or the client gone mid-stream: stop the ensemble call
            await chunks.stop()

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    # the background task runs however the response ends, even when the body was abandoned mid-way
    return StreamingResponse(
        body(), media_type="text/event-stream", headers=headers, background=BackgroundTask(chunks.stop)
    )

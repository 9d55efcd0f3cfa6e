"""The server's ASGI app: :func:`create_app` builds the served ensemble, sets the app's state, includes
the routes (:mod:`blender_core.app.serve.routes`) and puts the guard in front
(:mod:`blender_core.app.serve.guard`). Every error leaves in OpenAI's shape.

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
from collections.abc import AsyncIterator, Mapping

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from blender_core.app.serve.admission import Admission
from blender_core.app.serve.backends import ServedEnsemble, build_served
from blender_core.app.serve.config import ServeConfig
from blender_core.app.serve.guard import Guard
from blender_core.app.serve.metrics import ServeMetrics
from blender_core.app.serve.metrics_http import install_metrics
from blender_core.app.serve.protocol import ApiError, error_body
from blender_core.app.serve.recording import RecorderCollector
from blender_core.app.serve.routes import router
from blender_core.app.serve.serving import ChatServing

logger = logging.getLogger(__name__)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)  # registered for ApiError only
    body = request.app.state.served.redactor.tree(exc.body())  # a client's input it quotes, too
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # registered for HTTPException only
    kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
    body = request.app.state.served.redactor.tree(error_body(str(exc.detail), kind))
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def create_app(
    config: ServeConfig, *, environ: Mapping[str, str] | None = None, served: ServedEnsemble | None = None
) -> FastAPI:
    """The server's ASGI app for a validated config.

    Its state: ``served`` (the :class:`ServedEnsemble`), ``admission`` (the chat completions running and
    waiting: :class:`~blender_core.app.serve.admission.Admission`), ``chat`` (the :class:`ChatServing`
    the chat route calls) and ``metrics`` (the app's :class:`~blender_core.app.serve.metrics.ServeMetrics`,
    where another component adds its own series).

    Args:
        config: the validated config.
        environ: where the keys' environment variables are read (default ``os.environ``).
        served: an already built ensemble (default: built from the config).

    Raises:
        ConfigError: an environment variable the config names is not set.
        ImportError: a package the server or a backend needs is missing (naming the extra to install).
    """
    if served is None:
        served = build_served(config, os.environ if environ is None else environ)
    limits = config.limits
    admission = Admission(limits.max_in_flight, limits.max_running)
    ensemble = served

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(ensemble.warm_up)
        logger.info("serving %s: %d backends", ensemble.model_name, len(ensemble.llm.backends))
        watch = asyncio.ensure_future(admission.watch())
        try:
            yield
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            await ensemble.aclose()

    app = FastAPI(title="blender-llm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served
    app.state.admission = admission
    app.state.chat = ChatServing(served, limits)
    app.include_router(router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(
        Guard,
        keys=served.server_keys,
        admission=admission,
        max_body_bytes=limits.max_body_bytes,
        request_timeout=limits.request_timeout,
        retry_after=limits.retry_after,
    )
    # the metrics: counted in front of the guard (refusals count too); app.state.metrics is the hook
    app.state.metrics = ServeMetrics(config, admission)
    if served.recorder is not None:
        app.state.metrics.register(RecorderCollector(served.recorder, lambda: served.llm.engine.sinks.errors))
    install_metrics(app, config, app.state.metrics)
    return app

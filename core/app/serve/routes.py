"""The server's routes, on a module-level router; each reads what it serves from the app's state
(``request.app.state``, set by :func:`blender_core.app.serve.app.create_app`).

- ``POST /v1/chat/completions``: the ensemble's answer, whole or streamed (server-sent events ending with
  ``data: [DONE]``); tools; ``usage`` summed over backends, ranker and fuser; the account with
  ``"blender": {"account": true}`` (see :mod:`blender_core.app.serve.protocol`).
- ``GET /v1/models``: the one model this server is. ``GET /health``: ready (the ranker is loaded before the
  server accepts requests), the requests in flight (running and waiting for a slot) and the running limit
  now; it needs no key.

Keys, admission and the body limit are the guard's (:mod:`blender_core.app.serve.guard`), before
a request reaches a route.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from openai.types import Model

from blender_core.app.serve.admission import Admission
from blender_core.app.serve.backends import ServedEnsemble
from blender_core.app.serve.protocol import CHAT_PATH
from blender_core.app.serve.serving import ChatServing

router = APIRouter()


def served(request: Request) -> ServedEnsemble:
    return request.app.state.served


def admission(request: Request) -> Admission:
    return request.app.state.admission


def chat(request: Request) -> ChatServing:
    return request.app.state.chat


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    a = admission(request)
    return {
        "status": "ok",
        "in_flight": a.in_flight,
        "max_in_flight": a.max_in_flight,
        "running": a.running,
        "waiting": len(a.waiting),
        "running_limit": a.limit,
        "loop_lag_ms": round(1000 * a.lag, 1),
    }


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    model = Model(id=served(request).model_name, object="model", created=0, owned_by="blender-llm")
    return {"object": "list", "data": [model.model_dump()]}


@router.post(CHAT_PATH)
async def create_chat_completion(request: Request) -> Response:
    return await chat(request).create_chat_completion(request)

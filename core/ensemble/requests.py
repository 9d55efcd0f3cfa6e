"""Turning a backend's call and a :class:`BackendRequest` into the zero-argument call the scheduler runs,
and a round's results into priced records."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from blender_core.base.calls import Blocking
from blender_core.ensemble.records import BackendRequest, CandidateRecord
from blender_core.ensemble.settings import BackendSettings


def takes_request(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes an argument (the :class:`BackendRequest`); a plain ``lambda: answer`` does not."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: called as it is
        return False
    return any(
        p.kind is p.VAR_POSITIONAL
        or (p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)
        for p in params
    )


def bind_request(call: Any, request: BackendRequest) -> Any:
    """``call`` (a function, a coroutine function or a :class:`Blocking`) bound to ``request``.

    A call that takes no request answers the plain chat: it serves a first layer (its samples are repeated
    calls), never a later one, whose backends must see the references.
    """
    target: Callable[..., Any] = call.call if isinstance(call, Blocking) else call
    bound: Callable[..., Any]
    if takes_request(target):
        bound = functools.partial(target, request)
    elif request.layer > 1:
        raise ValueError(
            f"backend {request.backend!r}'s call takes no BackendRequest, so it cannot see the previous "
            "layer's answers; with layers > 1 give calls of one argument (the request), as the adapters do"
        )
    else:
        bound = target
    return Blocking(bound) if isinstance(call, Blocking) else bound


def priced(
    records: Sequence[CandidateRecord],
    requests: Sequence[BackendRequest],
    settings: Mapping[str, BackendSettings],
    *,
    tier: int,
    layer: int,
) -> list[CandidateRecord]:
    """A round's records with where they came from and what they cost (by their backend's prices)."""
    out = []
    for record, request in zip(records, requests, strict=True):
        s = settings.get(request.backend, BackendSettings())
        cost = s.cost(record.answer.usage) if record.answer is not None else None
        out.append(replace(record, tier=tier, layer=layer, cost=cost))
    return out

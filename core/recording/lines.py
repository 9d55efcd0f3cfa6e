"""One answered request as one JSON line: the format of ``blender-llm rank``'s output, plus the candidates, so
that ``blender-llm label-pairs`` and ``blender-llm rank`` read a traffic file as they are (the general candidate
set format of :mod:`blender_core.data.records`: ``prompt``, ``candidates``, ``models``, ``scores``).

A line (wrapped here)::

    {"id": "20261207T110501.123456Z-3f2a9c1b", "time": "2026-12-07T11:05:01.123456Z",
     "prompt": "What is the capital of France?", "candidates": ["Paris.", "Lyon."], "models": ["a", "b"],
     "scores": [0.8, -0.3], "ranks": [1, 2], "best": 0, "best_text": "Paris.", "best_model": "a",
     "messages": [{"role": "user", "content": "What is the capital of France?"}],
     "answer": "Paris.", "fused": false, "chosen": ["a"], "ranker": "llm-blender/PairRM", "strategy": "full",
     "served": {"candidates": [{"backend": "a", "latency_s": 0.41, "cost": 1.2e-05, "usage": {...}}, ...],
                "failed": [{"backend": "c", "latency_s": 30.0, "error": "TimeoutError: ..."}],
                "fuser": null, "fuser_error": null, "timings": {"rank_s": 0.05}, "cost": 2.4e-05}}

- ``prompt`` is the text the ranker read: a lone user turn (with any system text before it) as is, a longer chat
  rendered as ``ROLE: text`` lines (:func:`~blender_core.ensemble.prompts.render_prompt`). Ranking it again with
  the same ranker therefore gives the served ranking, and ``label-pairs`` pairs the served choice first.
  ``messages`` keeps the chat itself (role and content), for a conversational dataset; rank and label-pairs do
  not read it.
- ``candidates`` are the answers that were ranked, in call order, as the ranker read them (a tool call in its
  canonical text), named by ``models`` (``backend#k`` for a sample); ``scores``, ``ranks``, ``best``,
  ``best_text``, ``best_model`` are the served ranking, as ``rank`` writes them (a tournament's line says
  ``"scores_order": false``). ``answer`` is what the client got: the fused text when ``fused``.
- ``served`` is the rest of the account: each candidate's latency, cost, usage and (adaptive ensembles) tier,
  layer and sample; the backends that failed or were cancelled; the fuser, the timings, the cost.
- ``id`` is unique (time and random bits), so that rank and label-pairs key each record by it across files.

A request with fewer than two candidates is not a line: there is nothing to rank or pair.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from typing import Any

from blender_core.ensemble.outcome import EnsembleOutcome
from blender_core.ensemble.records import CandidateRecord
from blender_core.ensemble.sinks import Answered


def _stamp(seconds: float) -> tuple[str, str]:
    """``(compact, ISO)`` UTC forms of a time, to the microsecond."""
    whole = math.floor(seconds)
    micros = min(999_999, round((seconds - whole) * 1_000_000))
    t = time.gmtime(whole)
    return (
        time.strftime("%Y%m%dT%H%M%S", t) + f".{micros:06d}Z",
        time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{micros:06d}Z",
    )


def _sample(backend: str) -> int | None:
    name, sep, k = backend.rpartition("#")
    return int(k) if sep and name and k.isdigit() else None


def _served(record: CandidateRecord, adaptive: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"backend": record.backend, "latency_s": round(record.latency_s, 4)}
    if record.cost is not None:
        entry["cost"] = record.cost
    if record.answer is not None and record.answer.usage:
        entry["usage"] = dict(record.answer.usage)
    if record.error is not None:
        entry["error"] = record.error
    if record.cancelled is not None:
        entry["cancelled"] = record.cancelled
    if adaptive:
        entry["tier"], entry["layer"] = record.tier, record.layer
    sample = _sample(record.backend)
    if sample is not None:
        entry["sample"] = sample
    return entry


def _account(outcome: EnsembleOutcome) -> dict[str, Any]:
    policy = outcome.policy
    adaptive = policy is not None and (policy.tiers != (1,) or policy.layers > 1)
    ranked = {id(r) for r in outcome.successes}
    account: dict[str, Any] = {
        "candidates": [_served(r, adaptive) for r in outcome.successes],
        "failed": [_served(r, adaptive) for r in outcome.records if id(r) not in ranked],
        "fuser": outcome.blend.fuser,
        "fuser_error": outcome.blend.fuser_error,
        "timings": dict(outcome.blend.timings),
        "usage": outcome.usage,
        "cost": outcome.cost,
    }
    if policy is not None:
        account["policy"] = policy.as_dict()
    return account


def traffic_record(answered: Answered) -> dict[str, Any] | None:
    """The record line of one answered request (see the module), or None when fewer than two answers were
    ranked."""
    outcome = answered.outcome
    blend = outcome.blend
    if len(blend.candidates) < 2:
        return None
    compact, iso = _stamp(answered.time or time.time())
    models = [r.backend for r in outcome.successes]
    candidates = list(blend.candidates)
    best = int(blend.best)
    record: dict[str, Any] = {
        "id": f"{compact}-{secrets.token_hex(4)}",
        "time": iso,
        "prompt": answered.prompt,
        "candidates": candidates,
        "models": models,
        "scores": [float(s) for s in blend.scores],
        "ranks": [int(k) for k in blend.ranking.ranks],
        "best": best,
        "best_text": candidates[best],
        "best_model": models[best],
    }
    if not blend.ranking.scores_order:
        record["scores_order"] = False
    if answered.messages is not None:
        record["messages"] = [dict(m) for m in answered.messages]
    record.update(
        answer=outcome.text,
        fused=blend.fused,
        chosen=list(outcome.chosen_backends),
        ranker=answered.ranker,
        strategy=blend.ranking.strategy,
        served=_account(outcome),
    )
    return record


def encode_line(record: dict[str, Any]) -> bytes:
    """One record as one line of UTF-8 JSON, newline included. Text that is not valid Unicode (a lone surrogate)
    is written as its escape, which the readers report as a bad line of its own: writing never raises on it."""
    try:
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record, ensure_ascii=True) + "\n").encode("ascii")

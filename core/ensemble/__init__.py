"""The ensemble engine: ask several backends concurrently (threads or asyncio) with per-backend timeouts,
keep those that answered (``min_successes``), rank the answers, fuse the top-K (streamed, with a time limit
on the first token and a fallback to the top answer), and account for every candidate, the timings and the
summed usage. ``BlendPipeline`` is the batch form over ready candidate lists. ``EnsembleSettings`` declares
every setting once; the adapters and the server inherit it. The framework adapters only
translate their messages to and from this engine. With ``opentelemetry-api`` installed each request is
traced (``spans``).

May import: blender_core.base, blender_core.ranking, blender_core.fusion, blender_core.observability.
"""

from __future__ import annotations

from blender_core.base.usage import USAGE_KEYS, UsageSink, sum_usage
from blender_core.ensemble.backends import (
    AsyncCall,
    Blocking,
    EmptyAnswerError,
    acall_backends,
    call_backends,
    name_backends,
)
from blender_core.ensemble.engine import Ensemble
from blender_core.ensemble.outcome import Delta, EnsembleOutcome, PolicyReport
from blender_core.ensemble.pipeline import BlendPipeline, BlendResult, FusionError
from blender_core.ensemble.prompts import render_prompt
from blender_core.ensemble.records import BackendAnswer, BackendRequest, CandidateRecord, EnsembleError
from blender_core.ensemble.settings import (
    Backend,
    BackendSettings,
    EnsembleConfig,
    EnsembleSettings,
    split_backends,
    unwrap,
)

__all__ = [
    "USAGE_KEYS",
    "AsyncCall",
    "Backend",
    "BackendAnswer",
    "BackendRequest",
    "BackendSettings",
    "BlendPipeline",
    "BlendResult",
    "Blocking",
    "CandidateRecord",
    "Delta",
    "EmptyAnswerError",
    "Ensemble",
    "EnsembleConfig",
    "EnsembleError",
    "EnsembleOutcome",
    "EnsembleSettings",
    "FusionError",
    "PolicyReport",
    "UsageSink",
    "acall_backends",
    "call_backends",
    "name_backends",
    "render_prompt",
    "split_backends",
    "sum_usage",
    "unwrap",
]

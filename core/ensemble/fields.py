"""Pydantic field types for the settings of the framework adapters, validated by the core's own checks,
so that every adapter refuses the same bad values with the same message."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

from blender_core.base.validation import check_choice, check_top_n
from blender_core.ranking.registry import check_ranker_spec
from blender_core.ranking.strategies import STRATEGIES


def _strategy(value: str) -> str:
    return check_choice(value, STRATEGIES, "strategy")


def _tracer_provider(value: Any) -> Any:
    if value is not None and not callable(getattr(value, "get_tracer", None)):
        raise ValueError(
            f"tracer_provider must be an OpenTelemetry TracerProvider (with get_tracer) or None for the global "
            f"one, got {type(value).__name__}"
        )
    return value


#: a ranker object, a folder / hub id / built-in name, or None for the default ranker
RankerField = Annotated[Any, AfterValidator(check_ranker_spec)]
#: a ranking strategy name
StrategyField = Annotated[str, AfterValidator(_strategy)]
#: how many reranked items to keep (None: all)
TopNField = Annotated[int | None, AfterValidator(check_top_n)]
#: the OpenTelemetry TracerProvider the ensemble's spans go to, or None for the global one
TracerProviderField = Annotated[
    Any,
    AfterValidator(_tracer_provider),
    Field(
        exclude=True,
        description="The OpenTelemetry TracerProvider the ensemble's spans go to (None: the global one, as "
        "set by the app or opentelemetry-instrument).",
    ),
]

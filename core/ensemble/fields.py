"""Pydantic field types for the settings of the framework adapters, validated by the core's own checks,
so that every adapter refuses the same bad values with the same message."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator

from blender_core.base.validation import check_choice, check_top_n
from blender_core.ranking.registry import check_ranker_spec
from blender_core.ranking.strategies import STRATEGIES


def _strategy(value: str) -> str:
    return check_choice(value, STRATEGIES, "strategy")


#: a ranker object, a folder / hub id / built-in name, or None for the default ranker
RankerField = Annotated[Any, AfterValidator(check_ranker_spec)]
#: a ranking strategy name
StrategyField = Annotated[str, AfterValidator(_strategy)]
#: how many reranked items to keep (None: all)
TopNField = Annotated[int | None, AfterValidator(check_top_n)]

"""Ranking: the ranker interface every consumer uses, ``load_ranker`` (one cached, thread-safe way to
turn a spec into a ranker), the strategies and their aggregation, and a package per ranker kind:
:mod:`.pairrm` (the PairRM :class:`PairRanker`: config and model, input layout, every checkpoint layout,
compact exports, built-ins), :mod:`.reward` (the :class:`RewardModelRanker`) and :mod:`.judge` (the LLM
:class:`JudgeRanker`).

The shared modules here (:mod:`.interface`, :mod:`.strategies`, :mod:`.aggregation`, :mod:`.batches`)
import no kind; the registry (:mod:`.registry`) and this package's re-exports do.

May import: blender_core.base, blender_core.ranking.pairrm, blender_core.ranking.reward,
blender_core.ranking.judge.
"""

from __future__ import annotations

from blender_core.base.results import RankedCandidate, Ranking
from blender_core.ranking.interface import BaseRanker, Ranker
from blender_core.ranking.judge import (
    MT_BENCH_PAIR,
    CallableChat,
    ChatReply,
    JudgeChat,
    JudgePrompt,
    JudgeRanker,
)
from blender_core.ranking.pairrm import BUILTIN_RANKER, PairRanker
from blender_core.ranking.registry import DEFAULT_RANKER, RankerSpec, check_ranker_spec, load_ranker
from blender_core.ranking.reward import RewardModelRanker
from blender_core.ranking.strategies import STRATEGIES

__all__ = [
    "BUILTIN_RANKER",
    "DEFAULT_RANKER",
    "MT_BENCH_PAIR",
    "STRATEGIES",
    "BaseRanker",
    "CallableChat",
    "ChatReply",
    "JudgeChat",
    "JudgePrompt",
    "JudgeRanker",
    "PairRanker",
    "RankedCandidate",
    "Ranker",
    "RankerSpec",
    "Ranking",
    "RewardModelRanker",
    "check_ranker_spec",
    "load_ranker",
]

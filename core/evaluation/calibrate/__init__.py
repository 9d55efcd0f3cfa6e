"""Calibrating an adaptive ensemble offline: simulate a policy (cascade, quorum, all, single) over candidate
sets whose answers and judge preferences are already known (the AlpacaEval pools), through the engine's own
policy flow, ranking and acceptance; sweep its threshold; report the cost–quality curve beside "always the
best single model", "call everything" and an oracle; recommend a threshold as a config snippet.

May import: blender_core.base, blender_core.data, blender_core.ranking, blender_core.ensemble,
blender_core.evaluation.
"""

from __future__ import annotations

from blender_core.evaluation.calibrate.answers import KnownAnswer, known_answers, token_count
from blender_core.evaluation.calibrate.memo import MemoRanker
from blender_core.evaluation.calibrate.oracle import ORACLE, OracleRanker
from blender_core.evaluation.calibrate.prices import ModelEntry, PriceTable, load_prices
from blender_core.evaluation.calibrate.recommend import Recommendation, config_snippet, recommend
from blender_core.evaluation.calibrate.report import build_report, write_report
from blender_core.evaluation.calibrate.simulate import simulate
from blender_core.evaluation.calibrate.sweep import POLICIES, Calibration, CurvePoint, calibrate

__all__ = [
    "ORACLE",
    "POLICIES",
    "Calibration",
    "CurvePoint",
    "KnownAnswer",
    "MemoRanker",
    "ModelEntry",
    "OracleRanker",
    "PriceTable",
    "Recommendation",
    "build_report",
    "calibrate",
    "config_snippet",
    "known_answers",
    "load_prices",
    "recommend",
    "simulate",
    "token_count",
    "write_report",
]

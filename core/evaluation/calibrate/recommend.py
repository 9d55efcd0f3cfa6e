"""Choose a threshold for a target cost or quality, and write it as the ``[ensemble]`` / ``[[backends]]``
lines of a ``blender-llm serve`` config (the same names as every other surface of the settings)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from blender_core.evaluation.calibrate.oracle import ORACLE
from blender_core.evaluation.calibrate.sweep import Calibration, CurvePoint

#: the endpoint the snippet gives each backend: a placeholder to replace with the model's own
PLACEHOLDER_URL = "https://api.example.com/v1"


@dataclass(frozen=True)
class Recommendation:
    """The chosen point, the target it answers (``"cost <= 0.001"``, ``"win rate >= 17.9"``) and whether
    any point met it (if none did: the point closest to it)."""

    point: CurvePoint
    target: str
    met: bool


def recommend(
    calibration: Calibration, *, target_cost: float | None = None, target_quality: float | None = None
) -> Recommendation:
    """The best point of the ranker's curve for a target: the highest win rate at a cost per instruction
    of at most ``target_cost``, or the cheapest at a win rate of at least ``target_quality``. With neither,
    the target is the best single model's win rate (the cheapest setting as good as always calling it).

    Raises:
        ValueError: both targets given.
    """
    if target_cost is not None and target_quality is not None:
        raise ValueError("give a target cost or a target quality, not both (--target-cost / --target-quality)")
    points: Sequence[CurvePoint] = calibration.points
    if target_cost is not None:
        within = [p for p in points if p.cost <= target_cost]
        if within:
            best = max(within, key=lambda p: (p.win_rate, -p.cost))
            return Recommendation(best, f"cost <= {target_cost:g} per instruction", True)
        return Recommendation(min(points, key=lambda p: p.cost), f"cost <= {target_cost:g} per instruction", False)
    quality = target_quality
    named = f"win rate >= {target_quality:g}" if target_quality is not None else ""
    if quality is None:
        single = calibration.baselines["best single"]
        quality = single.win_rate
        named = f"win rate >= {quality:.1f} (the best single model's)"
    good = [p for p in points if p.win_rate >= quality]
    if good:
        return Recommendation(min(good, key=lambda p: (p.cost, -p.win_rate)), named, True)
    return Recommendation(max(points, key=lambda p: (p.win_rate, -p.cost)), named, False)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


def config_snippet(calibration: Calibration, recommendation: Recommendation) -> str:
    """The recommended setting as ``blender-llm serve`` config lines: ``[ensemble]`` with the ranker and the
    policy's setting, one ``[[backends]]`` table per model called (its tier and prices; the endpoint a
    placeholder to replace). ``ServeConfig`` accepts it as is."""
    point = recommendation.point
    c = calibration
    lines = [
        f"# blender-llm calibrate --policy {c.policy}: {point.setting.label}, win rate {round(point.win_rate, 3):.1f}, "
        f"{point.cost:.6f} per instruction ({c.n_instructions} instructions; target {recommendation.target})",
        "[ensemble]",
    ]
    if c.ranker == ORACLE:
        lines.append("# ranker: the oracle (the judge's labels) cannot be deployed; set yours, and calibrate it")
    else:
        lines.append(f"ranker = {_toml(c.ranker)}")
    for name, value in {**c.base_settings, **point.setting.ensemble}.items():
        if value is not None:
            lines.append(f"{name} = {_toml(value)}")
    tiered = len({s.tier for s in point.setting.backends.values()}) > 1
    for name, s in point.setting.backends.items():
        lines += [
            "",
            "[[backends]]",
            f"name = {_toml(name)}",
            'kind = "openai"',
            f"base_url = {_toml(PLACEHOLDER_URL)}  # the model's endpoint",
            f"model = {_toml(name)}",
        ]
        if tiered:
            lines.append(f"tier = {s.tier}")
        lines += [f"price_in = {_toml(s.price_in)}", f"price_out = {_toml(s.price_out)}"]
    return "\n".join(lines) + "\n"

"""Sweep a policy's threshold over a pool and measure each setting: selection win rate and cost per
instruction, beside "always the best single model", "call everything" and the oracle.

The policies and what each sweeps:

- ``cascade``: ``accept_score``, the models in tiers (:meth:`PriceTable.tiers`). The grid: None (a tier
  that answered is accepted), the deciles of the acceptance statistic the rule compares with
  ``accept_score`` (the top score of an absolute ranker; for a pairwise one the smallest both-order margin
  of the top answer over the others of its tier), measured on the pool, and one above them all (every tier
  runs).
- ``quorum``: ``quorum = k`` for k = 1 … n, every model in one tier; which answers are in first comes from
  the price table's latency proxy.
- ``all``: call the m cheapest models (by price_in + price_out), m = 1 … n, and rank them.
- ``single``: each model alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from blender_core.data.alpacaeval import EvalRecord
from blender_core.ensemble.engine import Ensemble
from blender_core.ensemble.outcome import EnsembleOutcome
from blender_core.ensemble.policy import accept_peers
from blender_core.ensemble.settings import BackendSettings, EnsembleConfig
from blender_core.evaluation.calibrate.answers import KnownAnswer, known_answers
from blender_core.evaluation.calibrate.memo import MemoRanker
from blender_core.evaluation.calibrate.oracle import OracleRanker
from blender_core.evaluation.calibrate.prices import PriceTable
from blender_core.evaluation.calibrate.simulate import simulate
from blender_core.ranking.interface import Ranker
from blender_core.ranking.registry import spec_name

POLICIES = ("cascade", "quorum", "all", "single")
#: the quantiles of the acceptance statistic a cascade's default grid takes
GRID_QUANTILES = tuple(q / 10 for q in range(11))


@dataclass(frozen=True)
class Setting:
    """One point of a sweep: its label, its threshold, the ensemble settings it sets and the backends it
    calls (with their settings)."""

    label: str
    threshold: float | int | str | None
    ensemble: Mapping[str, Any]
    backends: Mapping[str, BackendSettings]


@dataclass(frozen=True)
class CurvePoint:
    """What one setting did over the pool.

    Attributes:
        win_rate: selection win rate of the chosen answers, ``mean(pref - 1) x 100`` (a failed request: 0).
        cost: mean cost per instruction (the answered calls, priced as the engine prices them).
        calls: mean answered calls per instruction; ``cancelled``: mean calls cancelled by a quorum.
        latency_p50 / latency_p95: simulated seconds to the decision (the latency proxy; ranking not counted).
        stops: how many requests ended for each reason (the engine's ``policy.stop``).
        failed: requests with fewer answers than ``min_successes``.
    """

    setting: Setting
    win_rate: float
    cost: float
    calls: float
    cancelled: float
    latency_p50: float
    latency_p95: float
    stops: dict[str, int] = field(default_factory=dict)
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.setting.label,
            "threshold": self.setting.threshold,
            "settings": dict(self.setting.ensemble),
            "backends": {n: s.tier for n, s in self.setting.backends.items()},
            "win_rate": round(self.win_rate, 3),
            "cost": self.cost,
            "calls": round(self.calls, 3),
            "cancelled": round(self.cancelled, 3),
            "latency_p50": round(self.latency_p50, 3),
            "latency_p95": round(self.latency_p95, 3),
            "stops": dict(self.stops),
            "failed": self.failed,
        }


@dataclass(frozen=True)
class Calibration:
    """A policy's curve with the ranker, the same with the oracle (None when the ranker is the oracle), and
    the baselines (``best single``, ``call everything``, ``oracle, call everything``)."""

    policy: str
    ranker: str
    n_instructions: int
    points: tuple[CurvePoint, ...]
    oracle_points: tuple[CurvePoint, ...] | None
    baselines: Mapping[str, CurvePoint]
    table: PriceTable
    tiers: Mapping[str, int]
    base_settings: Mapping[str, Any]
    rankings: int = 0  # distinct rankings the ranker computed


def _measure(
    setting: Setting,
    records: Sequence[EvalRecord],
    answers: Sequence[Mapping[str, KnownAnswer]],
    ranker: Ranker,
    base: Mapping[str, Any],
    *,
    on_accept: Callable[[str, EnsembleOutcome], Any] | None = None,
    progress: Any = None,
) -> CurvePoint:
    config = EnsembleConfig(**{**base, **setting.ensemble})
    engine = Ensemble(ranker, config=config, backends=dict(setting.backends))
    wins: list[float] = []
    costs: list[float] = []
    calls: list[int] = []
    cancelled: list[int] = []
    seconds: list[float] = []
    stops: dict[str, int] = {}
    failed = 0
    for record, known in zip(records, answers, strict=True):
        chosen = {n: known[n] for n in setting.backends}
        hook = None if on_accept is None else (lambda o, p=record.instruction: on_accept(p, o))
        sim = simulate(engine, record.instruction, chosen, on_accept=hook)
        if sim.outcome is None:
            failed += 1
            wins.append(0.0)
            stop = "failed: fewer answers than min_successes"
        else:
            wins.append((known[sim.outcome.best.backend].pref - 1.0) * 100)
            stop = sim.outcome.policy.stop if sim.outcome.policy is not None else ""
        stops[stop] = stops.get(stop, 0) + 1
        costs.append(sim.cost)
        calls.append(sum(r.ok for r in sim.records))
        cancelled.append(sum(r.cancelled is not None for r in sim.records))
        seconds.append(sim.latency_s)
        if progress is not None:
            progress.update(1)
    return CurvePoint(
        setting,
        win_rate=float(np.mean(wins)),
        cost=float(np.mean(costs)),
        calls=float(np.mean(calls)),
        cancelled=float(np.mean(cancelled)),
        latency_p50=float(np.percentile(seconds, 50)),
        latency_p95=float(np.percentile(seconds, 95)),
        stops=dict(sorted(stops.items(), key=lambda kv: -kv[1])),
        failed=failed,
    )


def acceptance_stat(ranker: Ranker, prompt: str, outcome: EnsembleOutcome) -> float:
    """The value the acceptance rule compares with ``accept_score`` (for the grid only: the decisions are
    the engine's): an absolute ranker's top score; else the top answer's smallest both-order margin over
    the other answers of its tier (-inf when it has none: a lone pairwise candidate never accepts)."""
    blend = outcome.blend
    if getattr(ranker, "absolute_scores", False):
        return float(blend.scores[blend.best])
    peers = accept_peers(outcome)
    if not peers:
        return -math.inf
    best = blend.best
    if blend.ranking.matrix is not None:
        m = blend.ranking.matrix
        return float(min(m[best, j] - m[j, best] for j in peers))
    pairs = [[blend.candidates[best], blend.candidates[j]] for j in peers]
    margins = []
    for r in ranker.rank([prompt] * len(pairs), pairs, strategy="full"):
        margins.append(float(r.matrix[0, 1] - r.matrix[1, 0]) if r.matrix is not None else float(r.scores[0] - r.scores[1]))
    return min(margins)


def _floor(x: float, digits: int = 4) -> float:
    """``x`` rounded down: a threshold at a measured value still accepts it (the rule is ``>=``)."""
    return math.floor(x * 10**digits) / 10**digits


def _tiered(table: PriceTable, tiers: Mapping[str, int]) -> dict[str, BackendSettings]:
    return {n: m.settings(tier=tiers[n]) for n, m in table.models.items()}


def _flat(table: PriceTable, names: Sequence[str]) -> dict[str, BackendSettings]:
    return {n: table.models[n].settings(tier=1) for n in names}


def _cascade(
    table: PriceTable,
    tiers: Mapping[str, int],
    thresholds: Sequence[float | None] | None,
    measure: Callable[..., CurvePoint],
    ranker: Ranker,
) -> list[CurvePoint]:
    backends = _tiered(table, tiers)
    if len(set(tiers.values())) < 2:
        raise ValueError(
            "--policy cascade needs models in at least two tiers; the price table puts every model in tier "
            f"{next(iter(tiers.values()))}: give the cheaper models tier 1 and the others tier 2"
        )
    if thresholds is not None:
        grid: list[float | None] = list(thresholds)
        return [measure(Setting(_label(t), t, {"accept_score": t}, backends)) for t in grid]
    stats: list[float] = []
    # first pass: no tier is ever accepted (every tier runs and is ranked); the statistic of each judged tier
    never_probe = 1e300
    probe = measure(
        Setting("probe", never_probe, {"accept_score": never_probe}, backends),
        on_accept=lambda prompt, outcome: stats.append(acceptance_stat(ranker, prompt, outcome)),
    )
    finite = [s for s in stats if math.isfinite(s)]
    grid = [None]
    if finite:
        grid += sorted({_floor(float(np.quantile(finite, q, method="lower"))) for q in GRID_QUANTILES})
    never = _floor(max(finite)) + 1.0 if finite else 1.0
    points = [measure(Setting(_label(t), t, {"accept_score": t}, backends)) for t in grid]
    never_point = CurvePoint(
        Setting(f"{never:g} (never accepts)", never, {"accept_score": never}, backends),
        probe.win_rate, probe.cost, probe.calls, probe.cancelled, probe.latency_p50, probe.latency_p95,
        probe.stops, probe.failed,
    )  # fmt: skip
    return [*points, never_point]


def _label(t: float | None) -> str:
    return "None (accept if answered)" if t is None else f"{t:g}"


def sweep(
    policy: str,
    table: PriceTable,
    tiers: Mapping[str, int],
    measure: Callable[..., CurvePoint],
    ranker: Ranker,
    thresholds: Sequence[float | None] | None = None,
) -> list[CurvePoint]:
    """The curve of ``policy`` (see the module docstring)."""
    names = list(table.models)
    if policy == "cascade":
        return _cascade(table, tiers, thresholds, measure, ranker)
    if thresholds is not None:
        raise ValueError(f"--thresholds sets a cascade's accept_score grid; --policy {policy} sweeps its own")
    if policy == "quorum":
        return [measure(Setting(f"quorum={k}", k, {"quorum": k}, _flat(table, names))) for k in range(1, len(names) + 1)]
    by_price = sorted(names, key=lambda n: (table.price(n), names.index(n)))
    if policy == "all":
        return [
            measure(Setting(f"{m} cheapest", m, {}, _flat(table, by_price[:m]))) for m in range(1, len(names) + 1)
        ]
    if policy == "single":
        return [measure(Setting(n, n, {}, _flat(table, [n]))) for n in by_price]
    raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")


def calibrate(
    records: Sequence[EvalRecord],
    table: PriceTable,
    ranker: Ranker,
    *,
    policy: str,
    thresholds: Sequence[float | None] | None = None,
    settings: Mapping[str, Any] | None = None,
    show_progress: bool = False,
) -> Calibration:
    """Simulate ``policy`` over ``records`` with ``ranker`` (and with the oracle), sweeping its threshold.

    Args:
        records: the pool's instructions (AlpacaEval pool records).
        table: the models of the ensemble, their prices, tiers and latency proxy.
        ranker: any ranker; an :class:`OracleRanker` makes the oracle's curve the only one.
        policy: one of :data:`POLICIES`.
        thresholds: a cascade's ``accept_score`` grid (None: from the pool, see the module docstring).
        settings: other ensemble settings every simulated request uses (default: the engine's defaults).
        show_progress: a progress bar over the simulated requests.

    Raises:
        ValueError: an unknown policy, a price table that names models the pool lacks, tiers a cascade
            cannot use.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if not records:
        raise ValueError("no instructions to calibrate on")
    table.check_models(records[0].models, "the pool")
    base = dict(settings or {})
    EnsembleConfig(**base)  # a wrong setting fails here, named
    answers = [known_answers(r, table) for r in records]
    tiers = table.tiers()
    oracle = ranker if isinstance(ranker, OracleRanker) else OracleRanker(records)
    memo = MemoRanker(ranker)
    with tqdm(disable=not show_progress, desc=f"calibrate {policy}", unit="req") as bar:

        def measure_with(r: Ranker) -> Callable[..., CurvePoint]:
            def measure(setting: Setting, **kw: Any) -> CurvePoint:
                bar.total = (bar.total or 0) + len(records)
                return _measure(setting, records, answers, r, base, progress=bar, **kw)

            return measure

        points = sweep(policy, table, tiers, measure_with(memo), memo, thresholds)
        oracle_points = None
        if oracle is not ranker:
            oracle_memo = MemoRanker(oracle)
            oracle_points = tuple(sweep(policy, table, tiers, measure_with(oracle_memo), oracle_memo, None))
        everything = _flat(table, list(table.models))
        best = max(table.models, key=lambda n: (np.mean([a[n].pref for a in answers]), -table.price(n)))
        baselines = {
            "best single": measure_with(memo)(Setting(f"best single ({best})", best, {}, _flat(table, [best]))),
            "call everything": measure_with(memo)(Setting("call everything", None, {}, everything)),
            "oracle, call everything": measure_with(MemoRanker(oracle))(
                Setting("oracle, call everything", None, {}, everything)
            ),
        }
    return Calibration(
        policy=policy,
        ranker=spec_name(ranker),
        n_instructions=len(records),
        points=tuple(points),
        oracle_points=oracle_points,
        baselines=baselines,
        table=table,
        tiers=tiers,
        base_settings=base,
        rankings=memo.calls,
    )

"""``blender_core.evaluation.calibrate``: the simulation takes the engine's decisions (checked against real
``Ensemble`` runs over fake backends), the oracle, the sweeps, the recommendation and its config snippet."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blender_core.data.alpacaeval import EvalRecord
from blender_core.ensemble import BackendAnswer, Ensemble, EnsembleConfig
from blender_core.evaluation.calibrate import (
    MemoRanker,
    OracleRanker,
    PriceTable,
    calibrate,
    config_snippet,
    known_answers,
    recommend,
    simulate,
    token_count,
)
from blender_core.evaluation.calibrate.prices import parse_prices
from blender_core.evaluation.calibrate.report import build_report, write_report
from blender_core.evaluation.calibrate.sweep import CurvePoint
from blender_core.ranking.interface import Ranker

WORDS = "the answer is a good one because it explains why and how with an example of code and data".split()
MODELS = ("m1", "m2", "m3", "m4")
# well apart in time (first_token_s), so that real sleeping backends arrive in the simulated order
PRICES = {
    "models": {
        "m1": {"price_in": 0.1, "price_out": 0.2, "tier": 1, "first_token_s": 0.0, "tokens_per_s": 1e4},
        "m2": {"price_in": 0.2, "price_out": 0.4, "tier": 1, "first_token_s": 0.15, "tokens_per_s": 1e4},
        "m3": {"price_in": 1.0, "price_out": 3.0, "tier": 2, "first_token_s": 0.3, "tokens_per_s": 1e4},
        "m4": {"price_in": 5.0, "price_out": 15.0, "tier": 3, "first_token_s": 0.45, "tokens_per_s": 1e4},
    }
}


def _pool(n: int = 6, seed: int = 0) -> list[EvalRecord]:
    rng = random.Random(seed)
    records = []
    for k in range(n):
        outputs = tuple(" ".join(rng.choices(WORDS, k=rng.randint(3, 25))) for _ in MODELS)
        prefs = tuple(round(1 + rng.random(), 3) for _ in MODELS)
        records.append(EvalRecord(k, f"instruction {k}: {rng.choice(WORDS)}?", "ref", MODELS, outputs, prefs))
    return records


@pytest.fixture
def table() -> PriceTable:
    return parse_prices(PRICES)


def _real_calls(record: EvalRecord, table: PriceTable, names: Any) -> dict[str, Any]:
    """Fake backends: each answers what the pool says, with its token usage, after no time."""
    known = known_answers(record, table)
    return {n: (lambda a=known[n]: BackendAnswer(a.text, usage=a.usage)) for n in names}


def _areal_calls(record: EvalRecord, table: PriceTable, names: Any) -> dict[str, Any]:
    """Fake async backends: each answers after its simulated latency (really sleeping)."""
    known = known_answers(record, table)

    def call(a: Any) -> Any:
        async def answer() -> BackendAnswer:
            await asyncio.sleep(a.latency_s)
            return BackendAnswer(a.text, usage=a.usage)

        return answer

    return {n: call(known[n]) for n in names}


def _real_point(point: CurvePoint, records: list[EvalRecord], table: PriceTable, ranker: Ranker) -> tuple[float, float]:
    """The point's win rate and cost, from real engine runs."""
    engine = Ensemble(ranker, config=EnsembleConfig(**point.setting.ensemble), backends=dict(point.setting.backends))
    wins, costs = [], []
    for r in records:
        outcome = engine.run(r.instruction, _real_calls(r, table, point.setting.backends))
        wins.append((r.prefs[MODELS.index(outcome.best.backend)] - 1) * 100)
        assert outcome.cost is not None  # every backend is priced
        costs.append(outcome.cost)
    return float(np.mean(wins)), float(np.mean(costs))


def test_token_count_is_a_quarter_of_the_characters_rounded_up() -> None:
    assert [token_count(t) for t in ("", "abc", "abcd", "abcde", "x" * 401)] == [1, 1, 1, 2, 101]


@pytest.mark.parametrize("ranker_kind", ["tiny", "oracle"])
def test_every_cascade_point_is_what_the_engine_does(ranker_kind: str, tiny_ranker: Ranker, table: PriceTable) -> None:
    """Each threshold's win rate and cost equal real ``Ensemble`` runs over fake backends with the same
    settings (the tiny random PairRM: pairwise acceptance on its matrix; the oracle: absolute scores)."""
    records = _pool()
    ranker = tiny_ranker if ranker_kind == "tiny" else OracleRanker(records)
    result = calibrate(records, table, ranker, policy="cascade")
    stops = set()
    for point in result.points:
        assert (point.win_rate, point.cost) == pytest.approx(_real_point(point, records, table, ranker))
        stops |= set(point.stops)
    # the sweep reaches both ends: a tier-1 answer and every tier
    assert {"tier 1 accepted", "the last tier answered"} <= stops


def test_the_choice_of_each_request_matches_the_engine(tiny_ranker: Ranker, table: PriceTable) -> None:
    """Request by request: the chosen backend, the cost, the tiers run and why it stopped."""
    records = _pool()
    backends = {n: m.settings() for n, m in table.models.items()}
    for accept_score in (None, -1.0, 0.0, 1e-4, 10.0):
        engine = Ensemble(MemoRanker(tiny_ranker), accept_score=accept_score, backends=backends)
        for r in records:
            sim = simulate(engine, r.instruction, known_answers(r, table))
            real = engine.run(r.instruction, _real_calls(r, table, backends))
            assert sim.outcome is not None
            assert real.policy is not None
            assert sim.outcome.policy is not None
            assert sim.outcome.best.backend == real.best.backend
            assert sim.cost == pytest.approx(real.cost)
            assert sim.outcome.policy.tiers == real.policy.tiers
            assert sim.outcome.policy.stop == real.policy.stop


@pytest.mark.parametrize("quorum", [1, 2, 3])
async def test_a_quorum_sees_the_answers_the_engine_sees(quorum: int, tiny_ranker: Ranker, table: PriceTable) -> None:
    """A quorum over backends that really sleep their simulated latency: the same answers are in, the same
    calls cancelled, the same choice and cost."""
    records = _pool(3)
    backends = {n: m.settings(tier=1) for n, m in table.models.items()}
    engine = Ensemble(tiny_ranker, quorum=quorum, backends=backends)
    for r in records:
        sim = simulate(engine, r.instruction, known_answers(r, table))
        real = await engine.arun(r.instruction, _areal_calls(r, table, backends))
        assert sim.outcome is not None
        assert real.policy is not None
        assert [x.backend for x in sim.records if x.ok] == [x.backend for x in real.records if x.ok]
        assert sum(x.ok for x in sim.records) == quorum
        assert [x.cancelled for x in sim.records] == [x.cancelled for x in real.records]
        assert sim.outcome.best.backend == real.best.backend
        assert sim.cost == pytest.approx(real.cost)
        fastest = sorted(known_answers(r, table).values(), key=lambda a: a.latency_s)[quorum - 1]
        assert sim.latency_s == pytest.approx(fastest.latency_s)


async def test_a_call_slower_than_the_timeout_times_out_as_in_the_engine(table: PriceTable) -> None:
    records = _pool(2)
    backends = {n: table.models[n].settings(tier=1) for n in ("m1", "m3")}  # m3 answers after 0.3 s
    engine = Ensemble(OracleRanker(records), timeout=0.2, backends=backends)
    for r in records:
        known = known_answers(r, table)
        sim = simulate(engine, r.instruction, {n: known[n] for n in backends})
        real = await engine.arun(r.instruction, _areal_calls(r, table, backends))
        assert [x.error for x in sim.records] == [x.error for x in real.records]
        assert sim.records[1].error == "TimeoutError: no answer within 0.2 s"
        assert sim.outcome is not None
        assert sim.outcome.best.backend == real.best.backend == "m1"


def test_the_oracle_ranks_by_the_judge_and_bounds_every_policy(table: PriceTable) -> None:
    records = _pool()
    oracle = OracleRanker(records)
    (ranking,) = oracle.rank([records[0].instruction], [list(records[0].outputs)])
    assert ranking.best == int(np.argmax(records[0].prefs))
    assert oracle.absolute_scores
    result = calibrate(records, table, oracle, policy="quorum")
    assert result.oracle_points is None  # the ranker is the oracle: one curve
    best_of_all = np.mean([(max(r.prefs) - 1) * 100 for r in records])
    assert result.baselines["call everything"].win_rate == pytest.approx(best_of_all)
    assert result.baselines["oracle, call everything"].win_rate == pytest.approx(best_of_all)
    assert all(p.win_rate <= best_of_all + 1e-9 for p in result.points)
    with pytest.raises(ValueError, match="knows no judge preference"):
        oracle.rank(["another instruction"], [["x"]])


def test_the_sweeps_and_baselines(tiny_ranker: Ranker, table: PriceTable) -> None:
    records = _pool()
    single = calibrate(records, table, tiny_ranker, policy="single")
    for point in single.points:  # each model alone: its own mean preference and its own cost
        (name,) = point.setting.backends
        k = MODELS.index(name)
        assert point.win_rate == pytest.approx(np.mean([(r.prefs[k] - 1) * 100 for r in records]))
        usage = [known_answers(r, table)[name].usage for r in records]
        assert point.cost == pytest.approx(np.mean([table.models[name].cost(u) or math.nan for u in usage]))
    best = max(single.points, key=lambda p: p.win_rate)
    assert single.baselines["best single"].win_rate == pytest.approx(best.win_rate)
    every = calibrate(records, table, tiny_ranker, policy="all")
    assert [len(p.setting.backends) for p in every.points] == [1, 2, 3, 4]
    assert every.points[-1].cost == pytest.approx(every.baselines["call everything"].cost)
    assert every.oracle_points is not None
    assert every.oracle_points[-1].win_rate >= every.points[-1].win_rate


def test_the_recommendation_meets_its_target(tiny_ranker: Ranker, table: PriceTable) -> None:
    result = calibrate(_pool(), table, OracleRanker(_pool()), policy="all")
    costs = sorted(p.cost for p in result.points)
    target = (costs[1] + costs[2]) / 2
    rec = recommend(result, target_cost=target)
    within = [p for p in result.points if p.cost <= target]
    assert rec.met
    assert rec.point.win_rate == max(p.win_rate for p in within)
    assert rec.point.cost <= target
    quality = result.points[-1].win_rate
    rec = recommend(result, target_quality=quality)
    assert rec.met
    assert rec.point.cost == min(p.cost for p in result.points if p.win_rate >= quality)
    rec = recommend(result, target_quality=101.0)
    assert not rec.met
    assert "win rate >= 101" in rec.target
    default = recommend(result)
    assert default.point.win_rate >= result.baselines["best single"].win_rate
    with pytest.raises(ValueError, match="not both"):
        recommend(result, target_cost=1.0, target_quality=1.0)


def _toml(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(text)


@pytest.mark.parametrize("policy", ["cascade", "quorum", "all"])
def test_the_snippet_is_a_config_the_server_accepts_as_is(
    policy: str, tiny_reference_ckpt: Path, table: PriceTable
) -> None:
    """The recommended setting's lines parse through the server's config (``[ensemble]`` is
    EnsembleSettings) and set what the point was measured with."""
    from blender_core.app.serve.config import parse_config
    from blender_core.ranking import load_ranker

    records = _pool()
    result = calibrate(records, table, load_ranker(str(tiny_reference_ckpt)), policy=policy)
    for point in result.points:
        rec = recommend(result, target_cost=point.cost)
        config = parse_config(_toml(config_snippet(result, rec)), "the snippet")
        assert config.ensemble.ranker == str(tiny_reference_ckpt)
        for name, value in rec.point.setting.ensemble.items():
            assert getattr(config.ensemble, name) == value
        assert [b.name for b in config.backends] == list(rec.point.setting.backends)
        for b in config.backends:
            want = rec.point.setting.backends[b.name]
            assert (b.tier, b.price_in, b.price_out) == (want.tier, want.price_in, want.price_out)


def test_an_oracle_snippet_has_no_ranker_and_still_parses(table: PriceTable) -> None:
    from blender_core.app.serve.config import parse_config

    records = _pool()
    result = calibrate(records, table, OracleRanker(records), policy="cascade")
    text = config_snippet(result, recommend(result))
    assert "cannot be deployed" in text
    assert parse_config(_toml(text)).ensemble.ranker is None


def test_the_memo_ranks_each_set_once(tiny_ranker: Ranker) -> None:
    memo = MemoRanker(tiny_ranker)
    a = memo.rank(["p", "p"], [["x", "y"], ["x", "y"]])
    b = memo.rank(["p", "q"], [["x", "y"], ["x", "y"]])
    assert memo.calls == 2
    assert a[0] is a[1] is b[0]
    assert b[1].scores.tolist() == tiny_ranker.rank(["q"], [["x", "y"]])[0].scores.tolist()


@pytest.mark.parametrize(
    ("prices", "match"),
    [
        ({"models": {"m1": {"price_in": 1.0}}}, "needs price_in and price_out"),
        ({"models": {"m1": {"price_in": 1, "price_out": 1, "speed": 3}}}, r"models\.'m1': speed: Extra inputs"),
        ({"models": {"m1": {"price_in": 1, "price_out": 1, "tier": 1}, "m2": {"price_in": 1, "price_out": 1}}}, "give 'm2' a tier too"),
        ({"models": {"m1": {"price_in": 1, "price_out": 1, "samples": 2}}}, "one answer per model"),
        ({"prices": {}}, r'one \[models\."NAME"\] table per model'),
    ],
)
def test_a_wrong_price_table_says_what_to_fix(prices: Mapping[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_prices(prices)


def test_prices_for_models_the_pool_lacks_are_refused(table: PriceTable) -> None:
    records = [EvalRecord(0, "q", "r", ("m1", "m2"), ("a", "b"), (1.0, 2.0))]
    with pytest.raises(ValueError, match=r"prices 'm3', 'm4', which the pool does not hold; its models are m1, m2"):
        calibrate(records, table, OracleRanker(records), policy="all")


def test_without_tiers_the_cheaper_half_is_tier_1() -> None:
    models = {n: {"price_in": p, "price_out": p} for n, p in (("a", 3.0), ("b", 1.0), ("c", 2.0), ("d", 9.0))}
    assert parse_prices({"models": models}).tiers() == {"a": 2, "b": 1, "c": 1, "d": 2}
    flat = parse_prices({"models": {n: {**m, "tier": 1} for n, m in models.items()}})
    records = [EvalRecord(0, "q", "r", tuple(models), ("w", "x", "y", "z"), (1.0, 1.2, 1.4, 2.0))]
    with pytest.raises(ValueError, match="at least two tiers"):
        calibrate(records, flat, OracleRanker(records), policy="cascade")


def test_the_report_files(tmp_path: Path, table: PriceTable) -> None:
    records = _pool()
    result = calibrate(records, table, OracleRanker(records), policy="cascade")
    report = build_report(result, recommend(result), command="blender-llm calibrate ...")
    folder = write_report(report, tmp_path / "out")
    md = (folder / "report.md").read_text()
    assert "| setting | win rate | cost / instr." in md
    assert md.count("\n| ") >= len(result.points) + 3
    assert "```toml\n# blender-llm calibrate --policy cascade" in md
    assert (folder / "curve.png").stat().st_size > 1000
    assert math.isclose(report["points"][0]["cost"], result.points[0].cost)

"""Adaptive ensembles through the engine alone: quorum (pace, cancellation, grace), cascades (acceptance by
absolute score, by agreement on a matrix or on pairs, a lone candidate, fallback), samples, Mixture-of-Agents
layers, cost and max_cost; sync and async, streaming."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blender_core.ensemble import (
    BackendAnswer,
    BackendRequest,
    BackendSettings,
    Blocking,
    Delta,
    Ensemble,
    EnsembleConfig,
    EnsembleError,
    EnsembleOutcome,
)
from blender_core.ranking import load_ranker
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from tests.helpers.core_fakes import LengthRanker, ScriptedFuser

U = {"input_tokens": 1000, "output_tokens": 500}


class Backend:
    """A fake backend call that records each request and answers ``text`` (its sample and references
    shown in the answer) after ``delay`` seconds; ``hang`` waits for ``release`` instead."""

    def __init__(self, text: str, *, delay: float = 0.0, error: str | None = None, hang: bool = False) -> None:
        self.text, self.delay, self.error, self.hang = text, delay, error, hang
        self.requests: list[BackendRequest] = []
        self.cancelled = 0
        self.release = threading.Event()

    def _answer(self, request: BackendRequest) -> BackendAnswer:
        if self.error is not None:
            raise RuntimeError(self.error)
        text = self.text if request.sample == 1 else f"{self.text} (take {request.sample})"
        if request.references:
            text = f"{text} drawing on {len(request.references)}: " + " | ".join(request.references)
        return BackendAnswer(text, usage=U)

    def __call__(self, request: BackendRequest) -> BackendAnswer:
        self.requests.append(request)
        if self.hang:
            self.release.wait(30)
        time.sleep(self.delay)
        return self._answer(request)

    async def acall(self, request: BackendRequest) -> BackendAnswer:
        self.requests.append(request)
        try:
            await asyncio.sleep(30 if self.hang else self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return self._answer(request)


class RewardLike(LengthRanker):
    """Absolute scores (as a reward model's): the length."""

    absolute_scores = True


def engine(ranker: Any = None, fuser: Any = None, backends: dict[str, BackendSettings] | None = None, **settings: Any) -> Ensemble:
    return Ensemble(ranker or LengthRanker(), fuser, EnsembleConfig(**settings), backends=backends)


def fakes(**specs: dict[str, Any]) -> dict[str, Backend]:
    return {name: Backend(**spec) for name, spec in specs.items()}


def sync_calls(backends: dict[str, Backend]) -> dict[str, Callable[[BackendRequest], BackendAnswer]]:
    return dict(backends)


def async_calls(backends: dict[str, Backend]) -> dict[str, Callable[[BackendRequest], Awaitable[BackendAnswer]]]:
    return {name: b.acall for name, b in backends.items()}


def by_name(outcome: EnsembleOutcome) -> dict[str, dict[str, Any]]:
    return {c["backend"]: c for c in outcome.metadata()["candidates"]}


THREE = {"fast": {"text": "four", "delay": 0.05}, "mid": {"text": "it is four", "delay": 0.1}, "slow": {"text": "four, said slowly", "delay": 3.0}}


# ---------------------------------------------------------------------------- quorum
def test_a_quorum_answers_at_the_pace_of_the_kth_fastest_and_cancels_the_rest() -> None:
    backends = fakes(**THREE)
    e = engine(quorum=2, timeout=10)
    start = time.perf_counter()
    outcome = e.run("2+2?", sync_calls(backends))
    assert time.perf_counter() - start < 1.5  # not the slow one's 3 s
    meta = by_name(outcome)
    assert meta["slow"]["cancelled"] == "a quorum of 2 answers was reached"
    assert meta["slow"]["error"] is None  # cancelled is not a failure
    assert outcome.best.backend == "mid"
    assert outcome.metadata()["policy"]["cancelled"] == 1
    assert e.threads.stuck("slow") == 0  # still within its timeout: running, not stuck


async def test_an_async_quorum_cancels_the_running_calls() -> None:
    backends = fakes(**THREE)
    e = engine(quorum=2, timeout=10)
    start = time.perf_counter()
    outcome = await e.arun("2+2?", async_calls(backends))
    assert time.perf_counter() - start < 1.5
    assert backends["slow"].cancelled == 1  # its coroutine was cancelled (an HTTP request is closed)
    assert by_name(outcome)["slow"]["cancelled"]


@pytest.mark.parametrize("run", ["sync", "async"])
def test_quorum_grace_waits_for_answers_in_time(run: str) -> None:
    specs = {**THREE, "slow": {"text": "four, said a bit later", "delay": 0.3}}
    backends = fakes(**specs)
    e = engine(quorum=2, quorum_grace=1.0, timeout=10)
    if run == "sync":
        outcome = e.run("2+2?", sync_calls(backends))
    else:
        outcome = asyncio.run(e.arun("2+2?", async_calls(backends)))
    assert outcome.best.backend == "slow"  # came within the grace, and is the longest
    assert outcome.metadata()["policy"]["cancelled"] == 0


def test_a_detached_thread_counts_as_stuck_once_past_its_timeout() -> None:
    hung = Backend("never", hang=True)
    backends = {"ok1": Backend("a"), "ok2": Backend("bb"), "hung": hung}
    e = engine(quorum=2, timeout=0.3, max_stuck_calls=1)
    try:
        first = e.run("q", sync_calls(backends))
        assert by_name(first)["hung"]["cancelled"]
        time.sleep(0.4)  # past its timeout, still running: now a stuck call
        second = e.run("q", sync_calls(backends))
        assert by_name(second)["hung"]["error"].startswith("BackendStuck: skipped without calling it")
        assert len(hung.requests) == 1
    finally:
        hung.release.set()


def test_a_quorum_below_min_successes_is_refused() -> None:
    with pytest.raises(ValueError, match=r"quorum \(1\) must be >= min_successes \(2\)"):
        EnsembleConfig(quorum=1, min_successes=2)


# ---------------------------------------------------------------------------- cascades
TIERS = {"small": BackendSettings(tier=1), "medium": BackendSettings(tier=1), "large": BackendSettings(tier=2)}
CASCADE = {"small": {"text": "4"}, "medium": {"text": "four"}, "large": {"text": "The answer is four."}}


@pytest.mark.parametrize("run", ["sync", "async"])
def test_an_accepted_tier_never_calls_the_next(run: str) -> None:
    backends = fakes(**CASCADE)
    e = engine(RewardLike(), backends=TIERS, accept_score=3.0)  # "four" scores 4 >= 3
    outcome = e.run("2+2?", sync_calls(backends)) if run == "sync" else asyncio.run(e.arun("2+2?", async_calls(backends)))
    assert backends["large"].requests == []
    assert outcome.best.backend == "medium"
    assert outcome.metadata()["policy"] == {"tiers": [1], "layers": 1, "stop": "tier 1 accepted", "cancelled": 0, "cost": None}


def test_a_failed_acceptance_escalates_and_ranks_every_answer_together() -> None:
    backends = fakes(**CASCADE)
    outcome = engine(RewardLike(), backends=TIERS, accept_score=10.0).run("2+2?", sync_calls(backends))
    assert len(backends["large"].requests) == 1
    assert [r.backend for r in outcome.successes] == ["small", "medium", "large"]
    assert outcome.best.backend == "large"
    meta = outcome.metadata()
    assert meta["policy"]["tiers"] == [1, 2]
    assert (meta["candidates"][2]["tier"], meta["candidates"][0]["tier"]) == (2, 1)


def test_without_accept_score_a_later_tier_is_a_fallback() -> None:
    backends = fakes(small={"text": "4", "error": "down"}, medium={"text": "x", "error": "down"}, large={"text": "four"})
    outcome = engine(backends=TIERS).run("2+2?", sync_calls(backends))  # tier 1 gave nothing: escalate
    assert outcome.best.backend == "large"
    accepted = fakes(**CASCADE)
    engine(backends=TIERS).run("2+2?", sync_calls(accepted))
    assert accepted["large"].requests == []  # tier 1 answered: accepted


def test_a_hung_tier_one_backend_does_not_stop_escalation() -> None:
    backends = fakes(small={"text": "4", "hang": True}, medium={"text": "x", "error": "down"}, large={"text": "four"})
    try:
        start = time.perf_counter()
        outcome = engine(backends=TIERS, timeout=0.3).run("2+2?", sync_calls(backends))
        assert time.perf_counter() - start < 2.0
        assert outcome.best.backend == "large"
        assert by_name(outcome)["small"]["error"] == "TimeoutError: no answer within 0.3 s"
    finally:
        backends["small"].release.set()


def test_pairwise_agreement_on_pairs_when_the_ranking_has_no_matrix() -> None:
    # the length ranker has no matrix: the top is checked against each peer of its tier, both orders
    backends = fakes(**CASCADE)
    engine(backends=TIERS, accept_score=2.0).run("2+2?", sync_calls(backends))  # "four" beats "4" by 3
    assert backends["large"].requests == []
    backends = fakes(**CASCADE)
    engine(backends=TIERS, accept_score=4.0).run("2+2?", sync_calls(backends))  # ... but not by 4
    assert len(backends["large"].requests) == 1


def test_pairwise_agreement_on_the_matrix(tiny_ranker: PairRanker) -> None:
    backends = fakes(**CASCADE)
    engine(tiny_ranker, backends=TIERS, accept_score=-1e9).run("2+2?", sync_calls(backends))
    assert backends["large"].requests == []
    backends = fakes(**CASCADE)
    outcome = engine(tiny_ranker, backends=TIERS, accept_score=1e9).run("2+2?", sync_calls(backends))
    assert len(backends["large"].requests) == 1
    assert outcome.blend.ranking.matrix is not None


def test_a_lone_candidate_tier_escalates_with_a_pairwise_ranker_but_not_with_absolute_scores() -> None:
    tiers = {"solo": BackendSettings(tier=1), "large": BackendSettings(tier=2)}
    backends = fakes(solo={"text": "four"}, large={"text": "The answer is four."})
    engine(backends=tiers, accept_score=0.0).run("2+2?", sync_calls(backends))
    assert len(backends["large"].requests) == 1  # nothing to agree with
    backends = fakes(solo={"text": "four"}, large={"text": "The answer is four."})
    engine(RewardLike(), backends=tiers, accept_score=3.0).run("2+2?", sync_calls(backends))
    assert backends["large"].requests == []


# ---------------------------------------------------------------------------- cost
PRICED = {name: BackendSettings(tier=s.tier, price_in=1.0, price_out=2.0) for name, s in TIERS.items()}


def test_each_call_and_the_request_are_priced() -> None:
    outcome = engine(backends=PRICED).run("2+2?", sync_calls(fakes(**CASCADE)))
    meta = outcome.metadata()
    per_call = (1000 * 1.0 + 500 * 2.0) / 1e6
    assert [c["cost"] for c in meta["candidates"][:2]] == [pytest.approx(per_call)] * 2
    assert meta["cost"] == pytest.approx(2 * per_call)  # tier 1 only: accepted (no accept_score)


def test_max_cost_stops_the_escalation_and_says_so() -> None:
    backends = fakes(**CASCADE)
    outcome = engine(RewardLike(), backends=PRICED, accept_score=100.0, max_cost=0.001).run("2+2?", sync_calls(backends))
    assert backends["large"].requests == []
    assert outcome.metadata()["policy"]["stop"] == "max_cost 0.001 spent after tier 1"


# ---------------------------------------------------------------------------- samples
@pytest.mark.parametrize("run", ["sync", "async"])
def test_samples_are_candidates_named_backend_k_with_distinct_seeds(run: str) -> None:
    backends = fakes(strong={"text": "four"}, other={"text": "4"})
    e = engine(backends={"strong": BackendSettings(samples=3)})
    outcome = e.run("2+2?", sync_calls(backends)) if run == "sync" else asyncio.run(e.arun("2+2?", async_calls(backends)))
    assert [r.backend for r in outcome.records] == ["strong#1", "strong#2", "strong#3", "other"]
    assert sorted(r.seed for r in backends["strong"].requests) == [1, 2, 3]  # type: ignore[type-var]
    assert backends["other"].requests[0].seed is None
    assert outcome.best.backend in ("strong#2", "strong#3")


def test_a_sample_name_that_is_another_backend_is_refused() -> None:
    with pytest.raises(ValueError, match=r"names its answers 'm#2', which is another backend's name"):
        engine(backends={"m": BackendSettings(samples=2), "m#2": BackendSettings()})


# ---------------------------------------------------------------------------- layers
@pytest.mark.parametrize("run", ["sync", "async"])
def test_a_layer_sees_the_previous_layers_top_answers(run: str) -> None:
    backends = fakes(a={"text": "four"}, b={"text": "it is 4"}, c={"text": "4"})
    e = engine(fuser=ScriptedFuser(), layers=2, top_k=2)
    outcome = e.run("2+2?", sync_calls(backends)) if run == "sync" else asyncio.run(e.arun("2+2?", async_calls(backends)))
    layer2 = [r for r in backends["a"].requests if r.layer == 2]
    assert layer2[0].references == ("it is 4", "four")  # layer 1's top 2, best first
    assert [r.layer for r in outcome.records] == [1, 1, 1, 2, 2, 2]
    assert all(r.layer == 2 for r in outcome.successes)
    assert outcome.blend.fused
    meta = outcome.metadata()
    assert meta["policy"]["layers"] == 2
    assert [c["layer"] for c in meta["candidates"]] == [1, 1, 1, 2, 2, 2]


def test_a_call_without_a_request_cannot_serve_a_later_layer() -> None:
    with pytest.raises(ValueError, match=r"backend 'a'.s call takes no BackendRequest.*layers > 1"):
        engine(layers=2).run("q", {"a": lambda: BackendAnswer("x"), "b": lambda: BackendAnswer("y")})


def test_a_tool_call_ends_the_layering() -> None:
    tool = BackendAnswer("", rank_text="call get_weather(city=Paris) and more", fusible=False)
    outcome = engine(layers=3).run("weather?", {"tool": lambda r: tool, "text": lambda r: BackendAnswer("sunny")})
    assert outcome.metadata()["policy"]["stop"] == "layer 1's best answer is a tool call: layering ends there"
    assert outcome.metadata()["policy"]["layers"] == 1


def test_tiers_and_layers_do_not_combine() -> None:
    with pytest.raises(ValueError, match="tiers and layers do not combine"):
        engine(layers=2, backends={"a": BackendSettings(tier=2), "b": BackendSettings()})


# ---------------------------------------------------------------------------- streaming, blocking calls, errors
def test_the_answer_streams_once_the_decision_is_made() -> None:
    backends = fakes(**THREE)
    start = time.perf_counter()
    events = list(engine(fuser=ScriptedFuser(), quorum=2, timeout=10).stream("2+2?", sync_calls(backends)))
    assert time.perf_counter() - start < 1.5
    assert isinstance(events[-1], EnsembleOutcome)
    assert all(isinstance(e, Delta) for e in events[:-1])
    assert events[-1].metadata()["policy"]["cancelled"] == 1
    assert events[-1].blend.fused


async def test_blocking_calls_take_requests_too() -> None:
    backends = fakes(a={"text": "four"}, b={"text": "4"})
    outcome = await engine(backends={"a": BackendSettings(samples=2)}).arun(
        "2+2?", {name: Blocking(b) for name, b in backends.items()}  # type: ignore[arg-type]
    )
    assert [r.backend for r in outcome.successes] == ["a#1", "a#2", "b"]


def test_nothing_answered_in_any_tier_names_every_call() -> None:
    backends = fakes(small={"text": "x", "error": "down"}, medium={"text": "y", "error": "down"}, large={"text": "z", "error": "gone"})
    with pytest.raises(EnsembleError, match=r"only 0 of 3 backends answered.*large: RuntimeError: gone"):
        engine(backends=TIERS).run("q", sync_calls(backends))


def test_usage_sums_every_call_of_every_layer() -> None:
    outcome = engine(layers=2).run("q", sync_calls(fakes(a={"text": "x"}, b={"text": "yy"})))
    assert outcome.usage["input_tokens"] == 4 * 1000
    assert np.isfinite(outcome.blend.scores).all()


def test_a_reward_model_accepts_by_its_top_score(tiny_reward_dir: Path) -> None:
    ranker = load_ranker(f"reward:{tiny_reward_dir}")
    assert ranker.absolute_scores
    backends = fakes(**CASCADE)
    outcome = engine(ranker, backends=TIERS, accept_score=-1e9).run("2+2?", sync_calls(backends))
    assert backends["large"].requests == []
    assert outcome.metadata()["policy"]["stop"] == "tier 1 accepted"
    backends = fakes(**CASCADE)
    engine(ranker, backends=TIERS, accept_score=1e9).run("2+2?", sync_calls(backends))
    assert len(backends["large"].requests) == 1

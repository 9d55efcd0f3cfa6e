"""One request of an :class:`~blender_core.ensemble.Ensemble` over answers already known, on a simulated clock.

The engine's own decision path runs: the policy flow (:func:`blender_core.ensemble.policy.flow`: tiers,
quorum rounds, ``max_cost``), the pricing of each call (:func:`blender_core.ensemble.requests.priced`), the
ranking (:meth:`Ensemble.select`) and the acceptance rule (the engine's ``_accepts``). Only the calling of
the backends is replaced, as :meth:`Ensemble.gather` would see it with backends that answer after their
simulated latency (:attr:`KnownAnswer.latency_s`), deterministically:

- a call whose latency reaches ``timeout`` times out (an error, as the engine records it);
- with ``quorum = k``, the round ends when the k-th answer is in, plus ``quorum_grace`` seconds; the calls
  still running then are cancelled (no cost: the engine prices only answers), ties going to call order;
- the request's simulated latency is the sum of its rounds' ends (the ranker's time is not counted).

``tests/core/evaluation/test_calibrate.py`` checks the choice and cost against a real ``Ensemble`` run over
fake backends that sleep.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from blender_core.base.calls import Quorum
from blender_core.ensemble.engine import Ensemble
from blender_core.ensemble.outcome import EnsembleOutcome
from blender_core.ensemble.policy import AcceptRound, CallRound, RankRound, flow
from blender_core.ensemble.records import BackendAnswer, CandidateRecord, EnsembleError
from blender_core.ensemble.requests import priced
from blender_core.ensemble.settings import BackendSettings, EnsembleConfig
from blender_core.evaluation.calibrate.answers import KnownAnswer


@dataclass(frozen=True)
class Simulated:
    """A simulated request: its outcome (None: fewer answers than ``min_successes``, the engine raises),
    every call's record and its simulated seconds to the decision."""

    outcome: EnsembleOutcome | None
    records: tuple[CandidateRecord, ...]
    latency_s: float

    @property
    def cost(self) -> float:
        known = [r.cost for r in self.records if r.cost is not None]
        return sum(known)


def call_round(
    step: CallRound, answers: Mapping[str, KnownAnswer], config: EnsembleConfig
) -> tuple[list[CandidateRecord], float]:
    """The records of one round of calls (in call order, as the engine gives them) and when it ended."""
    timeout = config.timeout
    latency = {cand: answers[req.backend].latency_s for cand, req in step.calls}
    finished = [c for c, _ in step.calls if timeout is None or latency[c] < timeout]
    by_arrival = sorted(finished, key=latency.__getitem__)  # stable: ties in call order
    closes: float | None = None  # when a quorum closes the round
    reason = ""
    if config.quorum is not None and len(by_arrival) >= config.quorum:
        quorum = Quorum(config.quorum, config.quorum_grace)
        reason = quorum.reason
        closes = latency[by_arrival[quorum.size - 1]] + quorum.grace
        answered = set(by_arrival[: quorum.size]) | {c for c in by_arrival[quorum.size :] if latency[c] < closes}
    else:
        answered = set(finished)
    records, ends = [], []
    for cand, req in step.calls:
        if cand in answered:
            known = answers[req.backend]
            records.append(CandidateRecord(cand, BackendAnswer(known.text, usage=known.usage), latency[cand]))
            ends.append(latency[cand])
        elif cand not in finished and timeout is not None and (closes is None or timeout <= closes):
            records.append(CandidateRecord(cand, None, timeout, f"TimeoutError: no answer within {timeout} s"))
            ends.append(timeout)
        else:  # still running when the quorum closed the round
            assert closes is not None
            records.append(CandidateRecord(cand, None, closes, cancelled=reason))
            ends.append(closes)
    return records, max(ends)


def simulate(
    engine: Ensemble,
    prompt: str,
    answers: Mapping[str, KnownAnswer],
    *,
    on_accept: Callable[[EnsembleOutcome], Any] | None = None,
) -> Simulated:
    """Run one request of ``engine`` (its settings, per-backend settings and ranker) over ``answers``, the
    backends being the keys of ``answers``; ``on_accept`` sees every outcome the acceptance rule judges."""
    names = list(answers)
    settings = {n: engine.backends.get(n, BackendSettings()) for n in names}
    rounds = flow(names, settings, engine.config)
    value: Any = None
    seconds = 0.0
    while True:
        try:
            step = rounds.send(value)
        except StopIteration as stop:
            outcome, records, report = stop.value
            if outcome is None:
                return Simulated(None, records, seconds)
            return Simulated(replace(outcome, records=records, policy=report), records, seconds)
        if isinstance(step, CallRound):
            got, end = call_round(step, answers, engine.config)
            seconds += end
            value = priced(got, [req for _, req in step.calls], settings, tier=step.tier, layer=step.layer)
        elif isinstance(step, RankRound):
            try:
                value = engine.select(prompt, list(step.records), successes=step.successes)
            except EnsembleError:  # fewer answers than min_successes: the request fails
                return Simulated(None, step.records, seconds)
        else:
            assert isinstance(step, AcceptRound)
            if on_accept is not None:
                on_accept(step.outcome)
            value = engine._accepts(prompt, step.outcome)  # the engine's own rule

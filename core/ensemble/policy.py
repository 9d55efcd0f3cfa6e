"""Adaptive ensembles: which backends a request calls, in which rounds, and when it stops.

One control flow, written once as a generator that the engine drives synchronously or asynchronously (as
the ranking strategies are): it yields what to do next and receives the result.

- :class:`CallRound`: call these candidates (a backend's samples are candidates ``name#1..n``); the driver
  runs them concurrently, within the quorum if one is set, and sends back their records.
- :class:`RankRound`: rank these successes; the driver sends back the :class:`EnsembleOutcome`.
- :class:`AcceptRound`: does this tier's ranking hold (``accept_score``)? The driver sends back a bool.

The flows:

- **One tier, one layer** (the default): call every backend once, rank, done.
- **Cascade** (backends in tiers): call tier 1, rank; accept, or escalate to the next tier and rank every
  answer so far together; a tier with fewer answers than ``min_successes`` escalates without ranking; the
  last tier's ranking stands. ``max_cost`` stops the escalation once the request has spent it.
- **Layers** (Mixture-of-Agents): layer 1 is called as usual; each later layer is called with the previous
  layer's ``top_k`` answers as references; the last layer (or the last one that answered) is ranked and
  fused. A layer whose best answer is a tool call ends the layering (a tool call is no text to draw on).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from blender_core.ensemble.outcome import EnsembleOutcome, PolicyReport
from blender_core.ensemble.records import BackendRequest, CandidateRecord
from blender_core.ensemble.settings import BackendSettings, EnsembleConfig


@dataclass(frozen=True)
class CallRound:
    """Call these candidates, ``(candidate name, request)`` each, in one round."""

    calls: tuple[tuple[str, BackendRequest], ...]
    tier: int
    layer: int


@dataclass(frozen=True)
class RankRound:
    """Rank ``successes``; ``records`` is every call so far (the account)."""

    records: tuple[CandidateRecord, ...]
    successes: tuple[CandidateRecord, ...]


@dataclass(frozen=True)
class AcceptRound:
    """Does ``outcome`` (ranked after tier ``tier``) meet the acceptance rule?"""

    outcome: EnsembleOutcome
    tier: int


Step: TypeAlias = CallRound | RankRound | AcceptRound


#: what the flow returns: the final outcome (None when nothing answered: the driver raises), every record
Decision: TypeAlias = tuple[EnsembleOutcome | None, tuple[CandidateRecord, ...], PolicyReport]
Flow: TypeAlias = Generator[Step, Any, Decision]


def check_backends(
    names: Sequence[str], settings: Mapping[str, BackendSettings], config: EnsembleConfig
) -> None:
    """Raise when the per-backend settings cannot work together: tiers with layers, a sample's name that
    is another backend's, settings for a backend that does not exist."""
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise ValueError(f"backend settings for {', '.join(map(repr, unknown))}, which are not backends: {list(names)}")
    tiers = {settings[n].tier for n in names if n in settings}
    if config.layers > 1 and tiers - {1}:
        raise ValueError(
            f"layers={config.layers} with backends in tiers {sorted(tiers)}: a layer asks every backend, so "
            "tiers and layers do not combine; put every backend in tier 1 or use layers=1"
        )
    taken = set(names)
    for name in names:
        for candidate in candidate_names(name, settings.get(name, BackendSettings())):
            if candidate != name and candidate in taken:
                raise ValueError(
                    f"backend {name!r} with samples={settings[name].samples} names its answers "
                    f"{candidate!r}, which is another backend's name; rename that backend"
                )


def candidate_names(name: str, settings: BackendSettings) -> list[str]:
    """The candidates a backend gives per round: itself, or ``name#1..n`` for several samples."""
    n = settings.samples
    return [name] if n == 1 else [f"{name}#{k}" for k in range(1, n + 1)]


def _round(
    names: Sequence[str], settings: Mapping[str, BackendSettings], *, tier: int, layer: int, references: tuple[str, ...]
) -> CallRound:
    calls = []
    for name in names:
        s = settings.get(name, BackendSettings())
        for k, candidate in enumerate(candidate_names(name, s), start=1):
            seed = k if s.samples > 1 else None
            calls.append((candidate, BackendRequest(name, k, seed, layer, references)))
    return CallRound(tuple(calls), tier, layer)


def _spent(records: Sequence[CandidateRecord]) -> float | None:
    known = [r.cost for r in records if r.cost is not None]
    return sum(known) if known else None


def _over(records: Sequence[CandidateRecord], max_cost: float | None) -> bool:
    spent = _spent(records)
    return max_cost is not None and spent is not None and spent >= max_cost


def _report(records: Sequence[CandidateRecord], stop: str, tiers: Sequence[int], layers: int) -> PolicyReport:
    cancelled = sum(r.cancelled is not None for r in records)
    return PolicyReport(tuple(tiers), layers, stop, cancelled, _spent(records))


def flow(names: Sequence[str], settings: Mapping[str, BackendSettings], config: EnsembleConfig) -> Flow:
    """The rounds of one request (see the module docstring)."""
    if config.layers > 1:
        return (yield from _layers(names, settings, config))
    return (yield from _cascade(names, settings, config))


def _cascade(names: Sequence[str], settings: Mapping[str, BackendSettings], config: EnsembleConfig) -> Flow:
    tiers = sorted({settings.get(n, BackendSettings()).tier for n in names})
    records: list[CandidateRecord] = []
    outcome: EnsembleOutcome | None = None
    ran: list[int] = []
    stop = "every backend asked" if len(tiers) == 1 else "the last tier answered"
    for tier in tiers:
        members = [n for n in names if settings.get(n, BackendSettings()).tier == tier]
        ran.append(tier)
        records += yield _round(members, settings, tier=tier, layer=1, references=())
        successes = tuple(r for r in records if r.ok)
        last = tier == tiers[-1]
        if len(successes) >= config.min_successes or last:
            outcome = yield RankRound(tuple(records), successes)
            if last:
                break
            if (yield AcceptRound(outcome, tier)):
                stop = f"tier {tier} accepted"
                break
        if _over(records, config.max_cost):
            stop = f"max_cost {config.max_cost} spent after tier {tier}"
            if outcome is None:  # nothing ranked yet: rank what there is (or fail with min_successes)
                outcome = yield RankRound(tuple(records), successes)
            break
    return outcome, tuple(records), _report(records, stop, ran, 1)


def _layers(names: Sequence[str], settings: Mapping[str, BackendSettings], config: EnsembleConfig) -> Flow:
    records: list[CandidateRecord] = []
    outcome: EnsembleOutcome | None = None
    references: tuple[str, ...] = ()
    stop, ran = "the last layer answered", 0
    for layer in range(1, config.layers + 1):
        got = yield _round(names, settings, tier=1, layer=layer, references=references)
        records += got
        successes = tuple(r for r in got if r.ok)
        if len(successes) < config.min_successes and outcome is not None:
            stop = f"layer {layer} gave {len(successes)} answer(s), fewer than min_successes: layer {ran} stands"
            break
        ran = layer
        outcome = yield RankRound(tuple(records), successes)
        if layer == config.layers:
            break
        chosen = [outcome.successes[i] for i in outcome.blend.ranking.top(config.top_k)]  # fuser or not
        if not all(r.answer is not None and r.answer.fusible for r in chosen):
            stop = f"layer {layer}'s best answer is a tool call: layering ends there"
            break
        if _over(records, config.max_cost):
            stop = f"max_cost {config.max_cost} spent after layer {layer}"
            break
        references = tuple(r.answer.text for r in chosen if r.answer is not None)
    return outcome, tuple(records), _report(records, stop, (1,), ran)


# ------------------------------------------------------------------------------- the acceptance rules
def accept_peers(outcome: EnsembleOutcome) -> list[int]:
    """The successes the top candidate must beat under the pairwise rule: the others of its tier."""
    best = outcome.blend.best
    tier = outcome.successes[best].tier
    return [i for i, r in enumerate(outcome.successes) if r.tier == tier and i != best]


def holds_on_matrix(matrix: Any, best: int, peers: Sequence[int], margin: float) -> bool:
    """Whether ``best`` beats every peer by at least ``margin`` on the both-order margin
    M[best, j] - M[j, best]: the pair asked in both orders (best in the first slot, then in the second), so
    that a ranker's position bias cancels, as in its own scores."""
    return all(matrix[best, j] - matrix[j, best] >= margin for j in peers)


def holds_on_pair(ranking: Any, margin: float) -> bool:
    """The pairwise rule on the ranking of ``[top, peer]``: its 2x2 matrix when it has one, else the top
    first by at least ``margin`` in score."""
    if ranking.matrix is not None:
        return holds_on_matrix(ranking.matrix, 0, [1], margin)
    return bool(ranking.best == 0 and ranking.scores[0] - ranking.scores[1] >= margin)

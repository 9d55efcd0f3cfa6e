"""The result of one ensemble call, and its JSON account of every candidate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from blender_core.base.usage import sum_usage
from blender_core.ensemble.pipeline import BlendResult
from blender_core.ensemble.records import BackendAnswer, CandidateRecord


@dataclass(frozen=True)
class Delta:
    """A piece of the final answer as it streams: fused text, or (``answer`` set) the chosen backend's
    whole answer, which the adapter returns as its own message (tool calls included)."""

    text: str
    answer: BackendAnswer | None = None


@dataclass(frozen=True)
class PolicyReport:
    """What a request's policy did: the tiers and layers it ran, the calls it cancelled, why it stopped and
    what it spent (None: a price or a usage was unknown for every call)."""

    tiers: tuple[int, ...] = (1,)
    layers: int = 1
    stop: str = "every backend asked"
    cancelled: int = 0
    cost: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "tiers": list(self.tiers),
            "layers": self.layers,
            "stop": self.stop,
            "cancelled": self.cancelled,
            "cost": self.cost,
        }


@dataclass(frozen=True)
class EnsembleOutcome:
    """The result of one ensemble call.

    Attributes:
        records: every backend's record, in backend order (failures included).
        blend: ranking (and fusion) of the successful answers; its indices refer to ``successes``.
        successes: the records ranked (those that answered; of the last layer with layers), in call order.
        fuser_usage: token usage the fuser reported, if any.
        fuser_cost: what the fusion cost, when the fuser's prices are known.
        policy: what the adaptive policy did (tiers, layers, cancellations, why it stopped, cost).
    """

    records: tuple[CandidateRecord, ...]
    blend: BlendResult
    successes: tuple[CandidateRecord, ...]
    fuser_usage: Mapping[str, int] | None = None
    fuser_cost: float | None = None
    policy: PolicyReport | None = None

    @property
    def best(self) -> CandidateRecord:
        """The top-ranked successful backend's record."""
        return self.successes[self.blend.best]

    @property
    def best_answer(self) -> BackendAnswer:
        answer = self.best.answer
        assert answer is not None  # successes all answered
        return answer

    @property
    def text(self) -> str:
        """The final answer: the fused text, or the chosen backend's own text (not its ranking form)."""
        return self.blend.text if self.blend.fused else self.best_answer.text

    @property
    def chosen_backends(self) -> tuple[str, ...]:
        """The backends the answer draws on: the fused ones, or the best alone."""
        return tuple(self.successes[i].backend for i in self.blend.chosen)

    @property
    def usage(self) -> dict[str, int]:
        """Summed usage of every call that answered (every tier, layer and sample), the ranker (an LLM
        judge's calls) and the fuser."""
        answers = [r.answer.usage for r in self.records if r.answer]
        return sum_usage([*answers, self.blend.ranking.usage, self.fuser_usage])

    @property
    def cost(self) -> float | None:
        """What the request cost: its calls' and the fusion's known costs (None: no price known)."""
        known = [c for c in (*(r.cost for r in self.records), self.fuser_cost) if c is not None]
        return sum(known) if known else None

    def answered_by_best(self, **changes: Any) -> EnsembleOutcome:
        """This outcome answering with its best candidate, unfused (``changes`` go to the BlendResult)."""
        b = self.blend
        blend = replace(b, chosen=(b.best,), text=b.candidates[b.best], fused=False, **changes)
        return replace(self, blend=blend)

    def metadata(self) -> dict[str, Any]:
        """A JSON-serialisable account: every candidate (backend, text, score, rank, latency, error, usage),
        the choice, the fuser, the timings, the usage per backend, of the fuser and of the ranker, and what
        went wrong while ranking without stopping it."""
        position = {id(r): i for i, r in enumerate(self.successes)}
        ranks = self.blend.ranking.ranks
        candidates = []
        for r in self.records:
            i = position.get(id(r))
            entry: dict[str, Any] = {
                "backend": r.backend,
                "text": r.answer.text if r.answer else None,
                "score": float(self.blend.scores[i]) if i is not None else None,
                "rank": int(ranks[i]) if i is not None else None,
                "latency_s": round(r.latency_s, 4),
                "error": r.error,
                "usage": dict(r.answer.usage) if r.answer and r.answer.usage else None,
            }
            if r.cancelled is not None:
                entry["cancelled"] = r.cancelled
            if r.cost is not None:
                entry["cost"] = r.cost
            if self.policy is not None and (self.policy.tiers != (1,) or self.policy.layers > 1):
                entry["tier"], entry["layer"] = r.tier, r.layer
            candidates.append(entry)
        return {
            "candidates": candidates,
            "chosen": list(self.chosen_backends),
            "best": self.best.backend,
            "fused": self.blend.fused,
            "fuser": self.blend.fuser,
            "fuser_error": self.blend.fuser_error,
            "fuser_usage": dict(self.fuser_usage) if self.fuser_usage else None,
            "ranker_usage": dict(self.blend.ranking.usage) if self.blend.ranking.usage else None,
            "ranker_issues": list(self.blend.ranking.issues),
            "strategy": self.blend.ranking.strategy,
            "timings": dict(self.blend.timings),
            "usage_by_backend": {
                r.backend: dict(r.answer.usage) for r in self.successes if r.answer and r.answer.usage
            },
            "cost": self.cost,
            **({"fuser_cost": self.fuser_cost} if self.fuser_cost is not None else {}),
            **({"policy": self.policy.as_dict()} if self.policy is not None else {}),
        }

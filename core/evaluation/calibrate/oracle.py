"""The oracle: the judge's preferences as a ranker (``--model oracle``), the upper bound a ranker could reach.

Its scores are the judge's ``pref`` of each answer (in [1, 2] in the pools: 1 + the probability of beating
the reference), absolute (the same scale for every instruction), so a cascade accepts a tier when its top
answer's ``pref`` is at least ``accept_score``, as with a reward model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from blender_core.base.results import Ranking
from blender_core.data.alpacaeval import EvalRecord
from blender_core.ranking.aggregation import order_from_scores, ranks_from_scores
from blender_core.ranking.interface import BaseRanker

#: the --model name of the oracle
ORACLE = "oracle"


class OracleRanker(BaseRanker):
    """Ranks by the judge preferences of ``records`` (looked up by instruction and answer text)."""

    name = ORACLE
    absolute_scores = True

    def __init__(self, records: Iterable[EvalRecord]) -> None:
        found: dict[tuple[str, str], list[float]] = {}
        for r in records:
            for text, pref in zip(r.outputs, r.prefs, strict=True):
                found.setdefault((r.instruction, text), []).append(pref)
        # two models with the same answer: the judge's mean preference of it
        self._prefs = {k: sum(v) / len(v) for k, v in found.items()}

    def rank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        strategy: str = "full",
        show_progress: bool = False,
        **rank_kwargs: Any,
    ) -> list[Ranking]:
        """The answers by judge preference, best first (ties in input order); ``strategy`` changes nothing."""
        out = []
        for prompt, cands in zip(prompts, candidates, strict=True):
            try:
                scores = np.array([self._prefs[(prompt, c)] for c in cands], dtype=np.float64)
            except KeyError as exc:
                raise ValueError(
                    f"the oracle knows no judge preference for an answer to {prompt[:60]!r}: it ranks only the "
                    "answers of the pool it was built from"
                ) from exc
            order = order_from_scores(scores)
            out.append(Ranking(scores, ranks_from_scores(scores), order, order[0], strategy))
        return out

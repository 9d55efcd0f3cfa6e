"""The trivial ranker of the benchmarks (the longer answer wins: next to no cost), and how a benchmark's
server process serves it under the spec ``"trivial"``: what isolates the engine's or the server's own cost
from the ranker's (``engine_overhead.py --ranker trivial``, ``serve_load.py --ranker trivial``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from blender_core.base.results import Ranking
from blender_core.ranking import registry
from blender_core.ranking.aggregation import order_from_scores, ranks_from_scores
from blender_core.ranking.interface import BaseRanker

SPEC = "trivial"


class TrivialRanker(BaseRanker):
    """The longer answer wins: a ranker that costs next to nothing."""

    name = "trivial"

    def rank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        strategy: str = "full",
        show_progress: bool = False,
    ) -> list[Ranking]:
        out = []
        for cands in candidates:
            scores = torch.tensor([float(len(c)) for c in cands]).numpy()
            order = order_from_scores(scores)
            out.append(Ranking(scores=scores, ranks=ranks_from_scores(scores), order=order, best=order[0], strategy=strategy))
        return out


def serve_as_spec() -> None:
    """Make ``load_ranker("trivial")`` answer a :class:`TrivialRanker` in this process (a server's config
    then names ``ranker = "trivial"``). Benchmarks only: it fills the registry's cache, as a load would."""
    with registry._guard:
        registry._cache[(SPEC,)] = TrivialRanker()

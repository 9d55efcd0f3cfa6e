"""What rankings cost: comparisons, the token usage of an LLM judge and the issues it met (verdicts it
could not read, calls that failed, each counted as a tie), summed over rankings; :class:`MeteredRanker`
sums them for any ranker an evaluation calls.

Example:
    >>> meter = MeteredRanker(judge)  # doctest: +SKIP
    >>> evaluate_pairs(meter, pairs, name="dev")  # doctest: +SKIP
    >>> meter.costs().usage  # doctest: +SKIP
    {'input_tokens': 24310, 'output_tokens': 1280, 'total_tokens': 25590}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from blender_core.base.results import Ranking
from blender_core.base.usage import sum_usage
from blender_core.ranking.interface import BaseRanker, Ranker
from blender_core.ranking.registry import spec_name

#: issue messages kept as examples (the count covers them all)
N_EXAMPLES = 3


@dataclass(frozen=True)
class RankingCosts:
    """Summed over rankings: how many, their comparisons (``n_forward``), token usage (None when no ranking
    reported any), and the issues (counted as ties) with a few examples."""

    rankings: int
    comparisons: int
    usage: dict[str, int] | None
    issues: int
    issue_examples: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ranking_costs(rankings: Sequence[Ranking]) -> RankingCosts:
    """The costs of ``rankings``, summed."""
    usages = [r.usage for r in rankings if r.usage]
    issues = [issue for r in rankings for issue in r.issues]
    return RankingCosts(
        rankings=len(rankings),
        comparisons=sum(r.n_forward for r in rankings),
        usage=sum_usage(usages) if usages else None,
        issues=len(issues),
        issue_examples=tuple(issues[:N_EXAMPLES]),
    )


class MeteredRanker(BaseRanker):
    """Any ranker, keeping the rankings' costs: ``rank`` passes everything through unchanged.

    Args:
        ranker: the ranker measured (an LLM judge, PairRM, a reward model, ...).
    """

    def __init__(self, ranker: Ranker) -> None:
        self.ranker = ranker
        self.name = spec_name(ranker)
        self._rankings: list[Ranking] = []

    def rank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        strategy: str = "full",
        show_progress: bool = False,
        **rank_kwargs: Any,
    ) -> list[Ranking]:
        """The wrapped ranker's rankings, their costs recorded."""
        rankings = self.ranker.rank(
            prompts, candidates, strategy=strategy, show_progress=show_progress, **rank_kwargs
        )
        self._rankings.extend(rankings)
        return rankings

    def costs(self) -> RankingCosts:
        """The costs of every ranking so far."""
        return ranking_costs(self._rankings)

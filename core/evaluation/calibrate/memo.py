"""A ranker that remembers its rankings: the calibration ranks the same candidate sets again for every
threshold of a sweep (a cascade's tier 1 is the same set at every ``accept_score``), so each distinct set is
ranked once. A remembered ranking is the very object the ranker returned, so a decision taken on it is the
decision the engine takes with the ranker itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from blender_core.base.results import Ranking
from blender_core.ranking.interface import BaseRanker, Ranker
from blender_core.ranking.registry import spec_name


class MemoRanker(BaseRanker):
    """``ranker`` with its rankings remembered by (prompt, candidates, strategy, options).

    Args:
        ranker: any ranker; its ``absolute_scores`` and name carry over.
    """

    def __init__(self, ranker: Ranker) -> None:
        self.ranker = ranker
        self.name = spec_name(ranker)
        self.absolute_scores = bool(getattr(ranker, "absolute_scores", False))
        self._seen: dict[tuple[Any, ...], Ranking] = {}
        self.calls = 0  # rankings asked of the wrapped ranker

    def rank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        strategy: str = "full",
        show_progress: bool = False,
        **rank_kwargs: Any,
    ) -> list[Ranking]:
        """The rankings, from memory where this set was ranked before; the others in one call."""
        options = tuple(sorted((k, repr(v)) for k, v in rank_kwargs.items()))
        keys = [(p, tuple(c), strategy, options) for p, c in zip(prompts, candidates, strict=True)]
        todo = [k for k in dict.fromkeys(keys) if k not in self._seen]
        if todo:
            got = self.ranker.rank(
                [k[0] for k in todo], [list(k[1]) for k in todo], strategy=strategy,
                show_progress=show_progress, **rank_kwargs,
            )  # fmt: skip
            self.calls += len(todo)
            self._seen.update(zip(todo, got, strict=True))
        return [self._seen[k] for k in keys]

"""The ranker interface: what the pipeline, the engine, the adapters and the CLI need of any ranker.

A ranker ranks each prompt's candidates: ``rank`` takes a batch of prompts and returns one
:class:`Ranking` each. That is the whole protocol; :func:`rank_one` ranks one prompt's candidates with any
ranker (the candidates best first, with their scores), and :class:`BaseRanker` gives ``rank_one`` and
``best_of_n`` as methods, so an implementation writes ``rank`` only. The PairRM
:class:`~blender_core.ranking.pairrm.pair_ranker.PairRanker` is the first implementation.

Example:
    >>> from blender_core.ranking import load_ranker
    >>> ranker = load_ranker("llm-blender/PairRM")  # doctest: +SKIP
    >>> [(c.text, c.rank) for c in ranker.rank_one("2+2?", ["5", "4"])]  # doctest: +SKIP
    [('4', 1), ('5', 2)]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from blender_core.base.results import RankedCandidate, Ranking
from blender_core.base.validation import check_candidate_lists, check_prompts, check_text, check_top_k


@runtime_checkable
class Ranker(Protocol):
    """Anything that ranks candidate answers to prompts: a ``rank`` method.

    A single candidate is a valid, trivial ranking (score 0, rank 1); no candidate at all is an error.
    Scores are higher-is-better; what they mean depends on the ranker and its strategy.
    """

    def rank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        strategy: str = "full",
        show_progress: bool = False,
    ) -> list[Ranking]:
        """One :class:`Ranking` per prompt of its candidates (their number may differ per prompt)."""
        ...


def rank_one(
    ranker: Ranker,
    prompt: str,
    candidates: Sequence[str],
    *,
    top_k: int | None = None,
    strategy: str = "full",
    **rank_kwargs: Any,
) -> list[RankedCandidate]:
    """Rank one prompt's candidates with ``ranker``: the candidates best first (the first ``top_k``), each
    with its index, text, score and rank.

    Example:
        >>> [c.index for c in rank_one(ranker, "2+2?", ["5", "4", "four"], top_k=2)]  # doctest: +SKIP
        [1, 2]
    """
    text = check_text(prompt, "rank_one(): prompt")
    (cands,) = check_candidate_lists([text], [candidates], "rank_one", 1)
    check_top_k(top_k)
    (ranking,) = ranker.rank([text], [cands], strategy=strategy, **rank_kwargs)
    ranked = ranking.candidates(cands)
    return ranked if top_k is None else ranked[:top_k]


class BaseRanker(ABC):
    """A ranker that implements :meth:`rank`; ``rank_one`` and ``best_of_n`` come from it."""

    #: a short name shown in metadata, events and logs
    name: str = "ranker"
    #: whether a score means the same across prompts and candidate sets (a reward), so that a threshold on
    #: it means something (a cascade's ``accept_score``); a pairwise ranker's scores are relative
    absolute_scores: bool = False
    #: whether ``rank`` takes ``gathering=`` (a :class:`~blender_core.ranking.gathering.Gathering`): its
    #: calls from concurrent requests can share one batched forward pass (cross-request batching)
    gathers: bool = False

    @abstractmethod
    def rank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        strategy: str = "full",
        show_progress: bool = False,
    ) -> list[Ranking]:
        """One :class:`Ranking` per prompt of its candidates (their number may differ per prompt)."""

    def rank_one(
        self,
        prompt: str,
        candidates: Sequence[str],
        *,
        top_k: int | None = None,
        strategy: str = "full",
        **rank_kwargs: Any,
    ) -> list[RankedCandidate]:
        """Rank one prompt's candidates: see :func:`rank_one`."""
        return rank_one(self, prompt, candidates, top_k=top_k, strategy=strategy, **rank_kwargs)

    def best_of_n(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        strategy: str = "knockout",
        **rank_kwargs: Any,
    ) -> list[int]:
        """Index of the best candidate per prompt; ``knockout`` (default) needs only a tournament."""
        p = check_prompts(prompts, "best_of_n")
        cands = check_candidate_lists(p, candidates, "best_of_n", 1)
        return [r.best for r in self.rank(p, cands, strategy=strategy, **rank_kwargs)]


"""The core Blender: rank candidates with a PairRanker, then fuse the top-K with a fuser (or pick the best)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blender_core.base.results import Ranking
from blender_core.base.validation import check_candidate_lists, check_choice, check_prompts
from blender_core.fusion.base import BaseFuser
from blender_core.ranking.pair_ranker import PairRanker
from blender_core.ranking.strategies import STRATEGIES

logger = logging.getLogger(__name__)


class FusionError(RuntimeError):
    """The fuser failed and fallback to the top-ranked candidate was switched off."""


@dataclass(frozen=True)
class BlendResult:
    """What :class:`Blender` made of one prompt's candidates.

    Attributes:
        candidates: the candidate texts, as given.
        ranking: the ranking (``None`` when there was a single candidate: nothing to rank).
        scores: one score per candidate (0.0 for a lone candidate).
        chosen: indices handed to the fuser (top-K), or ``(best,)`` without fusion.
        text: the fused answer, or the best candidate.
        fused: whether ``text`` came from the fuser.
        fuser: the fuser's name, if one was used.
        fuser_error: why fusion failed when it fell back to the best candidate.
        timings: seconds spent ranking (``rank_s``) and fusing (``fuse_s``).
    """

    candidates: tuple[str, ...]
    ranking: Ranking | None
    scores: tuple[float, ...]
    chosen: tuple[int, ...]
    text: str
    fused: bool = False
    fuser: str | None = None
    fuser_error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> int:
        """Index of the top-ranked candidate."""
        return self.ranking.best if self.ranking is not None else 0


class Blender:
    """Compose a ranker and an optional fuser: ``rank_and_fuse`` and ``best_of_n``.

    Example:
        >>> blender = Blender(ranker="builtin:pairrm-minilm-l6", top_k=3)  # doctest: +SKIP
        >>> r = blender.best_of_n(["What is 2+2?"], [["4", "5", "four (4)"]])[0]  # doctest: +SKIP
        >>> r.text  # doctest: +SKIP
        'four (4)'
    """

    def __init__(
        self,
        ranker: PairRanker | str | Path | None = None,
        fuser: BaseFuser | None = None,
        *,
        top_k: int = 3,
        strategy: str = "full",
        fallback_on_fuser_error: bool = True,
    ) -> None:
        """Args:
        ranker: a PairRanker, a path / hub id / built-in name, or None for the built-in default ranker.
        fuser: a fuser; None returns the top-ranked candidate.
        top_k: candidates handed to the fuser (the paper's K = 3); more than available means all.
        strategy: ranking strategy (see :mod:`blender_core.ranking.strategies`).
        fallback_on_fuser_error: when the fuser raises, return the top-ranked candidate and record the
            error (True), or raise :class:`FusionError` (False).
        """
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        check_choice(strategy, STRATEGIES, "strategy")
        self._ranker = ranker
        self.fuser = fuser
        self.top_k = top_k
        self.strategy = strategy
        self.fallback_on_fuser_error = fallback_on_fuser_error

    @property
    def ranker(self) -> PairRanker:
        """The ranker, loaded on first use (the built-in default when none was given)."""
        if not isinstance(self._ranker, PairRanker):
            from blender_core.ranking.builtin import DEFAULT_RANKER

            self._ranker = PairRanker.from_pretrained(
                self._ranker if self._ranker is not None else DEFAULT_RANKER
            )
        return self._ranker

    def _rank(
        self, prompts: list[str], cands: list[list[str]], strategy: str
    ) -> tuple[list[Ranking | None], float]:
        start = time.perf_counter()
        multi = [k for k, c in enumerate(cands) if len(c) > 1]
        rankings: list[Ranking | None] = [None] * len(prompts)
        if multi:
            done = self.ranker.rank([prompts[k] for k in multi], [cands[k] for k in multi], strategy=strategy)
            for k, r in zip(multi, done, strict=True):
                rankings[k] = r
        return rankings, time.perf_counter() - start

    def best_of_n(
        self, prompts: Sequence[str], candidates: Sequence[Sequence[str]], *, strategy: str = "knockout"
    ) -> list[BlendResult]:
        """Pick the best candidate per prompt (no fusion); ``knockout`` costs 2(n-1) passes."""
        p = check_prompts(prompts, "best_of_n")
        cands = check_candidate_lists(p, candidates, "best_of_n", 1)
        check_choice(strategy, STRATEGIES, "strategy")
        rankings, rank_s = self._rank(p, cands, strategy)
        out = []
        for c, r in zip(cands, rankings, strict=True):
            best = r.best if r is not None else 0
            scores = tuple(float(s) for s in r.scores) if r is not None else (0.0,)
            out.append(BlendResult(tuple(c), r, scores, (best,), c[best], timings={"rank_s": rank_s}))
        return out

    def _prepare(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        top_k: int | None,
        strategy: str | None,
    ) -> tuple[list[str], list[list[str]], list[Ranking | None], list[tuple[int, ...]], float]:
        """Validate, rank, and choose the top-K per prompt."""
        p = check_prompts(prompts, "rank_and_fuse")
        cands = check_candidate_lists(p, candidates, "rank_and_fuse", 1)
        k = self.top_k if top_k is None else top_k
        if k < 1:
            raise ValueError(f"top_k must be >= 1, got {k}")
        strat = check_choice(strategy or self.strategy, STRATEGIES, "strategy")
        rankings, rank_s = self._rank(p, cands, strat)
        chosen = [tuple(r.order[:k]) if r is not None else (0,) for r in rankings]
        return p, cands, rankings, chosen, rank_s

    def _fusion_failed(self, fuser: BaseFuser, exc: Exception) -> str:
        if not self.fallback_on_fuser_error:
            raise FusionError(f"the fuser {fuser.name!r} failed: {type(exc).__name__}: {exc}") from exc
        error = f"{type(exc).__name__}: {exc}"
        logger.warning("fuser %r failed (%s); falling back to the top-ranked candidates", fuser.name, error)
        return error

    def _results(
        self,
        cands: list[list[str]],
        rankings: list[Ranking | None],
        chosen: list[tuple[int, ...]],
        fuser: BaseFuser | None,
        fused: list[str] | None,
        error: str | None,
        timings: dict[str, float],
    ) -> list[BlendResult]:
        out = []
        for j, (c, r, idx) in enumerate(zip(cands, rankings, chosen, strict=True)):
            scores = tuple(float(s) for s in r.scores) if r is not None else (0.0,)
            out.append(
                BlendResult(
                    tuple(c),
                    r,
                    scores,
                    idx if self.fuser is not None else idx[:1],
                    fused[j] if fused is not None else c[idx[0]],
                    fused=fused is not None,
                    fuser=fuser.name if fuser is not None else None,
                    fuser_error=error,
                    timings=dict(timings),
                )
            )
        return out

    def rank_and_fuse(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        top_k: int | None = None,
        strategy: str | None = None,
        fuse: bool = True,
        **generate_kwargs: Any,
    ) -> list[BlendResult]:
        """Rank each prompt's candidates and fuse the top-K (without a fuser: return the best).

        With ``fuse=False`` the top-K are chosen but not fused (``text`` is the best candidate): the first
        half of a streamed answer, whose second half is :meth:`stream_fuse`. A fuser that raises falls back
        to the best candidate (``fuser_error`` says why) unless ``fallback_on_fuser_error`` is off.
        """
        p, cands, rankings, chosen, rank_s = self._prepare(prompts, candidates, top_k, strategy)
        fuser = self.fuser if fuse else None
        fused: list[str] | None = None
        error: str | None = None
        start = time.perf_counter()
        if fuser is not None:
            try:
                fused = fuser.fuse(
                    p, [[c[i] for i in idx] for c, idx in zip(cands, chosen, strict=True)], **generate_kwargs
                )
            except Exception as exc:
                error = self._fusion_failed(fuser, exc)
        timings = {"rank_s": rank_s, "fuse_s": time.perf_counter() - start if fuser is not None else 0.0}
        return self._results(cands, rankings, chosen, fuser, fused, error, timings)

    async def arank_and_fuse(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        top_k: int | None = None,
        strategy: str | None = None,
        fuse: bool = True,
        **generate_kwargs: Any,
    ) -> list[BlendResult]:
        """Async :meth:`rank_and_fuse`: ranking in a worker thread, fusion through the fuser's ``afuse``."""
        p, cands, rankings, chosen, rank_s = await asyncio.to_thread(
            self._prepare, prompts, candidates, top_k, strategy
        )
        fuser = self.fuser if fuse else None
        fused: list[str] | None = None
        error: str | None = None
        start = time.perf_counter()
        if fuser is not None:
            try:
                fused = await fuser.afuse(
                    p, [[c[i] for i in idx] for c, idx in zip(cands, chosen, strict=True)], **generate_kwargs
                )
            except Exception as exc:
                error = self._fusion_failed(fuser, exc)
        timings = {"rank_s": rank_s, "fuse_s": time.perf_counter() - start if fuser is not None else 0.0}
        return self._results(cands, rankings, chosen, fuser, fused, error, timings)

    def stream_fuse(self, prompt: str, result: BlendResult, **generate_kwargs: Any) -> Iterator[str]:
        """Stream the fusion of an already ranked result's chosen candidates (or yield the best one)."""
        if self.fuser is None:
            yield result.candidates[result.best]
            return
        yield from self.fuser.stream(prompt, [result.candidates[i] for i in result.chosen], **generate_kwargs)

    async def astream_fuse(
        self, prompt: str, result: BlendResult, **generate_kwargs: Any
    ) -> AsyncIterator[str]:
        """Async :meth:`stream_fuse`; the fuser's own ``astream`` keeps the event loop free."""
        if self.fuser is None:
            yield result.candidates[result.best]
            return
        async for piece in self.fuser.astream(
            prompt, [result.candidates[i] for i in result.chosen], **generate_kwargs
        ):
            yield piece

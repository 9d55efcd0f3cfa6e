"""BlendPipeline: rank ready candidate lists with a ranker, then fuse the top K with a fuser (or pick the best).

The batch form of the ensemble, for candidates already in hand (offline evaluation, preference data); the
engine (:mod:`blender_core.ensemble.engine`) uses it once the backends have answered.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from blender_core.base.results import Ranking
from blender_core.base.validation import check_candidate_lists, check_choice, check_prompts
from blender_core.fusion.base import BaseFuser
from blender_core.ranking.gathering import Gathering
from blender_core.ranking.interface import Ranker
from blender_core.ranking.registry import RankerSpec, check_ranker_spec, load_ranker, loaded_ranker
from blender_core.ranking.strategies import STRATEGIES

logger = logging.getLogger(__name__)


class FusionError(RuntimeError):
    """The fuser failed and fallback to the top-ranked candidate was switched off."""


@dataclass(frozen=True)
class BlendResult:
    """What the pipeline made of one prompt's candidates.

    Attributes:
        candidates: the candidate texts, as given.
        ranking: their ranking (a lone candidate has a trivial one).
        scores: one score per candidate.
        chosen: the indices the answer draws on: the top K handed to the fuser when fused, else the best.
        text: the fused answer, or the best candidate.
        fused: whether ``text`` came from the fuser.
        fuser: the fuser's name, if one was used.
        fuser_error: why fusion failed when it fell back to the best candidate.
        timings: seconds spent ranking (``rank_s``) and fusing (``fuse_s``, and ``fuse_first_token_s``
            when streamed).
    """

    candidates: tuple[str, ...]
    ranking: Ranking
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
        return self.ranking.best


def check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int (candidates handed to the fuser), got {top_k!r}")
    return top_k


def top_k_of(candidates: Sequence[str], ranking: Ranking, k: int) -> tuple[int, ...]:
    """The ``k`` best non-empty candidates, best first (an empty answer has nothing to fuse); the best
    one alone when all are empty."""
    return tuple(i for i in ranking.order if candidates[i].strip())[:k] or (ranking.best,)


class BlendPipeline:
    """Compose a ranker and an optional fuser: :meth:`rank`, :meth:`rank_and_fuse` and :meth:`best_of_n`.

    ``top_k`` lives here, and only here: the fuser merges exactly the candidates the pipeline chose.

    Example:
        >>> pipeline = BlendPipeline("builtin:pairrm-minilm-l6", fuser, top_k=3)  # doctest: +SKIP
        >>> r = pipeline.rank_and_fuse(["What is 2+2?"], [["4", "5", "four (4)"]])[0]  # doctest: +SKIP
        >>> r.text, r.chosen  # doctest: +SKIP
        ('4 (four)', (2, 0, 1))
    """

    def __init__(
        self,
        ranker: RankerSpec = None,
        fuser: BaseFuser | None = None,
        *,
        top_k: int = 3,
        strategy: str = "full",
        fallback_on_fuser_error: bool = True,
        gathering: Gathering | None = None,
    ) -> None:
        """Args:
        ranker: a ranker, a folder / hub id / built-in name (loaded on first use by ``load_ranker``), or
            None for the default ranker.
        fuser: a fuser; None returns the top-ranked candidate.
        top_k: candidates handed to the fuser (the paper's K = 3); more than available means all.
        strategy: ranking strategy (see :mod:`blender_core.ranking.strategies`).
        fallback_on_fuser_error: when the fuser raises, return the top-ranked candidate and record the
            error (True), or raise :class:`FusionError` (False).
        gathering: batch the rank calls of concurrent callers together, for rankers that can
            (``ranker.gathers``; see :mod:`blender_core.ranking.gathering`); None: each call alone.
        """
        self._ranker_spec = check_ranker_spec(ranker)
        if fuser is not None and not isinstance(fuser, BaseFuser):
            raise TypeError(
                f"fuser must be a blender_core fuser (BaseFuser) or None, got {type(fuser).__name__}"
            )
        self.fuser = fuser
        self.top_k = check_top_k(top_k)
        self.strategy = check_choice(strategy, STRATEGIES, "strategy")
        self.fallback_on_fuser_error = fallback_on_fuser_error
        self.gathering = gathering
        self._rank_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @property
    def ranker(self) -> Ranker:
        """The ranker, loaded on first use (the default ranker when none was given)."""
        return load_ranker(self._ranker_spec)

    @property
    def ranker_spec(self) -> RankerSpec:
        """The ranker as given (an object, a name or None)."""
        return self._ranker_spec

    # ------------------------------------------------------------------ ranking
    def _rank_kwargs(self, ranker: Ranker) -> dict[str, Any]:
        return {"gathering": self.gathering} if self.gathering and getattr(ranker, "gathers", False) else {}

    async def _in_thread(self, fn: Callable[..., Any], *args: Any, gathered: bool, **kwargs: Any) -> Any:
        """``fn`` in a worker thread, in a copy of the caller's context (as ``asyncio.to_thread``). Gathered
        rank calls run in this pipeline's own pool, one thread per call that may wait in a batch: in the
        loop's default pool (cpu count + 4 threads) they would wait for threads, not for each other."""
        if not gathered or self.gathering is None:
            return await asyncio.to_thread(fn, *args, **kwargs)
        with self._pool_lock:
            if self._rank_pool is None:
                self._rank_pool = ThreadPoolExecutor(self.gathering.max_calls + 1, "blender-rank")
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._rank_pool, call)

    def _inputs(
        self, prompts: Sequence[str], candidates: Sequence[Sequence[str]], top_k: int | None, strategy: str | None
    ) -> tuple[list[str], list[list[str]], int, str]:
        p = check_prompts(prompts, "rank")
        cands = check_candidate_lists(p, candidates, "rank", 1)
        k = self.top_k if top_k is None else check_top_k(top_k)
        return p, cands, k, check_choice(strategy or self.strategy, STRATEGIES, "strategy")

    def _chosen(self, cands: list[list[str]], rankings: list[Ranking], k: int, rank_s: float) -> list[BlendResult]:
        out = []
        for c, r in zip(cands, rankings, strict=True):
            chosen = top_k_of(c, r, k) if self.fuser is not None else (r.best,)
            scores = tuple(float(s) for s in r.scores)
            out.append(BlendResult(tuple(c), r, scores, chosen, c[r.best], timings={"rank_s": rank_s}))
        return out

    def rank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        top_k: int | None = None,
        strategy: str | None = None,
    ) -> list[BlendResult]:
        """Rank each prompt's candidates and choose the top K for fusion, without fusing.

        ``text`` is the best candidate, ``chosen`` the top K (what :meth:`stream_fuse` will merge) when
        there is a fuser, else the best alone.
        """
        p, cands, k, strat = self._inputs(prompts, candidates, top_k, strategy)
        start = time.perf_counter()
        ranker = self.ranker
        rankings = ranker.rank(p, cands, strategy=strat, **self._rank_kwargs(ranker))
        return self._chosen(cands, rankings, k, time.perf_counter() - start)

    async def arank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        top_k: int | None = None,
        strategy: str | None = None,
    ) -> list[BlendResult]:
        """Async :meth:`rank`: a ranker with its own ``arank`` (an LLM judge) is awaited; any other runs in a
        worker thread, so the event loop is never blocked."""
        p, cands, k, strat = self._inputs(prompts, candidates, top_k, strategy)
        ranker = loaded_ranker(self._ranker_spec)  # no thread hop for a ranker already loaded
        if ranker is None:
            ranker = await asyncio.to_thread(lambda: self.ranker)  # loading may take a while
        start = time.perf_counter()
        arank = getattr(ranker, "arank", None)
        if callable(arank):
            rankings = await arank(p, cands, strategy=strat)
        else:
            kwargs = self._rank_kwargs(ranker)
            rankings = await self._in_thread(ranker.rank, p, cands, strategy=strat, gathered=bool(kwargs), **kwargs)
        return self._chosen(cands, rankings, k, time.perf_counter() - start)

    def best_of_n(
        self, prompts: Sequence[str], candidates: Sequence[Sequence[str]], *, strategy: str = "knockout"
    ) -> list[BlendResult]:
        """Pick the best candidate per prompt (no fusion); ``knockout`` costs 2(n-1) comparisons."""
        p = check_prompts(prompts, "best_of_n")
        cands = check_candidate_lists(p, candidates, "best_of_n", 1)
        return [
            _only_best(r)
            for r in self.rank(p, cands, strategy=check_choice(strategy, STRATEGIES, "strategy"))
        ]

    # ------------------------------------------------------------------ fusion
    def _fusion_failed(self, exc: Exception) -> str:
        name = self.fuser.name if self.fuser is not None else "fuser"
        if not self.fallback_on_fuser_error:
            raise FusionError(f"the fuser {name!r} failed: {type(exc).__name__}: {exc}") from exc
        error = f"{type(exc).__name__}: {exc}"
        logger.warning("fuser %r failed (%s); falling back to the top-ranked candidates", name, error)
        return error

    def _fused(
        self, ranked: list[BlendResult], fused: list[str] | None, error: str | None, fuse_s: float
    ) -> list[BlendResult]:
        fuser = self.fuser
        assert fuser is not None
        out = []
        for j, r in enumerate(ranked):
            timings = {**r.timings, "fuse_s": fuse_s}
            if fused is None:
                out.append(_only_best(r, fuser=fuser.name, fuser_error=error, timings=timings))
            else:
                out.append(replace(r, text=fused[j], fused=True, fuser=fuser.name, timings=timings))
        return out

    def rank_and_fuse(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        top_k: int | None = None,
        strategy: str | None = None,
        **generate_kwargs: Any,
    ) -> list[BlendResult]:
        """Rank each prompt's candidates and fuse the top K (without a fuser: return the best).

        A fuser that raises falls back to the best candidate (``fuser_error`` says why) unless
        ``fallback_on_fuser_error`` is off. ``generate_kwargs`` go to the fuser.
        """
        ranked = self.rank(prompts, candidates, top_k=top_k, strategy=strategy)
        if self.fuser is None:
            return ranked
        start = time.perf_counter()
        fused: list[str] | None = None
        error = None
        try:
            fused = self.fuser.fuse(
                list(prompts), [[r.candidates[i] for i in r.chosen] for r in ranked], **generate_kwargs
            )
        except Exception as exc:
            error = self._fusion_failed(exc)
        return self._fused(ranked, fused, error, time.perf_counter() - start)

    async def arank_and_fuse(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        top_k: int | None = None,
        strategy: str | None = None,
        **generate_kwargs: Any,
    ) -> list[BlendResult]:
        """Async :meth:`rank_and_fuse`: ranking in a worker thread, fusion through the fuser's ``afuse``."""
        ranked = await self.arank(prompts, candidates, top_k=top_k, strategy=strategy)
        if self.fuser is None:
            return ranked
        start = time.perf_counter()
        fused: list[str] | None = None
        error = None
        try:
            fused = await self.fuser.afuse(
                list(prompts), [[r.candidates[i] for i in r.chosen] for r in ranked], **generate_kwargs
            )
        except Exception as exc:
            error = self._fusion_failed(exc)
        return self._fused(ranked, fused, error, time.perf_counter() - start)

    def stream_fuse(self, prompt: str, result: BlendResult, **generate_kwargs: Any) -> Iterator[str]:
        """Stream the fusion of a ranked result's chosen candidates (without a fuser: yield the best one)."""
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


def _only_best(result: BlendResult, **changes: Any) -> BlendResult:
    """The result answering with its best candidate (not fused): ``chosen`` is that candidate alone."""
    return replace(result, chosen=(result.best,), text=result.candidates[result.best], fused=False, **changes)

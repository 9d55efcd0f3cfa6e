"""The PairRanker as an LCEL step over a dict of candidates: ``{"prompt": ..., "candidates": [...]}``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from typing_extensions import override

from blender_core.ensemble.pipeline import Blender
from blender_core.ranking.pair_ranker import PairRanker

from .selection import as_blender
from .tool_calls import ranking_text

_PROMPT_KEYS = ("prompt", "input")


def _text(candidate: Any, where: str) -> str:
    if isinstance(candidate, str):
        return candidate
    if isinstance(candidate, BaseMessage):
        return ranking_text(candidate)
    raise TypeError(f"{where} is a {type(candidate).__name__}; candidates must be strings or messages")


def _parse(value: Any) -> tuple[str, list[Any]]:
    if not isinstance(value, Mapping):
        raise TypeError(
            f"PairRankerRunnable takes a dict with 'prompt' (or 'input') and 'candidates', got {type(value).__name__}"
        )
    key = next((k for k in _PROMPT_KEYS if k in value), None)
    if key is None or "candidates" not in value:
        raise KeyError(
            f"PairRankerRunnable needs keys 'prompt' (or 'input') and 'candidates'; got {sorted(value)}"
        )
    prompt, candidates = value[key], value["candidates"]
    if not isinstance(prompt, str):
        raise TypeError(f"{key!r} must be a str, got {type(prompt).__name__}")
    if isinstance(candidates, str) or not isinstance(candidates, Sequence) or not candidates:
        raise ValueError("'candidates' must be a non-empty list of strings or messages")
    return prompt, list(candidates)


class PairRankerRunnable(Runnable[dict[str, Any], Any]):
    """Rank ``{"prompt" | "input": str, "candidates": [str | message, ...]}`` with the PairRanker.

    With ``output="ranking"`` (default) it returns ``{"best": <candidate>, "best_index", "order", "ranks",
    "scores", "ranked": [<candidates best first>]}``; with ``output="best"`` the best candidate itself (a
    string or the message, unchanged). ``batch`` ranks all inputs in one batched ranker pass.

    Example:
        .. code-block:: python

            chain = RunnableParallel(prompt=itemgetter("q"), candidates=answers) | PairRankerRunnable(ranker, output="best")
    """

    def __init__(
        self,
        ranker: PairRanker | Blender | str | Path | None = None,
        *,
        strategy: str = "full",
        output: Literal["ranking", "best"] = "ranking",
        name: str = "PairRanker",
    ) -> None:
        if output not in ("ranking", "best"):
            raise ValueError(f"output must be 'ranking' or 'best', got {output!r}")
        self._ranker = ranker
        self._blender: Blender | None = ranker if isinstance(ranker, Blender) else None
        self.strategy = strategy
        self.output = output
        self.name = name

    @property
    def blender(self) -> Blender:
        if self._blender is None:
            self._blender = as_blender(self._ranker, self.strategy)
        return self._blender

    def _rank_many(self, inputs: list[dict[str, Any]]) -> list[Any]:
        parsed = [_parse(v) for v in inputs]
        texts = [
            [_text(c, f"candidates[{i}] of input {k}") for i, c in enumerate(cands)]
            for k, (_, cands) in enumerate(parsed)
        ]
        results = self.blender.rank_and_fuse(
            [p for p, _ in parsed], texts, fuse=False, strategy=self.strategy
        )
        out = []
        for (_, cands), r in zip(parsed, results, strict=True):
            order = list(r.ranking.order) if r.ranking is not None else [0]
            ranks = [int(x) for x in r.ranking.ranks] if r.ranking is not None else [1]
            best = cands[r.best]
            if self.output == "best":
                out.append(best)
            else:
                out.append(
                    {
                        "best": best,
                        "best_index": r.best,
                        "order": order,
                        "ranks": ranks,
                        "scores": [float(s) for s in r.scores],
                        "ranked": [cands[i] for i in order],
                    }
                )
        return out

    @override
    def invoke(self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(lambda v: self._rank_many([v])[0], input, config, run_type="chain")

    @override
    async def ainvoke(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        async def rank(v: dict[str, Any]) -> Any:
            return (await asyncio.to_thread(self._rank_many, [v]))[0]

        return await self._acall_with_config(rank, input, config, run_type="chain")

    @override
    def batch(
        self,
        inputs: list[dict[str, Any]],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        return self._batch_with_config(
            self._rank_many, inputs, config, return_exceptions=return_exceptions, run_type="chain"
        )

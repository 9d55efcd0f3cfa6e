"""The PairRanker as an LCEL step over a dict of candidates: ``{"prompt": ..., "candidates": [...]}``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from typing_extensions import override

from blender_core.base.validation import check_choice
from blender_core.ranking.interface import Ranker
from blender_core.ranking.registry import RankerSpec, check_ranker_spec, load_ranker
from blender_core.ranking.strategies import STRATEGIES

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
    """Rank ``{"prompt" | "input": str, "candidates": [str | message, ...]}`` with a ranker (PairRM by default).

    With ``output="ranking"`` (default) it returns ``{"best": <candidate>, "best_index", "order", "ranks",
    "scores", "ranked": [<candidates best first>]}``; with ``output="best"`` the best candidate itself (a
    string or the message, unchanged). ``batch`` ranks all inputs in one batched ranker pass.

    Example:
        .. code-block:: python

            chain = RunnableParallel(prompt=itemgetter("q"), candidates=answers) | PairRankerRunnable(ranker, output="best")
    """

    def __init__(
        self,
        ranker: RankerSpec = None,
        *,
        strategy: str = "full",
        output: Literal["ranking", "best"] = "ranking",
        name: str = "PairRanker",
    ) -> None:
        """Args:
        ranker: a ranker, a folder / hub id / built-in name (loaded on first use), or None for the default.
        strategy: ranking strategy (``full``, ``knockout``, ``bubble``, ``sort``).
        output: ``ranking`` (the whole account) or ``best`` (the best candidate itself).
        name: the run name in traces.
        """
        if output not in ("ranking", "best"):
            raise ValueError(f"output must be 'ranking' or 'best', got {output!r}")
        self._ranker = check_ranker_spec(ranker)
        self.strategy = check_choice(strategy, STRATEGIES, "strategy")
        self.output = output
        self.name = name

    @property
    def ranker(self) -> Ranker:
        """The ranker, loaded on first use."""
        return load_ranker(self._ranker)

    def _rank_many(self, inputs: list[dict[str, Any]]) -> list[Any]:
        parsed = [_parse(v) for v in inputs]
        texts = [
            [_text(c, f"candidates[{i}] of input {k}") for i, c in enumerate(cands)]
            for k, (_, cands) in enumerate(parsed)
        ]
        rankings = self.ranker.rank([p for p, _ in parsed], texts, strategy=self.strategy)
        out = []
        for (_, cands), r in zip(parsed, rankings, strict=True):
            order = list(r.order)
            ranks = [int(x) for x in r.ranks]
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

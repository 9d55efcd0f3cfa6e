"""One ``rank`` call of the LLM judge: the strategies' rounds over every prompt, each distinct comparison
asked once, its verdict, the token usage charged and the issues met, and the rankings they make.

A comparison is (question, answer A, answer B). One asked by several prompts or rounds is asked once; its
usage is charged to the first prompt that asked for it (the rankings' usages add up to what was spent), its
issue is reported in every ranking that used it. Two identical texts are a tie without a call.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping

from blender_core.base.results import Ranking
from blender_core.base.usage import sum_usage
from blender_core.ranking import strategies
from blender_core.ranking.judge.calls import CallOutcome
from blender_core.ranking.judge.verdict import VERDICT_VALUES, excerpt, parse_verdict

logger = logging.getLogger(__name__)

Comparison = tuple[str, str, str]  # (question, answer A, answer B)
Asked = tuple[int, strategies.Pair]  # (prompt index, (i, j))


class JudgeSession:
    """One ``rank`` call's comparisons: each asked once, its verdict, the usage charged and issues met."""

    def __init__(self, prompts: list[str], candidates: list[list[str]], strategy: str, aggregation: str) -> None:
        self.prompts = prompts
        self.candidates = candidates
        self.strategy = strategy
        self.aggregation = aggregation
        self.values: dict[Comparison, float] = {}
        self.why: dict[Comparison, str] = {}  # why a comparison counted as a tie
        self.payer: dict[Comparison, int] = {}  # the prompt whose ranking is charged the call's usage
        self.usages: list[list[Mapping[str, int]]] = [[] for _ in prompts]
        self.issues: list[list[str]] = [[] for _ in prompts]

    def comparison(self, asked: Asked) -> Comparison:
        k, (i, j) = asked
        return self.prompts[k], self.candidates[k][i], self.candidates[k][j]

    def rounds(self, seed: int | None) -> strategies.Rounds:
        """The strategy's rounds for every prompt (see :func:`~blender_core.ranking.strategies.rounds`); ``seed`` orders ``bubble``."""
        rng = random.Random(seed)
        make: dict[str, Callable[[int], strategies.StrategyGen]] = {
            "full": lambda n: strategies.full(n, self.aggregation),
            "bubble": lambda n: strategies.bubble(n, rng.sample(range(n), n)),
            "knockout": strategies.knockout,
            "sort": strategies.merge_sort,
        }
        return strategies.rounds([make[self.strategy](len(c)) for c in self.candidates])

    def todo(self, asked: list[Asked]) -> list[Comparison]:
        """The comparisons of a round that need a call: not yet asked, and of two different texts."""
        todo: dict[Comparison, None] = {}
        for a in asked:
            c = self.comparison(a)
            if c[1] == c[2]:
                self.values[c] = 0.0
            elif c not in self.values and c not in todo:
                todo[c] = None
                self.payer[c] = a[0]
        return list(todo)

    def answer(self, asked: list[Asked], outcomes: Mapping[Comparison, CallOutcome]) -> list[float]:
        """Record the round's outcomes; the value of each asked comparison, and its issue if it has one."""
        for c, outcome in outcomes.items():
            self.values[c] = self._value(c, outcome)
        out = []
        for k, (i, j) in asked:
            c = self.comparison((k, (i, j)))
            if c in self.why:
                self.issues[k].append(
                    f"judge call with candidate {i} as A and {j} as B: {self.why[c]}; counted as a tie"
                )
            out.append(self.values[c])
        return out

    def _value(self, c: Comparison, outcome: CallOutcome) -> float:
        if outcome.reply is None:
            self.why[c] = outcome.error or "no reply"
            return 0.0
        if outcome.reply.usage:
            self.usages[self.payer[c]].append(outcome.reply.usage)
        verdict = parse_verdict(outcome.reply.text)
        if verdict is None:
            self.why[c] = f"no verdict ([[A]], [[B]] or [[C]]) in the reply {excerpt(outcome.reply.text)!r}"
            return 0.0
        return VERDICT_VALUES[verdict]

    def rankings(self, results: list[strategies.StrategyResult], n_forward: list[int]) -> list[Ranking]:
        """One :class:`Ranking` per prompt, with its usage and issues."""
        out = []
        for k, (r, f) in enumerate(zip(results, n_forward, strict=True)):
            if self.issues[k]:
                n, first = len(self.issues[k]), self.issues[k][0]
                logger.warning("%d judge comparison(s) of prompt %d counted as ties, e.g. %s", n, k, first)
            out.append(
                Ranking(
                    scores=r.scores,
                    ranks=r.ranks,
                    order=r.order,
                    best=r.order[0],
                    strategy=self.strategy,
                    aggregation=self.aggregation if self.strategy == "full" else None,
                    n_forward=f,
                    matrix=r.matrix,
                    scores_order=r.scores_order,
                    usage=sum_usage(self.usages[k]) if self.usages[k] else None,
                    issues=tuple(self.issues[k]),
                )
            )
        return out

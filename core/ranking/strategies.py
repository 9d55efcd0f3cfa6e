"""Ranking strategies as generators, so that one scheduler can batch their comparisons across prompts.

A strategy yields a list of ordered pairs (i, j) it needs (logit of candidate i in slot 1 vs j in slot 2),
receives a dict {(i, j): logit} back, and finally returns a :class:`StrategyResult`. Costs, in forward
passes for n candidates:

- ``full``: n(n-1), every ordered pair; scores from the matrix (``max_logits`` or ``max_wins``).
- ``bubble``: 2(n-1), the reference's best-of-n: one pass over a random permutation, the survivor of
  each both-order comparison goes on. Sequential: n-1 batched rounds.
- ``knockout``: 2(n-1), a single-elimination tournament; ceil(log2 n) batched rounds. For top-1.
- ``sort``: a bottom-up merge sort with both-order comparisons: at most 2(n log2 n - n + 1) passes,
  a full order; merges of one level run in the same batched round.

For the tournament strategies a candidate's score is its mean both-order margin M[i,j] - M[j,i] over the
matches it played, and its rank comes from the tournament (knockout: 1 + number of candidates that went
further; bubble: survivor first, then the others by reverse elimination; sort: position).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np

from blender_core.ranking.aggregation import order_from_scores, ranks_from_scores, scores_from_matrix

Pair = tuple[int, int]
StrategyGen = Generator[list[Pair], dict[Pair, float], "StrategyResult"]
#: (prompt index, ordered pair) of one comparison a round asks for
Asked = tuple[int, Pair]
#: the rounds of several prompts' strategies: yields each round's comparisons, receives their values,
#: returns each prompt's result and how many comparisons it asked for
Rounds = Generator[list[Asked], Sequence[float], tuple[list["StrategyResult"], list[int]]]
STRATEGIES: tuple[str, ...] = ("full", "bubble", "knockout", "sort")


@dataclass(frozen=True)
class StrategyResult:
    scores: np.ndarray
    ranks: np.ndarray
    order: tuple[int, ...]
    matrix: np.ndarray | None = None
    # only a full matrix's scores order the candidates; a tournament's are match margins
    scores_order: bool = False


class _Margins:
    """Both-order margins of the matches played, for the tournament strategies' scores."""

    def __init__(self, n: int) -> None:
        self.total = np.zeros(n)
        self.count = np.zeros(n)

    def play(self, a: int, b: int, logits: dict[Pair, float]) -> float:
        margin = logits[(a, b)] - logits[(b, a)]
        self.total[a] += margin
        self.total[b] -= margin
        self.count[a] += 1
        self.count[b] += 1
        return margin

    def scores(self) -> np.ndarray:
        return np.divide(self.total, self.count, out=np.zeros_like(self.total), where=self.count > 0)


def _both(a: int, b: int) -> list[Pair]:
    return [(a, b), (b, a)]


def full(n: int, aggregation: str = "max_logits") -> StrategyGen:
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    logits = yield pairs
    matrix = np.zeros((n, n))
    for (i, j), v in logits.items():
        matrix[i, j] = v
    scores = scores_from_matrix(matrix, aggregation)
    return StrategyResult(scores, ranks_from_scores(scores), order_from_scores(scores), matrix, True)


def bubble(n: int, permutation: Sequence[int]) -> StrategyGen:
    """The reference's best-of-n pass: ``cur`` beats ``next`` iff M[cur,next] - M[next,cur] > 0."""
    margins = _Margins(n)
    cur, eliminated = permutation[0], []
    for nxt in permutation[1:]:
        logits = yield _both(cur, nxt)
        if margins.play(cur, nxt, logits) > 0:
            eliminated.append(nxt)
        else:
            eliminated.append(cur)
            cur = nxt
    order = (cur, *reversed(eliminated))
    ranks = np.empty(n, dtype=np.int64)
    ranks[list(order)] = np.arange(1, n + 1)
    return StrategyResult(margins.scores(), ranks, tuple(int(i) for i in order))


def knockout(n: int) -> StrategyGen:
    """Single elimination: (0 v 1), (2 v 3), … with a bye for an odd one out; ties go to the first."""
    margins = _Margins(n)
    alive = list(range(n))
    reached = np.zeros(n, dtype=np.int64)  # rounds survived
    while len(alive) > 1:
        matches = [(alive[k], alive[k + 1]) for k in range(0, len(alive) - 1, 2)]
        logits = yield [p for a, b in matches for p in _both(a, b)]
        winners = [a if margins.play(a, b, logits) >= 0 else b for a, b in matches]
        if len(alive) % 2:
            winners.append(alive[-1])
        for w in winners:
            reached[w] += 1
        alive = winners
    ranks = 1 + (reached[None, :] > reached[:, None]).sum(axis=1)
    scores = margins.scores()
    # Best first: by rounds reached, then by mean margin among those eliminated in the same round.
    order = tuple(int(i) for i in sorted(range(n), key=lambda i: (-reached[i], -scores[i], i)))
    return StrategyResult(scores, ranks, order)


def merge_sort(n: int) -> StrategyGen:
    """Bottom-up merge sort; a comparison is won by ``left`` iff its both-order margin is >= 0."""
    margins = _Margins(n)
    runs: list[list[int]] = [[i] for i in range(n)]
    while len(runs) > 1:
        merges = [(runs[k], runs[k + 1]) for k in range(0, len(runs) - 1, 2)]
        outs: list[list[int]] = [[] for _ in merges]
        pos = [[0, 0] for _ in merges]
        while True:
            heads = {
                m: (left[pos[m][0]], right[pos[m][1]])
                for m, (left, right) in enumerate(merges)
                if pos[m][0] < len(left) and pos[m][1] < len(right)
            }
            if not heads:
                break
            logits = yield [p for a, b in heads.values() for p in _both(a, b)]
            for m, (a, b) in heads.items():
                side = 0 if margins.play(a, b, logits) >= 0 else 1
                outs[m].append(a if side == 0 else b)
                pos[m][side] += 1
        merged = [outs[m] + left[pos[m][0] :] + right[pos[m][1] :] for m, (left, right) in enumerate(merges)]
        if len(runs) % 2:
            merged.append(runs[-1])
        runs = merged
    order = tuple(runs[0])
    ranks = np.empty(n, dtype=np.int64)
    ranks[list(order)] = np.arange(1, n + 1)
    return StrategyResult(margins.scores(), ranks, order)


def rounds(gens: Sequence[StrategyGen]) -> Rounds:
    """Run one strategy generator per prompt, all prompts' comparisons of a round together: each round
    yields every prompt's ordered pairs as ``(prompt index, (i, j))`` and receives their values in that
    order; returns each prompt's result and how many comparisons it asked for. PairRM's batched forward
    passes and the LLM judge's concurrent calls both drive their strategies through it."""
    results: list[StrategyResult | None] = [None] * len(gens)
    n_forward = [0] * len(gens)
    pending: dict[int, list[Pair]] = {}
    for k, gen in enumerate(gens):
        try:
            pending[k] = next(gen)
        except StopIteration as stop:  # nothing to compare (a single candidate)
            results[k] = stop.value
    while pending:
        asked = [(k, p) for k, pairs in pending.items() for p in pairs]
        values = yield asked
        answers: dict[int, dict[Pair, float]] = {k: {} for k in pending}
        for (k, p), v in zip(asked, values, strict=True):
            answers[k][p] = v
        nxt = {}
        for k, pairs in pending.items():
            n_forward[k] += len(pairs)
            try:
                nxt[k] = gens[k].send(answers[k])
            except StopIteration as stop:
                results[k] = stop.value
        pending = nxt
    assert all(r is not None for r in results)
    return results, n_forward  # type: ignore[return-value]

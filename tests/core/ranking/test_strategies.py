"""The ranking strategies, driven by a consistent comparison oracle: M[i, j] = s_i - s_j for known scores s."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import pytest

from blender_core.ranking import strategies
from blender_core.ranking.strategies import StrategyGen, StrategyResult

SIZES = [2, 3, 4, 5, 7, 8, 13, 16]


@dataclass
class Run:
    result: StrategyResult
    rounds: list[list[tuple[int, int]]] = field(default_factory=list)

    @property
    def n_forward(self) -> int:
        return sum(map(len, self.rounds))


def drive(gen: StrategyGen, s: list[float]) -> Run:
    """Answer every requested ordered pair (i, j) with s[i] - s[j]; record the rounds."""
    rounds = []
    try:
        pairs = next(gen)
        while True:
            assert all(i != j for i, j in pairs)
            assert len(set(pairs)) == len(pairs)  # a round never asks twice
            rounds.append(pairs)
            pairs = gen.send({(i, j): s[i] - s[j] for i, j in pairs})
    except StopIteration as stop:
        return Run(stop.value, rounds)


def shuffled_scores(n: int, seed: int) -> list[float]:
    """Distinct scores in a random order."""
    s = [float(k) for k in range(n)]
    random.Random(seed).shuffle(s)
    return s


def true_order(s: list[float]) -> tuple[int, ...]:
    return tuple(sorted(range(len(s)), key=lambda i: -s[i]))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full(n: int, seed: int) -> None:
    s = shuffled_scores(n, seed)
    run = drive(strategies.full(n), s)
    assert run.n_forward == n * (n - 1)
    assert len(run.rounds) == 1
    assert run.result.matrix is not None
    assert run.result.matrix.ravel() == pytest.approx(np.subtract.outer(s, s).ravel())
    assert run.result.order == true_order(s)
    # max_logits of an exact oracle: mean_j 2 (s_i - s_j)
    assert run.result.scores == pytest.approx(2 * (np.array(s) - np.mean(s)))
    wins = drive(strategies.full(n, "max_wins"), s).result
    assert wins.order == true_order(s)
    assert wins.scores == pytest.approx([2.0 * sorted(s).index(v) for v in s])


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bubble(n: int, seed: int) -> None:
    s = shuffled_scores(n, seed)
    permutation = random.Random(seed + 100).sample(range(n), n)
    run = drive(strategies.bubble(n, permutation), s)
    assert run.n_forward == 2 * (n - 1)
    assert len(run.rounds) == n - 1  # sequential: one match per round
    assert run.result.order[0] == int(np.argmax(s))
    assert sorted(run.result.order) == list(range(n))
    assert run.result.ranks[list(run.result.order)].tolist() == list(range(1, n + 1))
    assert run.rounds[0] == [(permutation[0], permutation[1]), (permutation[1], permutation[0])]


def test_bubble_order_is_survivor_then_reverse_elimination() -> None:
    s = [1.0, 3.0, 0.0, 2.0]
    run = drive(strategies.bubble(4, [0, 1, 2, 3]), s)
    # 0 v 1: 1 wins (0 out); 1 v 2: 2 out; 1 v 3: 3 out -> survivor 1, then 3, 2, 0
    assert run.result.order == (1, 3, 2, 0)
    assert run.result.ranks.tolist() == [4, 1, 3, 2]
    # mean both-order margins of the matches played: 0 lost by 2*(1-3); 1 won by 4, 6, 2; 2 lost by 6; 3 lost by 2
    assert run.result.scores == pytest.approx([-4.0, 4.0, -6.0, -2.0])


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knockout(n: int, seed: int) -> None:
    s = shuffled_scores(n, seed)
    run = drive(strategies.knockout(n), s)
    assert run.n_forward == 2 * (n - 1)
    assert len(run.rounds) == math.ceil(math.log2(n))
    assert run.result.order[0] == int(np.argmax(s))
    assert run.result.ranks[int(np.argmax(s))] == 1
    assert sorted(run.result.order) == list(range(n))


def test_knockout_ranks_of_eight() -> None:
    s = [float(v) for v in (7, 0, 1, 6, 2, 5, 3, 4)]  # pairs (0 v 1)(2 v 3)(4 v 5)(6 v 7)
    r = drive(strategies.knockout(8), s).result
    # round 1 winners 0, 3, 5, 7; semifinals (0 v 3) (5 v 7): 0 and 5; final: 0.
    # Rank = 1 + number of candidates that went further: first-round losers share rank 5.
    assert r.ranks.tolist() == [1, 5, 5, 3, 5, 2, 5, 3]
    assert r.order[:2] == (0, 5)
    assert set(r.order[2:4]) == {3, 7}


def test_knockout_odd_n_gives_a_bye() -> None:
    s = [0.0, 1.0, 2.0, 3.0, 4.0]
    run = drive(strategies.knockout(5), s)
    # round 1: (0 v 1) (2 v 3), 4 has a bye; round 2: (1 v 3), 4 has a bye; final: (3 v 4)
    assert run.rounds == [[(0, 1), (1, 0), (2, 3), (3, 2)], [(1, 3), (3, 1)], [(3, 4), (4, 3)]]
    assert run.result.ranks.tolist() == [4, 3, 4, 2, 1]
    assert run.result.order[:3] == (4, 3, 1)


def test_knockout_of_two_and_a_tie() -> None:
    r = drive(strategies.knockout(2), [1.0, 3.0]).result
    assert (r.order, r.ranks.tolist()) == ((1, 0), [2, 1])
    assert r.scores == pytest.approx([-4.0, 4.0])
    tie = drive(strategies.knockout(2), [2.0, 2.0]).result
    assert tie.order == (0, 1)  # a tie goes to the first


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sort(n: int, seed: int) -> None:
    s = shuffled_scores(n, seed)
    run = drive(strategies.merge_sort(n), s)
    assert run.result.order == true_order(s)
    assert run.result.ranks.tolist() == [sorted(s, reverse=True).index(v) + 1 for v in s]
    assert run.n_forward <= 2 * (n * math.ceil(math.log2(n)) - n + 1)
    assert run.n_forward % 2 == 0


def test_sort_worst_case_bound_over_all_orders_of_five() -> None:
    from itertools import permutations

    bound = 2 * (5 * 3 - 5 + 1)
    worst = max(
        drive(strategies.merge_sort(5), list(map(float, p))).n_forward for p in permutations(range(5))
    )
    assert worst <= bound
    assert drive(strategies.merge_sort(2), [0.0, 1.0]).n_forward == 2


def test_sort_is_stable_on_ties() -> None:
    assert drive(strategies.merge_sort(4), [1.0, 2.0, 1.0, 2.0]).result.order == (1, 3, 0, 2)


@pytest.mark.parametrize("name", ["full", "bubble", "knockout", "sort"])
def test_every_strategy_finds_the_best_of_two(name: str) -> None:
    gen = {
        "full": strategies.full(2),
        "bubble": strategies.bubble(2, [0, 1]),
        "knockout": strategies.knockout(2),
        "sort": strategies.merge_sort(2),
    }[name]
    run = drive(gen, [0.5, -0.5])
    assert run.result.order == (0, 1)
    assert run.result.ranks.tolist() == [1, 2]
    assert run.n_forward == 2
    assert set(strategies.STRATEGIES) == {"full", "bubble", "knockout", "sort"}


def test_tournament_scores_are_not_an_order_and_say_so() -> None:
    """0 edges out 1 and then 2; 2 crushed 3 first: 2's mean margin tops the winner's."""
    margins = {(0, 1): 0.1, (2, 3): 10.0, (0, 2): 0.1}
    gen = strategies.knockout(4)
    pairs = next(gen)
    while True:
        logits = {(i, j): (margins[(i, j)] if (i, j) in margins else -margins[(j, i)]) / 2 for i, j in pairs}
        try:
            pairs = gen.send(logits)
        except StopIteration as stop:
            result: StrategyResult = stop.value
            break
    assert result.order[0] == 0
    assert result.scores[2] > result.scores[0]
    assert result.scores_order is False
    assert drive(strategies.full(4), [3.0, 2.0, 1.0, 0.0]).result.scores_order is True

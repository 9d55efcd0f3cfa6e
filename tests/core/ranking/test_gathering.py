"""Cross-request batching: concurrent rank calls share one batched forward pass, each with its own scores,
and a call with nobody waiting runs at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from blender_core.ranking.gathering import Gatherer, Gathering
from blender_core.ranking.pairrm.pair_ranker import PairRanker

PROMPTS = ["write a poem", "What is 2+2?", "explain the world", "list three numbers", "say hello", "the answer"]
CANDIDATES = [
    ["a good poem", "bad", "the answer is yes"],
    ["4", "five", "It is 4.", "the answer is four"],
    ["yes", "the world is good and the question is bad", "no"],
    ["one two three", "1 2 3"],
    ["hello", "hello world", "hi there, hello"],
    ["the answer", "an answer", "no answer at all"],
]


class Gate:
    """A run that blocks until released, recording each batch it is given (items are ints, values 2x)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: list[int]) -> np.ndarray:
        self.batches.append(list(items))
        self.entered.set()
        self.release.wait(5)
        if -1 in items:
            raise ValueError("bad item -1")
        return np.array([2.0 * x for x in items])


def test_concurrent_rank_calls_are_batched_and_score_exactly_as_alone(tiny_ranker: PairRanker) -> None:
    alone = [tiny_ranker.rank([p], [c])[0] for p, c in zip(PROMPTS, CANDIDATES, strict=True)]
    gathering = Gathering(window_s=0.2, max_calls=16)
    start = threading.Barrier(len(PROMPTS))
    gatherer = tiny_ranker.gatherer
    runs_before = gatherer.runs

    def rank(k: int) -> np.ndarray:
        start.wait()
        return tiny_ranker.rank([PROMPTS[k]], [CANDIDATES[k]], gathering=gathering)[0].scores

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        gathered = list(pool.map(rank, range(len(PROMPTS))))
    assert gatherer.runs > runs_before  # calls did share a forward-pass engine call
    assert gatherer.largest > 1
    for got, want in zip(gathered, alone, strict=True):
        assert np.array_equal(got, want.scores)  # bit for bit


def test_a_lone_call_does_not_wait_for_the_window(tiny_ranker: PairRanker) -> None:
    tiny_ranker.rank([PROMPTS[0]], [CANDIDATES[0]])  # warm
    start = time.perf_counter()
    tiny_ranker.rank([PROMPTS[0]], [CANDIDATES[0]], gathering=Gathering(window_s=3.0, max_calls=16))
    assert time.perf_counter() - start < 1.0


def test_waiting_calls_are_gathered_up_to_max_calls() -> None:
    gate = Gate()
    gather = Gatherer(gate)
    gathering = Gathering(window_s=0.3, max_calls=2)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(gather, [1], gathering)  # alone: runs at once, held by the gate
        assert gate.entered.wait(5)
        rest = [pool.submit(gather, [k], gathering) for k in (2, 3, 4)]
        time.sleep(0.05)  # the three queue behind the running call
        gate.release.set()
        values = [f.result(5).tolist() for f in (first, *rest)]
    assert values == [[2.0], [4.0], [6.0], [8.0]]
    assert gate.batches[0] == [1]
    assert sorted(len(b) for b in gate.batches[1:]) == [1, 2]  # 3 waiting calls, at most 2 per batch


def test_a_queued_call_waits_out_its_window_and_no_longer() -> None:
    gate = Gate()
    gather = Gatherer(gate)
    gathering = Gathering(window_s=0.4, max_calls=16)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(gather, [1], gathering)
        assert gate.entered.wait(5)
        queued = pool.submit(gather, [2], gathering)
        time.sleep(0.05)
        arrived = time.perf_counter() - 0.05
        gate.release.set()  # the model is free; the queued call waits for others until its window is over
        assert first.result(5).tolist() == [2.0]
        assert queued.result(5).tolist() == [4.0]
        waited = time.perf_counter() - arrived
    assert 0.3 < waited < 1.5


def test_one_calls_error_stays_that_calls() -> None:
    gate = Gate()
    gather = Gatherer(gate)
    gathering = Gathering(window_s=0.3, max_calls=8)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(gather, [1], gathering)
        assert gate.entered.wait(5)
        good, bad = pool.submit(gather, [2, 3], gathering), pool.submit(gather, [-1], gathering)
        time.sleep(0.05)
        gate.release.set()
        assert first.result(5).tolist() == [2.0]
        assert good.result(5).tolist() == [4.0, 6.0]
        with pytest.raises(ValueError, match="bad item -1"):
            bad.result(5)
    assert [2, 3, -1] in gate.batches or [-1, 2, 3] in gate.batches  # they were gathered, then run alone


@pytest.mark.parametrize(("window_s", "max_calls"), [(-1.0, 2), (float("nan"), 2), (0.0, 0), (0.0, True)])
def test_bad_gathering_settings_are_refused(window_s: float, max_calls: int) -> None:
    with pytest.raises(ValueError, match="Gathering"):
        Gathering(window_s=window_s, max_calls=max_calls)


def test_gathered_single_comparisons_score_exactly_as_alone(tiny_ranker: PairRanker) -> None:
    # one comparison per call: alone, each is a forward pass of one row; gathered, rows of equal length
    # share a pass
    words = ["yes", "no", "good", "bad", "the", "a", "it", "is"]
    reqs = [("say hello", a, b) for a in words for b in words if a != b][:12]
    alone = [tiny_ranker.logits([r]) for r in reqs]
    start = threading.Barrier(len(reqs))
    gathering = Gathering(window_s=0.2, max_calls=16)

    def logit(k: int) -> np.ndarray:
        start.wait()
        return tiny_ranker.logits([reqs[k]], gathering=gathering)

    with ThreadPoolExecutor(len(reqs)) as pool:
        gathered = list(pool.map(logit, range(len(reqs))))
    assert tiny_ranker.gatherer.largest > 1
    assert [g.tolist() for g in gathered] == [a.tolist() for a in alone]  # bit for bit

"""A comparison's logit is the same bits whatever else its forward pass holds (fp32 on CPU).

This is what lets the ranker batch comparisons of concurrent requests together and still give each request
exactly the scores it gets alone (:mod:`blender_core.ranking.gathering`).
"""

from __future__ import annotations

import random

import numpy as np

from blender_core.ranking.pairrm.pair_ranker import PairRanker

WORDS = "the a an of to and in is it that for on with as was be by this are or from at which answer".split()


def comparisons(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    return [(text(rng.randint(2, 8)), text(rng.randint(1, 10)), text(rng.randint(1, 10))) for _ in range(n)]


def test_a_logit_does_not_depend_on_its_batch(tiny_ranker: PairRanker) -> None:
    reqs = comparisons(60)
    lengths = [
        len(s)
        for s in (
            tiny_ranker.encoder.build(
                tiny_ranker.encoder.encode_sources([s])[0],
                tiny_ranker.encoder.encode_candidates([a])[0],
                tiny_ranker.encoder.encode_candidates([b])[0],
            )
            for s, a, b in reqs
        )
    ]
    assert len(set(lengths)) < len(lengths)  # some share a length, so exact batches hold several rows
    alone = tiny_ranker.logits(reqs, batch_size=1)
    assert np.array_equal(tiny_ranker.logits(reqs), alone)  # equal-length batches (the CPU default)
    padded = PairRanker(
        tiny_ranker.model, tiny_ranker.tokenizer, device="cpu", batch_size=32, exact_batches=False
    )
    assert np.array_equal(padded.logits(reqs), alone)  # and padded ones, here

"""The per-call ``batch_size`` of PairRanker's verbs: None means the ranker's own; anything but a positive int
is a ValueError naming the verb and the argument, raised before any work (it used to fall back silently)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from blender_core.ranking.pairrm.batching import pair_logits
from blender_core.ranking.pairrm.pair_ranker import PairRanker

P = "write a poem"
PAIR = ["yes", "no"]
BAD = [0, -3, 2.5, "8", True]


def _calls(ranker: PairRanker) -> dict[str, Any]:
    return {
        "rank": lambda b: ranker.rank([P], [PAIR], batch_size=b),
        "compare": lambda b: ranker.compare([P], ["yes"], ["no"], batch_size=b),
        "logits": lambda b: ranker.logits([(P, "yes", "no")], batch_size=b),
        "score_matrix": lambda b: ranker.score_matrix(P, PAIR, batch_size=b),
        "rank_with_ref": lambda b: ranker.rank_with_ref([P], [PAIR], batch_size=b),
        "compare_conversations": lambda b: ranker.compare_conversations(
            [[{"role": "user", "content": P}, {"role": "assistant", "content": "yes"}]],
            [[{"role": "user", "content": P}, {"role": "assistant", "content": "no"}]],
            batch_size=b,
        ),
    }


@pytest.mark.parametrize("verb", ["rank", "compare", "logits", "score_matrix", "rank_with_ref", "compare_conversations"])
@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_a_bad_batch_size_is_named(tiny_ranker: PairRanker, verb: str, bad: object) -> None:
    message = (
        rf"^{verb}\(\): batch_size must be a positive int \(comparisons per forward pass\) or None for the "
        rf"ranker's own, got {bad!r}$"
    )
    with pytest.raises(ValueError, match=message):
        _calls(tiny_ranker)[verb](bad)


def test_a_single_candidate_call_checks_it_too(tiny_ranker: PairRanker) -> None:
    # nothing to compare, so no forward pass would ever see the batch size
    with pytest.raises(ValueError, match=r"^rank\(\): batch_size must be a positive int"):
        tiny_ranker.rank([P], [["only one"]], batch_size=0)


def test_good_batch_sizes_give_the_same_logits(tiny_ranker: PairRanker) -> None:
    reqs = [(P, "yes", "no"), (P, "no", "yes"), ("hello", "a b c", "d")]
    default = tiny_ranker.logits(reqs)
    for size in (None, 1, 2, np.int64(3)):
        assert tiny_ranker.logits(reqs, batch_size=size) == pytest.approx(default, abs=1e-6)  # type: ignore[arg-type]


def test_the_engine_refuses_a_batch_size_below_one(tiny_ranker: PairRanker) -> None:
    with pytest.raises(ValueError, match=r"^pair_logits\(\): batch_size must be a positive int, got 0$"):
        pair_logits(
            tiny_ranker.model,
            tiny_ranker.encoder,
            [(P, "yes", "no")],
            batch_size=0,
            exact=True,
            pad_id=0,
            device=tiny_ranker.device,
            cache=tiny_ranker._cache,
        )

"""Synthetic 'plainly worse' pairs: each kind on a crafted candidate set, and the config checks."""

from __future__ import annotations

import pytest

from blender_core.data.records import CandidateSet, Pair
from blender_core.training.ranker.augment import synthetic_pairs
from blender_core.training.ranker.config import TrainConfig

BEST = "Paris is the capital of France. It lies on the Seine and has about two million people living there."
SETS = [
    CandidateSet("What is the capital of France?\nAnswer briefly.", ("Lyon.", BEST), (1.0, 2.0)),
    CandidateSet("Name a prime number.", ("Seven is a prime number.",), (2.0,)),
    CandidateSet("unscored", ("x", "y")),
]


def _one(kind: str) -> Pair:
    pairs = [p for p in synthetic_pairs(SETS, kinds=[kind], rate=1.0, seed=0) if p.prompt == SETS[0].prompt]
    assert len(pairs) == 1
    assert pairs[0].a == BEST  # the anchor is the best-scored answer, always the better side
    assert pairs[0].label == 0
    assert pairs[0].source == f"augment:{kind}"
    return pairs[0]


def test_truncate_keeps_a_prefix() -> None:
    cut = _one("truncate").b
    assert BEST.startswith(cut)
    assert 0.2 * len(BEST) < len(cut) < 0.7 * len(BEST)


def test_repeat_repeats_the_first_sentence() -> None:
    text = _one("repeat").b
    assert text.startswith("Paris is the capital of France. Paris is the capital of France.")


def test_echo_copies_the_prompt_lines() -> None:
    assert _one("echo").b in {"Answer briefly.", "What is the capital of France?\nAnswer briefly."}


def test_off_topic_takes_another_prompts_answer() -> None:
    assert _one("off_topic").b == "Seven is a prime number."


def test_pad_appends_another_prompts_sentences() -> None:
    text = _one("pad").b
    assert text == BEST + "\n\n" + "Seven is a prime number."  # longer than the anchor, and worse


def test_rate_zero_and_errors() -> None:
    assert synthetic_pairs(SETS, rate=0.0) == []
    with pytest.raises(ValueError, match=r"unknown augmentation 'swap'; choose from 'truncate'"):
        synthetic_pairs(SETS, kinds=["swap"])
    with pytest.raises(ValueError, match=r"unknown augmentation 'swap'"):
        TrainConfig(augment=("swap",))
    with pytest.raises(ValueError, match=r"augment_rate must be in \[0, 1\], got 2"):
        TrainConfig(augment_rate=2)

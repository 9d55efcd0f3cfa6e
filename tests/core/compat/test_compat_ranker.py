"""blender_core.compat.Blender: the llm-blender drop-in, against golden values of the reference package."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from blender_core.compat import Blender, BlenderConfig, RankerConfig
from blender_core.ranking.pairrm.conversations import conversations_to_pairs
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from tests.helpers.golden_inputs import (
    BUBBLE_SEED,
    CONVERSATION_LIMITS,
    GOLDEN_CANDIDATES,
    GOLDEN_CONVERSATIONS_A,
    GOLDEN_CONVERSATIONS_B,
    GOLDEN_INPUTS,
    GOLDEN_INSTRUCTIONS,
)

# ---------------------------------------------------------------- golden values
# The GOLDEN_* values come from
# llm-blender 0.0.2 run by that script on the `tiny_reference_ckpt` checkpoint (seed 0, limits 24/16),
# batch_size=1 (the reference's per-prompt truncation).

# From llm-blender 0.0.2 (scripts/make_golden_scores.py), batch_size=1.
GOLDEN_RANK_SCORES = [
    [-0.16078805923461914, 1.080785870552063, -0.9199978709220886],
    [-0.27405503392219543, -0.5506157875061035, 0.8246708512306213],
    [-0.7498433589935303, 0.5183062553405762, 0.2315371185541153],
]
GOLDEN_COMPARE_AB = [-0.4253910779953003, -0.9698488712310791, -1.0830109119415283]
GOLDEN_COMPARE_BA = [-1.309950351715088, -0.1583753228187561, -0.018163681030273438]
GOLDEN_COMPARE_BOTH = [0.8845592737197876, -0.811473548412323, -1.0648472309112549]
GOLDEN_RANK_WITH_REF_SCORES = [
    [0.8845592737197876, 1.875434398651123, -0.0],
    [-0.010691583156585693, -0.0, 1.662539005279541],
    [-1.184682846069336, -0.0, -0.3702358603477478],
]
GOLDEN_BUBBLE_ALL = [
    [
        "no",
        "because the first reason is good and the second reason is better than the third.",
        "the answer is yes.",
    ],
    [
        "data",
        "sure, here is the code: it is a list of the first numbers of the world.",
        "print(list(range(3)))",
    ],
    ["hi! I am fine, thanks!", "bye!", "get out!"],
]
GOLDEN_CONVERSATION_LOGITS = [0.37768983840942383]
GOLDEN_CONVERSATION_LOGITS_AB = [0.24065661430358887]

DATA: dict[str, Any] = {
    "inputs": GOLDEN_INPUTS,
    "candidates": GOLDEN_CANDIDATES,
    "instructions": GOLDEN_INSTRUCTIONS,
}
PAIRS: dict[str, Any] = {
    "inputs": GOLDEN_INPUTS,
    "candidates_A": [c[0] for c in GOLDEN_CANDIDATES],
    "candidates_B": [c[2] for c in GOLDEN_CANDIDATES],
    "instructions": GOLDEN_INSTRUCTIONS,
}


@pytest.fixture(scope="module")
def blender(tiny_reference_ckpt: Path) -> Blender:
    b = Blender(BlenderConfig(device="cpu", use_tqdm=False))
    b.loadranker(tiny_reference_ckpt)
    return b


@pytest.fixture(scope="module")
def wide_blender(tiny_reference_ckpt: Path) -> Blender:
    b = Blender({"device": "cpu", "use_tqdm": False})
    b.loadranker(tiny_reference_ckpt, **CONVERSATION_LIMITS)
    return b


# ---------------------------------------------------------------- reference values
def test_rank_scores_match_reference(blender: Blender) -> None:
    scores = blender.rank(**DATA, return_scores=True, batch_size=1)
    assert scores.dtype == np.float32
    assert scores.shape == (3, 3)
    assert scores.tolist() == [pytest.approx(row, abs=1e-4) for row in GOLDEN_RANK_SCORES]


def test_rank_is_batch_size_independent(blender: Blender) -> None:
    """Per-prompt truncation: any batch size gives the reference's batch_size=1 numbers."""
    scores = blender.rank(**DATA, return_scores=True, batch_size=5)
    assert scores.tolist() == [pytest.approx(row, abs=1e-4) for row in GOLDEN_RANK_SCORES]


@pytest.mark.parametrize(
    ("mode", "golden"),
    [("[A,B]", GOLDEN_COMPARE_AB), ("[B,A]", GOLDEN_COMPARE_BA), ("[A,B]+[B,A]", GOLDEN_COMPARE_BOTH)],
)
def test_compare_modes_match_reference(blender: Blender, mode: str, golden: list[float]) -> None:
    logits = blender.compare(**PAIRS, return_logits=True, mode=mode, batch_size=1)
    assert logits.dtype == np.float32
    assert logits.tolist() == pytest.approx(golden, abs=1e-4)
    flags = blender.compare(**PAIRS, mode=mode)
    assert flags.dtype == np.bool_
    assert flags.tolist() == [g > 0 for g in golden]


def test_rank_with_ref_matches_reference(blender: Blender) -> None:
    scores = blender.rank_with_ref(**DATA, return_scores=True, batch_size=1)
    assert scores.dtype == np.float64  # as the reference (a float64 buffer of float32 logits)
    assert scores.tolist() == [pytest.approx(row, abs=1e-4) for row in GOLDEN_RANK_WITH_REF_SCORES]


def test_bubble_best_of_n_matches_reference_under_seed(blender: Blender) -> None:
    torch.manual_seed(BUBBLE_SEED)
    assert blender.get_best_of_n(**DATA, return_all=True, batch_size=1) == GOLDEN_BUBBLE_ALL
    torch.manual_seed(BUBBLE_SEED)
    assert blender.get_best_of_n(**DATA, batch_size=1) == [c[0] for c in GOLDEN_BUBBLE_ALL]


def test_compare_conversations_matches_reference(wide_blender: Blender) -> None:
    logits = wide_blender.compare_conversations(
        GOLDEN_CONVERSATIONS_A, GOLDEN_CONVERSATIONS_B, return_logits=True
    )
    assert logits.tolist() == pytest.approx(GOLDEN_CONVERSATION_LOGITS, abs=1e-4)
    ab = wide_blender.compare_conversations(
        GOLDEN_CONVERSATIONS_A, GOLDEN_CONVERSATIONS_B, return_logits=True, mode="[A,B]"
    )
    assert ab.tolist() == pytest.approx(GOLDEN_CONVERSATION_LOGITS_AB, abs=1e-4)
    assert wide_blender.compare_conversations(GOLDEN_CONVERSATIONS_A, GOLDEN_CONVERSATIONS_B).tolist() == [
        True
    ]


# ---------------------------------------------------------------- semantics
def test_ranks_follow_scores_and_ties_share_the_better_rank(blender: Blender) -> None:
    ranks = blender.rank(**DATA)
    assert ranks.dtype == np.int32
    assert ranks.tolist() == [[2, 1, 3], [2, 3, 1], [3, 1, 2]]  # from GOLDEN_RANK_SCORES
    tied = blender.rank(["q"], [["same answer", "same answer", "other"]], return_scores=True)
    assert tied[0, 0] == tied[0, 1]
    ranks = blender.rank(["q"], [["same answer", "same answer", "other"]])
    assert ranks[0, 0] == ranks[0, 1]
    assert sorted(ranks[0].tolist()) in ([1, 1, 3], [1, 2, 2])


def test_rank_agrees_with_core_ranker(blender: Blender, tiny_ranker: PairRanker) -> None:
    sources = [i + x for i, x in zip(GOLDEN_INSTRUCTIONS, GOLDEN_INPUTS, strict=True)]
    core = np.stack([r.scores for r in tiny_ranker.rank(sources, GOLDEN_CANDIDATES)])
    np.testing.assert_allclose(blender.rank(**DATA, return_scores=True), core, atol=1e-6)


def test_single_candidate_gets_score_zero_rank_one(blender: Blender) -> None:
    assert blender.rank(["q", "r"], [["a"], ["b"]], return_scores=True).tolist() == [[0.0], [0.0]]
    assert blender.rank(["q", "r"], [["a"], ["b"]]).tolist() == [[1], [1]]
    assert blender.get_best_of_n(["q"], [["a"]]) == ["a"]
    assert blender.get_best_of_n(["q"], [["a"]], return_all=True) == [["a"]]


def test_compare_modes_relate(blender: Blender) -> None:
    ab = blender.compare(**PAIRS, return_logits=True, mode="[A,B]")
    swapped = {**PAIRS, "candidates_A": PAIRS["candidates_B"], "candidates_B": PAIRS["candidates_A"]}
    ba = blender.compare(**swapped, return_logits=True, mode="[A,B]")
    np.testing.assert_allclose(blender.compare(**PAIRS, return_logits=True, mode="[B,A]"), ba, atol=1e-6)
    both = blender.compare(**PAIRS, return_logits=True)
    np.testing.assert_allclose(both, ab - ba, atol=1e-5)
    np.testing.assert_allclose(blender.compare(**swapped, return_logits=True), -both, atol=1e-5)


def test_rank_kwargs_override_limits(blender: Blender, wide_blender: Blender) -> None:
    default = blender.rank(**DATA, return_scores=True)
    wider = blender.rank(**DATA, return_scores=True, source_max_length=256, candidate_max_length=128)
    assert not np.allclose(default, wider)  # the golden data truncates at 24/16
    np.testing.assert_allclose(wider, wide_blender.rank(**DATA, return_scores=True), atol=1e-6)
    assert blender.ranker is not None
    assert blender.ranker.model.config.source_maxlength == 24


def test_loadranker_records_its_config(wide_blender: Blender, tiny_reference_ckpt: Path) -> None:
    config = wide_blender.ranker_config
    assert config is not None
    assert (config.source_maxlength, config.candidate_maxlength) == (256, 128)
    assert config.load_checkpoint == str(tiny_reference_ckpt)
    assert config.device == "cpu"


def test_rank_with_ref_semantics(blender: Blender) -> None:
    scores = blender.rank_with_ref(**DATA, return_scores=True, ref_mode="first")
    assert scores[:, 0].tolist() == [0.0, 0.0, 0.0]  # the reference answer ties with itself
    pairs = blender.compare(
        GOLDEN_INPUTS,
        [c[0] for c in GOLDEN_CANDIDATES],
        [c[1] for c in GOLDEN_CANDIDATES],
        instructions=GOLDEN_INSTRUCTIONS,
        return_logits=True,
    )
    np.testing.assert_allclose(scores[:, 1], -pairs, atol=1e-6)
    given = blender.rank_with_ref(
        **DATA, return_scores=True, ref_candidates=[c[0] for c in GOLDEN_CANDIDATES]
    )
    np.testing.assert_allclose(given, scores, atol=1e-6)
    ranks = blender.rank_with_ref(**DATA, ref_mode="shortest")
    assert ranks.dtype == np.int32
    assert ranks.shape == (3, 3)


def test_compare_conversations_is_compare_on_the_formatted_texts(wide_blender: Blender) -> None:
    sources, a, b = conversations_to_pairs(GOLDEN_CONVERSATIONS_A, GOLDEN_CONVERSATIONS_B)
    direct = wide_blender.compare(sources, a, b, return_logits=True)
    conv = wide_blender.compare_conversations(
        GOLDEN_CONVERSATIONS_A, GOLDEN_CONVERSATIONS_B, return_logits=True
    )
    np.testing.assert_allclose(conv, direct, atol=1e-6)


def test_bubble_is_deterministic_under_a_seed_and_uses_one_permutation_per_chunk(blender: Blender) -> None:
    torch.manual_seed(123)
    first = blender.get_best_of_n(**DATA, return_all=True, batch_size=2)
    after = torch.rand(1)
    torch.manual_seed(123)
    assert blender.get_best_of_n(**DATA, return_all=True, batch_size=2) == first
    # The reference's RNG use: one DataLoader seed, then one randperm(n) per chunk of batch_size inputs.
    torch.manual_seed(123)
    torch.empty((), dtype=torch.int64).random_()
    torch.randperm(3), torch.randperm(3)
    assert torch.rand(1).item() == after.item()
    for cands, chosen in zip(GOLDEN_CANDIDATES, first, strict=True):
        assert sorted(chosen) == sorted(cands)


def test_full_best_and_worst_follow_ranks(blender: Blender) -> None:
    ranks = blender.rank(**DATA)
    best = blender.get_best_of_n(**DATA, pairrm_cmp_type="full")
    worst = blender.get_worst_of_n(**DATA, pairrm_cmp_type="full")
    assert best == [c[int(np.argmin(r))] for c, r in zip(GOLDEN_CANDIDATES, ranks, strict=True)]
    assert worst == [c[int(np.argmax(r))] for c, r in zip(GOLDEN_CANDIDATES, ranks, strict=True)]
    everything = blender.get_best_of_n(**DATA, pairrm_cmp_type="full", return_all=True)
    assert isinstance(everything, np.ndarray)  # as the reference
    assert everything.shape == (3, 3)
    assert everything[:, 0].tolist() == best


def test_bubble_worst_of_n(blender: Blender) -> None:
    torch.manual_seed(5)
    worst_all = blender.get_worst_of_n(**DATA, return_all=True, batch_size=1)
    torch.manual_seed(5)
    assert blender.get_worst_of_n(**DATA, batch_size=1) == [w[0] for w in worst_all]
    # Bubble keeps the survivor of every step: the worst one beats (is worse than) every one it met.
    for prompt, inst, chosen in zip(GOLDEN_INPUTS, GOLDEN_INSTRUCTIONS, worst_all, strict=True):
        n_met = len(chosen) - 1
        logits = blender.compare(
            [prompt] * n_met, [chosen[0]] * n_met, chosen[1:], [inst] * n_met, return_logits=True
        )
        assert (logits <= 0).all()


def test_trl_pairrm_judge_usage(tiny_reference_ckpt: Path) -> None:
    """What TRL's PairRMJudge does with llm_blender.Blender, line for line."""
    blender = Blender()
    blender.loadranker(str(tiny_reference_ckpt), device=torch.device("cpu"))
    prompts = ["Translate 'hello' to French", "What's the capital of Japan?"]
    completions = [["Bonjour", "Salut"], ["Kyoto", "Tokyo"]]
    flip_mask = np.array([True, False])
    completions = [pair[::-1] if flip else pair for flip, pair in zip(flip_mask, completions, strict=True)]
    ranks = blender.rank(prompts, completions, return_scores=False, disable_tqdm=True)
    ranks -= 1
    ranks[flip_mask] = ranks[flip_mask][:, ::-1]
    assert all(r in (0, 1) for r in ranks[:, 0].tolist())
    scores = blender.rank(prompts, completions, return_scores=True, disable_tqdm=True)
    scores /= 1.0
    scores[flip_mask] = scores[flip_mask][:, ::-1]
    exp = np.exp(scores - np.amax(scores, axis=-1, keepdims=True))
    probs = (exp / np.sum(exp, axis=-1, keepdims=True))[:, 0].tolist()
    assert all(0.0 < p < 1.0 for p in probs)


# ---------------------------------------------------------------- configs
def test_configs_from_dicts_and_reference_objects(tiny_reference_ckpt: Path) -> None:
    class ReferenceLikeConfig:  # llm_blender's configs are dataclass_json objects with to_dict()
        def to_dict(self) -> dict[str, Any]:
            return {"device": "cpu", "use_tqdm": False}

    assert Blender(ReferenceLikeConfig()).blender_config == BlenderConfig(device="cpu", use_tqdm=False)
    b = Blender(
        {"device": "cpu"}, ranker_config={"load_checkpoint": str(tiny_reference_ckpt), "source_maxlength": 30}
    )
    assert b.ranker is not None
    assert b.ranker.encoder.source_maxlength == 30
    assert b.ranker_config is not None
    assert b.ranker_config.ranker_type == "pairranker"
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.blender_config.use_tqdm = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: Blender({"device": "cpu", "colour": 1}), TypeError, r"unknown fields \['colour'\]"),
        (lambda: Blender(ranker_config=RankerConfig()), ValueError, "load_checkpoint is None"),
        (lambda: RankerConfig(ranker_type="deberta-rm"), ValueError, "only"),
        (lambda: RankerConfig(source_maxlength=2), ValueError, "source_maxlength must be an int >= 4"),
        (
            lambda: Blender(fuser_config={"model_name": "x", "torch_dtype": "int8"}),
            ValueError,
            "unknown torch_dtype",
        ),
        (
            lambda: Blender(fuser_config={"model_name": "x", "colour": 1}),
            TypeError,
            r"unknown fields \['colour'\]",
        ),
        (lambda: Blender(blender_config=3), TypeError, "blender_config must be a BlenderConfig"),
    ],
)
def test_config_errors(build: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build()


# ---------------------------------------------------------------- errors
def test_methods_need_a_loaded_ranker() -> None:
    with pytest.raises(RuntimeError, match=r"rank\(\) needs a ranker; load one first"):
        Blender().rank(["q"], [["a", "b"]])


def test_loadranker_rejects_unknown_kwargs(tiny_reference_ckpt: Path) -> None:
    with pytest.raises(TypeError, match=r"unknown arguments \['max_len'\]"):
        Blender().loadranker(tiny_reference_ckpt, device="cpu", max_len=3)


@pytest.mark.parametrize(
    ("method", "kwargs", "error", "match"),
    [
        (
            "rank",
            {"inputs": ["q"], "candidates": [["a", "b"], ["c", "d"]]},
            ValueError,
            "1 prompts but 2 candidate lists",
        ),
        (
            "rank",
            {"inputs": ["q", "r"], "candidates": [["a", "b"], ["c"]]},
            ValueError,
            "same number of candidates",
        ),
        ("rank", {"inputs": "q", "candidates": [["a", "b"]]}, TypeError, "single str"),
        ("rank", {"inputs": ["q"], "candidates": [["a", 3]]}, TypeError, "candidate 1 of prompt 0 is a int"),
        (
            "rank",
            {"inputs": ["q"], "candidates": [["a", "b"]], "instructions": ["x", "y"]},
            ValueError,
            "2 instructions",
        ),
        (
            "rank",
            {"inputs": ["q"], "candidates": [["a", "b"]], "max_length": 3},
            TypeError,
            "unknown arguments",
        ),
        (
            "rank",
            {"inputs": ["q"], "candidates": [["a", "b"]], "source_max_length": 2},
            ValueError,
            "an int >= 4",
        ),
        ("rank", {"inputs": ["q"], "candidates": [["a", "b"]], "batch_size": 0}, ValueError, "batch_size=0"),
        (
            "compare",
            {"inputs": ["q"], "candidates_A": ["a"], "candidates_B": ["b"], "mode": "A>B"},
            ValueError,
            "mode",
        ),
        (
            "compare",
            {"inputs": ["q"], "candidates_A": ["a", "x"], "candidates_B": ["b"]},
            ValueError,
            "equal length",
        ),
        (
            "rank_with_ref",
            {"inputs": ["q"], "candidates": [["a", "b"]], "mode": "longest"},
            ValueError,
            "ref_mode=",
        ),
        (
            "rank_with_ref",
            {"inputs": ["q"], "candidates": [["a", "b"]], "ref_mode": "best"},
            ValueError,
            "ref_mode",
        ),
        (
            "rank_with_ref",
            {"inputs": ["q"], "candidates": [["a", "b"]], "ref_candidates": []},
            ValueError,
            "0 ref_cand",
        ),
        (
            "get_best_of_n",
            {"inputs": ["q"], "candidates": [["a", "b"]], "pairrm_cmp_type": "x"},
            ValueError,
            "bubble",
        ),
        (
            "get_worst_of_n",
            {"inputs": ["q", "r"], "candidates": [["a", "b"], ["c"]]},
            ValueError,
            "same number",
        ),
        (
            "compare_conversations",
            {"conversations_a": [[{"role": "USER", "content": "hi"}]], "conversations_b": [[]]},
            ValueError,
            "user/assistant pairs",
        ),
    ],
)
def test_bad_input_errors(
    blender: Blender, method: str, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        getattr(blender, method)(**kwargs)

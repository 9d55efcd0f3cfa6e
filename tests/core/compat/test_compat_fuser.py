"""compat.Blender's fuser methods (loadfuser, fuse, rank_and_fuse, n_generate, best_of_n_generate)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from blender_core.compat import Blender, GenFuserConfig
from blender_core.fusion.seq2seq import GenFuser
from blender_core.testing.fusers import make_tiny_causal_lm, make_tiny_gen_fuser

GREEDY = {"num_beams": 1, "max_new_tokens": 8}
INPUTS = ["What is 2+2?", "Tell me about Paris."]
INSTRUCTIONS = ["Answer the question.", "Write a short answer."]
CANDIDATES = [
    ["The answer is 4.", "four", "It is 4 because 2 and 2 is 4.", "five"],
    ["Paris is the capital of France.", "a city", "the data value", "hello world"],
]


@pytest.fixture(scope="module")
def fuser_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gen_fuser(tmp_path_factory.mktemp("fuser"))


@pytest.fixture(scope="module")
def blender(fuser_dir: Path, tiny_reference_ckpt: Path) -> Blender:
    b = Blender({"device": "cpu", "use_tqdm": False})
    b.loadranker(tiny_reference_ckpt)
    b.loadfuser(fuser_dir, torch_dtype="float32")
    return b


def test_fuse_is_the_genfuser_with_the_references_argument_order(blender: Blender, fuser_dir: Path) -> None:
    ours = GenFuser.from_pretrained(fuser_dir, device="cpu", dtype="float32")
    expected = ours.fuse(INSTRUCTIONS, CANDIDATES, inputs=INPUTS, **GREEDY)
    assert blender.fuse(INPUTS, CANDIDATES, instructions=INSTRUCTIONS, **GREEDY) == expected
    no_instr = ours.fuse(["", ""], CANDIDATES, inputs=INPUTS, **GREEDY)
    assert blender.fuse(INPUTS, CANDIDATES, **GREEDY) == no_instr


def test_fuse_does_not_mutate_the_callers_lists(blender: Blender) -> None:
    long = " ".join(["the answer is good"] * 80)  # cut to 128 tokens inside; the reference edits the list
    cands = [[long, "four"], ["a", "b"]]
    before = copy.deepcopy(cands)
    blender.fuse(INPUTS, cands, **GREEDY)
    assert cands == before


def test_candidate_max_length_kwarg_changes_the_cut(blender: Blender, fuser_dir: Path) -> None:
    long = " ".join(["the answer is good because the data value"] * 20)
    cut4 = GenFuser.from_pretrained(
        fuser_dir, device="cpu", dtype="float32", candidate_maxlength=4
    )
    expected = cut4.fuse([""], [[long, "four"]], inputs=INPUTS[:1], **GREEDY)
    assert blender.fuse(INPUTS[:1], [[long, "four"]], candidate_max_length=4, **GREEDY) == expected
    assert blender.fuser.candidate_maxlength == 128  # the call did not change the loaded fuser


def test_rank_and_fuse_fuses_the_top_k_by_rank(blender: Blender) -> None:
    fused, ranks = blender.rank_and_fuse(INPUTS, CANDIDATES, instructions=INSTRUCTIONS, top_k=2, **GREEDY)
    expected_ranks = blender.rank(INPUTS, CANDIDATES, instructions=INSTRUCTIONS)
    np.testing.assert_array_equal(ranks, expected_ranks)
    top = [[c[i] for i in np.argsort(r)[:2]] for c, r in zip(CANDIDATES, ranks, strict=True)]
    assert fused == blender.fuse(INPUTS, top, instructions=INSTRUCTIONS, **GREEDY)
    fused_s, scores = blender.rank_and_fuse(
        INPUTS, CANDIDATES, instructions=INSTRUCTIONS, return_scores=True, top_k=2, **GREEDY
    )
    assert scores.dtype == np.float32
    assert fused_s == fused


def test_fuser_config_loads_at_construction(fuser_dir: Path) -> None:
    b = Blender(
        {"device": "cpu", "use_tqdm": False},
        fuser_config={"model_name": str(fuser_dir), "torch_dtype": "float32"},
    )
    assert isinstance(b.fuser, GenFuser)
    assert b.fuser_config.model_name == str(fuser_dir)


def test_fuser_errors() -> None:
    b = Blender({"device": "cpu", "use_tqdm": False})
    with pytest.raises(RuntimeError, match=r"call loadfuser\(path\) first"):
        b.fuse(INPUTS, CANDIDATES)
    with pytest.raises(TypeError, match="unknown arguments"):
        b.loadfuser("x", num_beams=3)
    with pytest.raises(ValueError, match="not supported"):
        b.loadfuser("x", load_in_4bit=True)
    with pytest.raises(ValueError, match="unknown torch_dtype"):
        GenFuserConfig(torch_dtype="int8")


def test_fuse_bad_input(blender: Blender) -> None:
    with pytest.raises(ValueError, match="2 prompts but 1 candidate lists"):
        blender.fuse(INPUTS, CANDIDATES[:1])
    with pytest.raises(ValueError, match="2 inputs but 1 instructions"):
        blender.fuse(INPUTS, CANDIDATES, instructions=INSTRUCTIONS[:1])
    with pytest.raises(ValueError, match="0 candidate"):
        blender.fuse(INPUTS, [[], ["a"]])
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        blender.rank_and_fuse(INPUTS, CANDIDATES, top_k=0)


def test_best_of_n_generate_picks_among_the_samples(blender: Blender, tmp_path: Path) -> None:
    path = make_tiny_causal_lm(tmp_path / "lm")
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    sampled = blender.n_generate(model, tok, INPUTS, n=3, max_new_tokens=5)
    assert [len(s) for s in sampled] == [3, 3]
    assert all(isinstance(t, str) for s in sampled for t in s)
    best = blender.best_of_n_generate(model, tok, INPUTS, n=3, max_new_tokens=5, pairrm_cmp_type="full")
    assert len(best) == 2
    assert all(isinstance(t, str) for t in best)
    with pytest.raises(ValueError, match="unknown sampling_mode"):
        blender.n_generate(model, tok, INPUTS, sampling_mode="beam")

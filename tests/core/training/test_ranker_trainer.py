"""The training loop on a tiny encoder: checkpoints, LoRA save/load round trips, the compact export, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from blender_core.data.records import read_records
from blender_core.ranking.pairrm.build import build_pairrm_from_encoder
from blender_core.ranking.pairrm.compact import DELTA_FILE, apply_compact, load_compact
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from blender_core.training.ranker.config import TrainConfig
from blender_core.training.ranker.trainer import RankerTrainer, lr_multiplier
from tests.helpers.training import make_candidate_file, make_pair_file, make_tiny_encoder

LIMITS = {"source_maxlength": 16, "candidate_maxlength": 24}
REQUESTS = [("write a poem 1", "great great poem", "awful the"), ("question 3", "bad", "good good yes")]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("enc"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, list]:
    root = tmp_path_factory.mktemp("data")
    train = read_records(make_candidate_file(root / "train.jsonl.gz", n=8)) + read_records(make_pair_file(root / "p.jsonl.gz"))
    dev = read_records(make_candidate_file(root / "dev.jsonl.gz", n=4, seed=9))
    return train, dev


def _logits(model: torch.nn.Module, tokenizer: object) -> np.ndarray:
    return PairRanker(model, tokenizer, device="cpu").logits(REQUESTS)  # type: ignore[arg-type]


def test_lr_schedule_warms_up_then_decays() -> None:
    assert lr_multiplier(0.05, 0.1) == pytest.approx(0.5)
    assert lr_multiplier(0.1, 0.1) == pytest.approx(1.0)
    assert lr_multiplier(0.55, 0.1) == pytest.approx(0.5)
    assert lr_multiplier(1.0, 0.1) == 0.0
    assert lr_multiplier(0.0, 0.0) == 1.0


def test_config_validation() -> None:
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'; choose one of 'instructgpt', 'bce', 'mse'"):
        TrainConfig(loss="hinge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown sampling 'best'"):
        TrainConfig(sampling="best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"warmup_ratio must be in \[0, 1\)"):
        TrainConfig(warmup_ratio=1.0)


def test_build_checks_the_position_limit(tiny_encoder: Path) -> None:
    with pytest.raises(ValueError, match=r"= 320 tokens exceeds the 256 positions"):
        build_pairrm_from_encoder(tiny_encoder, source_maxlength=64, candidate_maxlength=128)
    model, tok = build_pairrm_from_encoder(tiny_encoder, **LIMITS)
    emb = model.get_input_embeddings().weight
    ids = model.config.special_token_ids
    assert ids == tuple(range(len(tok) - 4, len(tok)))
    assert torch.equal(emb[ids[0]], emb[tok.sep_token_id])  # new rows start as [SEP]


def test_full_fine_tuning_writes_loadable_best_and_last(tiny_encoder: Path, data: tuple, tmp_path: Path) -> None:
    train, dev = data
    model, tok = build_pairrm_from_encoder(tiny_encoder, **LIMITS)
    config = TrainConfig(learning_rate=1e-3, max_steps=4, eval_every=2, save_every=0, batch_size=4, progress=False,
                         sampling="top_bottom", num_pos=2, num_neg=2, **LIMITS)
    result = RankerTrainer(model, tok, config).train(train, dev, tmp_path)
    assert result.steps == 4
    assert result.stopped_by == "max_steps"
    assert result.best_step in (2, 4)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log if "dev_accuracy" in row] == [2, 4]
    last = PairRanker.from_pretrained(tmp_path / "last", device="cpu")
    np.testing.assert_allclose(last.logits(REQUESTS), _logits(model, tok), rtol=1e-5, atol=1e-6)
    best = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert best["dev_accuracy"] == result.best_dev_accuracy


def test_lora_round_trips(tiny_encoder: Path, data: tuple, tmp_path: Path) -> None:
    train, _ = data
    model, tok = build_pairrm_from_encoder(tiny_encoder, **LIMITS)
    config = TrainConfig(lora=True, lora_r=4, lora_alpha=8, learning_rate=5e-2, max_steps=3, eval_every=0,
                         save_every=0, batch_size=4, progress=False, **LIMITS)
    trainer = RankerTrainer(model, tok, config, encoder_name=str(tiny_encoder))
    trainer.train(train, None, tmp_path)  # no dev: best = last
    # the merged native checkpoint
    merged = PairRanker.from_pretrained(tmp_path / "best", device="cpu").logits(REQUESTS)
    untrained, _ = build_pairrm_from_encoder(tiny_encoder, **LIMITS)
    assert not np.allclose(merged, _logits(untrained, tok), atol=1e-4)  # training changed something
    # the peft adapter, applied to a fresh base
    from peft import PeftModel

    base, tok2 = build_pairrm_from_encoder(tiny_encoder, **LIMITS)
    with_adapter = PeftModel.from_pretrained(base, tmp_path / "best" / "adapter").merge_and_unload()
    np.testing.assert_allclose(_logits(with_adapter, tok2), merged, rtol=1e-4, atol=1e-5)
    # the compact export: fp16 factors, close to the merged weights, a fraction of their size
    compact, tok3 = load_compact(tmp_path / "best" / "compact")
    np.testing.assert_allclose(_logits(compact, tok3), merged, rtol=2e-2, atol=2e-3)
    by_path = PairRanker.from_pretrained(tmp_path / "best" / "compact", device="cpu").logits(REQUESTS)
    np.testing.assert_allclose(by_path, _logits(compact, tok3), rtol=1e-5, atol=1e-6)
    assert (tmp_path / "best" / "compact" / DELTA_FILE).stat().st_size < 0.5 * (tmp_path / "best" / "model.safetensors").stat().st_size


def test_compact_export_rejects_a_mismatched_model(tiny_encoder: Path, data: tuple, tmp_path: Path) -> None:
    train, _ = data
    model, tok = build_pairrm_from_encoder(tiny_encoder, **LIMITS)
    config = TrainConfig(lora=True, lora_r=2, max_steps=1, eval_every=0, save_every=0, batch_size=2, progress=False, **LIMITS)
    RankerTrainer(model, tok, config, encoder_name=str(tiny_encoder)).train(train, None, tmp_path)
    other, _ = build_pairrm_from_encoder(tiny_encoder, n_tasks=2, **LIMITS)
    with pytest.raises(ValueError, match=r"head_layer.4.bias \(1,\) vs model \(2,\)"):
        apply_compact(other, tmp_path / "best" / "compact")


def test_resume_continues_where_the_run_stopped(tiny_encoder: Path, data: tuple, tmp_path: Path) -> None:
    train, _ = data
    common = {"learning_rate": 1e-3, "eval_every": 0, "save_every": 1, "batch_size": 4, "progress": False,
              "epochs": 1, **LIMITS}
    model, tok = build_pairrm_from_encoder(tiny_encoder, **LIMITS)
    first = RankerTrainer(model, tok, TrainConfig(max_steps=2, **common)).train(train, None, tmp_path)
    assert first.steps == 2
    model2, tok2 = build_pairrm_from_encoder(tiny_encoder, **LIMITS)
    second = RankerTrainer(model2, tok2, TrainConfig(max_steps=5, **common)).train(train, None, tmp_path, resume=True)
    assert second.steps == 5
    assert second.comparisons == 5 * 4
    state = json.loads((tmp_path / "state" / "trainer_state.json").read_text())
    assert state["step"] == 5
    assert state["batches"] == 5


def test_loss_rows_every_ten_steps(tiny_encoder: Path, data: tuple, tmp_path: Path) -> None:
    train, _ = data
    model, tok = build_pairrm_from_encoder(tiny_encoder, **LIMITS)
    config = TrainConfig(max_steps=20, eval_every=0, save_every=0, batch_size=2, progress=False, **LIMITS)
    result = RankerTrainer(model, tok, config).train(train, None, tmp_path)
    assert result.comparisons == 40
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [10, 20]
    assert all(set(row) == {"step", "loss", "lr", "elapsed_s"} for row in rows)
    assert rows[1]["lr"] == 0.0  # the schedule ends at the last step

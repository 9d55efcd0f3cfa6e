"""The shared training config: the checks both trainer configs inherit, and the defaults each overrides."""

from __future__ import annotations

from dataclasses import fields

import pytest

from blender_core.training.config import BaseTrainConfig
from blender_core.training.fuser.config import FuserTrainConfig
from blender_core.training.ranker.config import TrainConfig

BOTH = pytest.mark.parametrize("cls", [TrainConfig, FuserTrainConfig])


@BOTH
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mixed_precision": "fp8"}, r"unknown mixed_precision 'fp8'; choose one of 'auto', 'no', 'bf16', 'fp16'"),
        ({"max_steps": -1}, r"max_steps must be >= 0, got -1"),
        ({"eval_every": -5}, r"eval_every must be >= 0, got -5"),
        ({"warmup_ratio": 1.0}, r"warmup_ratio must be in \[0, 1\), got 1.0"),
        ({"learning_rate": 0.0}, r"learning_rate must be > 0, got 0.0"),
        ({"lora": True, "lora_r": 0}, r"lora_r must be"),
        ({"lora_dropout": 1.0}, r"dropouts must be in \[0, 1\), got .*lora_dropout=1.0"),
    ],
)
def test_both_configs_inherit_the_shared_checks(cls: type[BaseTrainConfig], kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (TrainConfig, r"^max_minutes, min_score_gap and max_grad_norm must be >= 0$"),
        (FuserTrainConfig, r"^max_minutes and max_grad_norm must be >= 0$"),
    ],
)
def test_a_subclass_extends_a_shared_check(cls: type[BaseTrainConfig], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(max_minutes=-1.0)
    with pytest.raises(ValueError, match=message):
        cls(max_grad_norm=-0.5)


def test_each_config_keeps_its_own_wording_where_it_is_stricter() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        FuserTrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="lora_r must be a positive int, got 0"):
        FuserTrainConfig(lora_r=0)  # a fuser asks for it even without LoRA
    assert TrainConfig(lora_r=0).lora_r == 0
    with pytest.raises(ValueError, match=r"unknown kind 'encoder'; choose one of auto, seq2seq, causal"):
        FuserTrainConfig(kind="encoder")  # type: ignore[arg-type]


def test_defaults_that_differ() -> None:
    ranker, fuser = TrainConfig(), FuserTrainConfig()
    assert (ranker.epochs, fuser.epochs) == (5, 1)
    assert (ranker.batch_size, fuser.batch_size) == (8, 2)
    assert (ranker.grad_accum, fuser.grad_accum) == (1, 4)
    assert (ranker.eval_every, fuser.eval_every) == (200, 50)
    assert ranker.lora_targets == ("query", "key", "value", "dense")
    assert fuser.lora_targets == ("all-linear",)
    assert ranker.learning_rate_or_default == 1e-5
    assert fuser.learning_rate_or_default == 5e-5
    assert FuserTrainConfig(lora=True).learning_rate_or_default == 2e-4
    base = BaseTrainConfig(learning_rate=1.0)
    for shared in ("weight_decay", "warmup_ratio", "max_grad_norm", "mixed_precision", "seed", "lora_r", "progress"):
        assert getattr(ranker, shared) == getattr(fuser, shared) == getattr(base, shared)


def test_the_base_has_no_default_learning_rate() -> None:
    with pytest.raises(ValueError, match=r"BaseTrainConfig has no default learning rate; set learning_rate"):
        BaseTrainConfig()
    with pytest.raises(ValueError, match=r"TrainConfig has no default learning rate"):
        TrainConfig(learning_rate=None)  # type: ignore[arg-type]


def test_to_dict_is_json_ready() -> None:
    d = TrainConfig(augment=("pad",), notes={"command": "x"}).to_dict()
    assert d["lora_targets"] == ["query", "key", "value", "dense"]
    assert d["augment"] == ["pad"]
    assert d["notes"] == {"command": "x"}
    assert FuserTrainConfig().to_dict()["lora_targets"] == ["all-linear"]
    assert {f.name for f in fields(BaseTrainConfig)} < set(d)

"""Fuser fine-tuning: examples built from ranked candidate sets, seq2seq or causal training with accelerate."""

from __future__ import annotations

from blender_core.training.fuser.config import FuserTrainConfig
from blender_core.training.fuser.examples import (
    FuserExample,
    build_examples,
    examples_from_alpacaeval,
    read_examples,
    split_examples,
    write_examples,
)
from blender_core.training.fuser.trainer import FuserTrainer, FuserTrainResult

__all__ = [
    "FuserExample",
    "FuserTrainConfig",
    "FuserTrainResult",
    "FuserTrainer",
    "build_examples",
    "examples_from_alpacaeval",
    "read_examples",
    "split_examples",
    "write_examples",
]

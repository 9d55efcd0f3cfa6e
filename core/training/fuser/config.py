"""The training configuration of a fuser: the shared fields (``training.config``) plus the model kind and
the example limits; one frozen dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

from blender_core.training.config import BaseTrainConfig, MixedPrecision

__all__ = ["FuserKind", "FuserTrainConfig", "MixedPrecision"]

FuserKind = Literal["auto", "seq2seq", "causal"]


@dataclass(frozen=True)
class FuserTrainConfig(BaseTrainConfig):
    """How to fine-tune a fuser on (instruction, top-K candidates → reference answer) examples.

    Example:
        >>> FuserTrainConfig(kind="causal", lora=True).learning_rate_or_default
        0.0002
    """

    # -- model --------------------------------------------------------------------------------
    # auto: an encoder-decoder config means seq2seq (GenFuser format), anything else causal (chat prompt).
    kind: FuserKind = "auto"

    # -- examples -----------------------------------------------------------------------------
    # The paper fuses the top 3 ranked candidates.
    top_k: int = 3
    # Published GenFuser limits: 128 tokens per candidate, 1024 for the whole source, 128 for the target.
    candidate_maxlength: int = 128
    max_source_length: int = 1024
    max_target_length: int = 128

    # -- optimisation (learning_rate None: see learning_rate_or_default) ------------------------
    # Examples per device per forward pass (fusion inputs are long: keep it small on CPU).
    batch_size: int = 2
    # Effective batch = batch_size x grad_accum x processes: 8 examples per step with the defaults.
    grad_accum: int = 4

    # -- evaluation and checkpoints -----------------------------------------------------------
    # Dev loss every this many optimizer steps (0: only at the end): fuser runs are short, look more often.
    eval_every: int = 50
    # Cap on dev examples so that evaluation stays cheap on CPU.
    dev_max_examples: int = 64

    _at_least_zero: ClassVar[tuple[str, ...]] = (*BaseTrainConfig._at_least_zero, "dev_max_examples")
    # Whole numbers that must be >= 1; a fuser asks for lora_r >= 1 even without LoRA.
    _positive_ints: ClassVar[tuple[str, ...]] = (
        "top_k", "candidate_maxlength", "max_source_length", "max_target_length", "epochs", "batch_size",
        "grad_accum", "lora_r",
    )

    def __post_init__(self) -> None:
        if self.kind not in get_args(FuserKind):
            raise ValueError(f"unknown kind {self.kind!r}; choose one of {', '.join(get_args(FuserKind))}")
        for name in self._positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        super().__post_init__()

    @property
    def learning_rate_or_default(self) -> float:
        """The learning rate: the given one, else 2e-4 with LoRA and the paper's 5e-5 without (the default None)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-4 if self.lora else 5e-5

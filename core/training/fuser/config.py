"""The training configuration of a fuser: one frozen dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

FuserKind = Literal["auto", "seq2seq", "causal"]
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]


@dataclass(frozen=True)
class FuserTrainConfig:
    """How to fine-tune a fuser on (instruction, top-K candidates → reference answer) examples.

    Example:
        >>> FuserTrainConfig(kind="causal", lora=True).learning_rate_or_default
        0.0002
    """

    # -- model --------------------------------------------------------------------------------
    # auto: an encoder-decoder config means seq2seq (GenFuser format), anything else causal (chat prompt).
    kind: FuserKind = "auto"
    # LoRA keeps the trained delta small and fits bigger fusers in memory; off = full fine-tuning.
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # "all-linear" lets peft pick every Linear layer except the output head; else comma-free module names.
    lora_targets: tuple[str, ...] = ("all-linear",)
    # Trade compute for memory on long inputs.
    gradient_checkpointing: bool = False

    # -- examples -----------------------------------------------------------------------------
    # The paper fuses the top 3 ranked candidates.
    top_k: int = 3
    # Published GenFuser limits: 128 tokens per candidate, 1024 for the whole source, 128 for the target.
    candidate_maxlength: int = 128
    max_source_length: int = 1024
    max_target_length: int = 128

    # -- optimisation -------------------------------------------------------------------------
    # None: the paper's 5e-5 for full fine-tuning, 2e-4 with LoRA.
    learning_rate: float | None = None
    # AdamW's usual decoupled weight decay for transformer fine-tuning.
    weight_decay: float = 0.01
    # Linear warm-up over this fraction of the steps, then linear decay to 0.
    warmup_ratio: float = 0.05
    epochs: int = 1
    # Examples per device per forward pass (fusion inputs are long: keep it small on CPU).
    batch_size: int = 2
    # Effective batch = batch_size x grad_accum x processes.
    grad_accum: int = 4
    # Gradient-norm clipping (0: off).
    max_grad_norm: float = 1.0
    # auto: bf16 on GPUs that have it (fp16 only for causal models: T5 overflows in fp16), none on CPU.
    mixed_precision: MixedPrecision = "auto"
    # Stop after this many optimizer steps (0: no bound); the LR schedule is fitted to it.
    max_steps: int = 0
    # Stop after this many minutes (0: no bound); the LR decays with elapsed time too.
    max_minutes: float = 0.0
    seed: int = 42

    # -- evaluation and checkpoints -----------------------------------------------------------
    # Dev loss every this many optimizer steps (0: only at the end); the best dev loss is kept in best/.
    eval_every: int = 50
    # Cap on dev examples so that evaluation stays cheap on CPU.
    dev_max_examples: int = 64
    progress: bool = True

    def __post_init__(self) -> None:
        if self.kind not in get_args(FuserKind):
            raise ValueError(f"unknown kind {self.kind!r}; choose one of {', '.join(get_args(FuserKind))}")
        if self.mixed_precision not in get_args(MixedPrecision):
            raise ValueError(
                f"unknown mixed_precision {self.mixed_precision!r}; choose one of {', '.join(get_args(MixedPrecision))}"
            )
        for name in (
            "top_k",
            "candidate_maxlength",
            "max_source_length",
            "max_target_length",
            "epochs",
            "batch_size",
            "grad_accum",
            "lora_r",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("max_steps", "eval_every", "dev_max_examples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_minutes < 0 or self.max_grad_norm < 0:
            raise ValueError("max_minutes and max_grad_norm must be >= 0")

    @property
    def learning_rate_or_default(self) -> float:
        """The learning rate: the given one, else 2e-4 with LoRA and the paper's 5e-5 without."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-4 if self.lora else 5e-5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

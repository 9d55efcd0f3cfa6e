"""The configuration every trainer shares: one frozen dataclass that ``TrainConfig`` (ranker) and
``FuserTrainConfig`` (fuser) extend, each overriding the defaults that differ and adding its own fields."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal, get_args

MixedPrecision = Literal["auto", "no", "bf16", "fp16"]


def _names(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


@dataclass(frozen=True)
class BaseTrainConfig:
    """How the shared training loop runs: LoRA, AdamW with warm-up and linear decay, bounds, evaluation.

    A subclass adds what is its own (data, loss, length limits), overrides the defaults that differ, and
    extends the class-level lists of checked fields; every check here holds for every trainer.

    Example:
        >>> BaseTrainConfig(learning_rate=1e-4, max_steps=100).learning_rate_or_default
        0.0001
        >>> BaseTrainConfig(learning_rate=1e-4, warmup_ratio=1.0)
        Traceback (most recent call last):
        ...
        ValueError: warmup_ratio must be in [0, 1), got 1.0
    """

    # -- model --------------------------------------------------------------------------------
    # Full fine-tuning by default; LoRA keeps the trained delta a few MB and fits bigger models in memory.
    lora: bool = False
    # LoRA rank / alpha / dropout: r=16, alpha=2r is a common, stable choice.
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # "all-linear" lets peft pick every Linear layer except the output head; else module names.
    lora_targets: tuple[str, ...] = ("all-linear",)
    # Trade compute for memory on long inputs.
    gradient_checkpointing: bool = False

    # -- optimisation -------------------------------------------------------------------------
    # None: the trainer's default (see learning_rate_or_default); the base class has none.
    learning_rate: float | None = None
    # AdamW's usual decoupled weight decay for transformer fine-tuning.
    weight_decay: float = 0.01
    # Linear warm-up over this fraction of the steps, then linear decay to 0.
    warmup_ratio: float = 0.05
    # One pass over the training data.
    epochs: int = 1
    # Training items (comparisons, examples) per device per forward pass.
    batch_size: int = 8
    # Effective batch = batch_size x grad_accum x processes.
    grad_accum: int = 1
    # Gradient-norm clipping, as in the PairRanker reference (0: off).
    max_grad_norm: float = 1.0
    # auto: bf16 on GPUs that have it, else fp16 where the model takes it (T5 overflows), none on CPU
    # (set bf16 explicitly on CPUs with AVX512-BF16/AMX).
    mixed_precision: MixedPrecision = "auto"
    # Stop after this many optimizer steps (0: no bound); the LR schedule is fitted to it.
    max_steps: int = 0
    # Stop after this many minutes of training (0: no bound); the LR decays with elapsed time too.
    max_minutes: float = 0.0
    # Any fixed seed makes a run repeatable; 42 by convention.
    seed: int = 42

    # -- evaluation and checkpoints -----------------------------------------------------------
    # Evaluate on the dev data every this many optimizer steps (0: only at the end); the best goes to best/.
    eval_every: int = 200
    # Show tqdm progress bars.
    progress: bool = True

    # Fields checked by __post_init__ (a subclass extends these with its own): a Literal choice, an int
    # >= 1, an int >= 0, numbers >= 0 (one message for all), and dropouts in [0, 1) (one message).
    _choices: ClassVar[tuple[tuple[str, Any], ...]] = (("mixed_precision", MixedPrecision),)
    _at_least_one: ClassVar[tuple[str, ...]] = ("epochs", "batch_size", "grad_accum")
    _at_least_zero: ClassVar[tuple[str, ...]] = ("max_steps", "eval_every", "lora_r")
    _non_negative: ClassVar[tuple[str, ...]] = ("max_minutes", "max_grad_norm")
    _dropouts: ClassVar[tuple[str, ...]] = ("lora_dropout",)

    def __post_init__(self) -> None:
        for name, choices in self._choices:
            value = getattr(self, name)
            if value not in get_args(choices):
                options = ", ".join(map(repr, get_args(choices)))
                raise ValueError(f"unknown {name} {value!r}; choose one of {options}")
        for name in self._at_least_one:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in self._at_least_zero:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lora and self.lora_r < 1:
            raise ValueError(f"lora_r must be >= 1 with lora=True, got {self.lora_r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.learning_rate_or_default <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if any(getattr(self, name) < 0 for name in self._non_negative):
            raise ValueError(f"{_names(self._non_negative)} must be >= 0")
        if not all(0.0 <= getattr(self, name) < 1.0 for name in self._dropouts):
            got = ", ".join(f"{name}={getattr(self, name)}" for name in self._dropouts)
            raise ValueError(f"dropouts must be in [0, 1), got {got}")

    @property
    def learning_rate_or_default(self) -> float:
        """The optimiser's peak learning rate: ``learning_rate`` (a subclass may give a default for None)."""
        if self.learning_rate is None:
            raise ValueError(
                f"{type(self).__name__} has no default learning rate; set learning_rate "
                "(e.g. 1e-5 for full fine-tuning, 2e-4 with LoRA)"
            )
        return self.learning_rate

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

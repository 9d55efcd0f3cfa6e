"""The training configuration of a PairRanker: one frozen dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

SamplingMode = Literal["all_pair", "top_bottom", "random"]
LossType = Literal["instructgpt", "bce", "mse"]
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train a PairRanker (defaults: the paper's recipe, scaled to one small GPU or a CPU).

    Example:
        >>> TrainConfig(sampling="top_bottom", num_pos=2, num_neg=2).pairs_per_set_hint
        4
    """

    # -- model --------------------------------------------------------------------------------
    # Paper-era pair-ranker limits (128 / 128); PairRM uses 1224 / 412. Must fit the encoder's positions.
    source_maxlength: int = 128
    candidate_maxlength: int = 128
    # The reference head's dropout.
    drop_out: float = 0.05
    # Full fine-tuning is the paper's recipe; LoRA keeps the trained delta a few MB.
    lora: bool = False
    # LoRA rank / alpha / dropout: r=16, alpha=2r is a common, stable choice for small encoders.
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # Module-name suffixes LoRA wraps; the defaults cover the Linear layers of BERT-like encoders.
    lora_targets: tuple[str, ...] = ("query", "key", "value", "dense")
    # Trade compute for memory on long inputs.
    gradient_checkpointing: bool = False

    # -- data ---------------------------------------------------------------------------------
    # The reference's default: random pairs among all C(n, 2) of each candidate set.
    sampling: SamplingMode = "all_pair"
    # Reference defaults (5 / 5); all_pair draws min(num_pos, num_neg) pairs, top_bottom num_pos x num_neg.
    num_pos: int = 5
    num_neg: int = 5
    # Identical answers carry no preference: drop duplicates before pairing.
    dedupe: bool = True
    # Swap a pair's slots with probability 0.5 so the ranker cannot learn a position bias.
    random_swap: bool = True
    # Candidates whose scores differ by less than this are not paired (0: any difference counts).
    min_score_gap: float = 0.0
    # all_pair: the share of drawn pairs whose better answer is the shorter one (0: uniform draws). Judges
    # prefer long answers (AlpacaEval: ~65% of pairs), so a ranker learns length first; ~0.5 takes that cue away.
    shorter_share: float = 0.0
    # Only pair answers the ranker sees whole: a truncated answer hides its length and its ending,
    # which judges weigh, so its label is partly noise. Off by default (the paper keeps them).
    skip_truncated: bool = False
    # Synthetic "plainly worse" pairs from the training sets (see training.augment); none by default.
    augment: tuple[str, ...] = ()
    # Share of candidate sets that give one synthetic pair per augmentation kind.
    augment_rate: float = 0.25

    # -- optimisation -------------------------------------------------------------------------
    # The paper's instructgpt pairwise loss; bce / mse are its per-side alternatives.
    loss: LossType = "instructgpt"
    # The reference's 1e-5 for full fine-tuning; LoRA usually wants ~1e-4 to 5e-4.
    learning_rate: float = 1e-5
    # AdamW's usual decoupled weight decay for transformer fine-tuning.
    weight_decay: float = 0.01
    # Linear warm-up over this fraction of the steps, then linear decay to 0.
    warmup_ratio: float = 0.05
    # Paper: 5 epochs over the candidate sets (pairs are re-sampled each epoch).
    epochs: int = 5
    # Comparisons per device per forward pass.
    batch_size: int = 8
    # Effective batch = batch_size x grad_accum x processes.
    grad_accum: int = 1
    # Gradient-norm clipping, as in the reference.
    max_grad_norm: float = 1.0
    # auto: bf16 on GPUs that have it, else fp16; no on CPU (set bf16 explicitly on CPUs with AVX512-BF16/AMX).
    mixed_precision: MixedPrecision = "auto"
    # Stop after this many optimizer steps (0: no bound); the LR schedule is fitted to it.
    max_steps: int = 0
    # Stop after this many minutes of training (0: no bound); the LR decays with elapsed time too.
    max_minutes: float = 0.0
    seed: int = 42

    # -- evaluation and checkpoints -----------------------------------------------------------
    # Evaluate on the dev pairs every this many optimizer steps (0: only at the end).
    eval_every: int = 200
    # Cap on dev comparisons (each scored in both orders) so that evaluation stays cheap on CPU.
    dev_max_pairs: int = 300
    # Save a resumable training state every this many optimizer steps (0: only at the end).
    save_every: int = 200
    # Show tqdm progress bars.
    progress: bool = True

    # Extra notes saved with the run (e.g. the command line).
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, choices in (("sampling", SamplingMode), ("loss", LossType), ("mixed_precision", MixedPrecision)):
            value = getattr(self, name)
            if value not in get_args(choices):
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, get_args(choices)))}")
        positive = ("source_maxlength", "candidate_maxlength", "num_pos", "num_neg", "epochs", "batch_size", "grad_accum")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_every", "save_every", "dev_max_pairs", "lora_r"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        from blender_core.training.ranker.augment import check_augmentations

        check_augmentations(self.augment)
        if not 0.0 <= self.shorter_share <= 1.0:
            raise ValueError(f"shorter_share must be in [0, 1], got {self.shorter_share}")
        if self.shorter_share and self.sampling != "all_pair":
            raise ValueError(f"shorter_share works with sampling='all_pair', not {self.sampling!r}; set it to 0 or change sampling")
        if not 0.0 <= self.augment_rate <= 1.0:
            raise ValueError(f"augment_rate must be in [0, 1], got {self.augment_rate}")
        if self.lora and self.lora_r < 1:
            raise ValueError(f"lora_r must be >= 1 with lora=True, got {self.lora_r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_minutes < 0 or self.min_score_gap < 0 or self.max_grad_norm < 0:
            raise ValueError("max_minutes, min_score_gap and max_grad_norm must be >= 0")
        if not 0.0 <= self.drop_out < 1.0 or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"dropouts must be in [0, 1), got drop_out={self.drop_out}, lora_dropout={self.lora_dropout}")

    @property
    def pairs_per_set_hint(self) -> int:
        """Pairs drawn from a candidate set with enough distinct scores."""
        if self.sampling == "top_bottom":
            return self.num_pos * self.num_neg
        if self.sampling == "random":
            return max(self.num_pos, self.num_neg)
        return min(self.num_pos, self.num_neg)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        d["augment"] = list(self.augment)
        return d

"""The training configuration of a PairRanker: the shared fields (``training.config``) plus pair sampling,
augmentation, the loss and checkpoints; one frozen dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from blender_core.training.config import BaseTrainConfig, MixedPrecision

__all__ = ["LossType", "MixedPrecision", "SamplingMode", "TrainConfig"]

SamplingMode = Literal["all_pair", "top_bottom", "random"]
LossType = Literal["instructgpt", "bce", "mse"]


@dataclass(frozen=True)
class TrainConfig(BaseTrainConfig):
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
    # Module-name suffixes LoRA wraps; the defaults cover the Linear layers of BERT-like encoders.
    lora_targets: tuple[str, ...] = ("query", "key", "value", "dense")

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
    # Paper: 5 epochs over the candidate sets (pairs are re-sampled each epoch).
    epochs: int = 5

    # -- evaluation and checkpoints -----------------------------------------------------------
    # Cap on dev comparisons (each scored in both orders) so that evaluation stays cheap on CPU.
    dev_max_pairs: int = 300
    # Save a resumable training state every this many optimizer steps (0: only at the end).
    save_every: int = 200

    # Extra notes saved with the run (e.g. the command line).
    notes: dict[str, Any] = field(default_factory=dict)

    _choices: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("sampling", SamplingMode), ("loss", LossType), *BaseTrainConfig._choices
    )
    _at_least_one: ClassVar[tuple[str, ...]] = (
        "source_maxlength", "candidate_maxlength", "num_pos", "num_neg", *BaseTrainConfig._at_least_one
    )
    _at_least_zero: ClassVar[tuple[str, ...]] = (*BaseTrainConfig._at_least_zero, "save_every", "dev_max_pairs")
    _non_negative: ClassVar[tuple[str, ...]] = ("max_minutes", "min_score_gap", "max_grad_norm")
    _dropouts: ClassVar[tuple[str, ...]] = ("drop_out", "lora_dropout")

    def __post_init__(self) -> None:
        super().__post_init__()
        from blender_core.training.ranker.augment import check_augmentations

        check_augmentations(self.augment)
        if not 0.0 <= self.shorter_share <= 1.0:
            raise ValueError(f"shorter_share must be in [0, 1], got {self.shorter_share}")
        if self.shorter_share and self.sampling != "all_pair":
            raise ValueError(f"shorter_share works with sampling='all_pair', not {self.sampling!r}; set it to 0 or change sampling")
        if not 0.0 <= self.augment_rate <= 1.0:
            raise ValueError(f"augment_rate must be in [0, 1], got {self.augment_rate}")

    @property
    def pairs_per_set_hint(self) -> int:
        """Pairs drawn from a candidate set with enough distinct scores."""
        if self.sampling == "top_bottom":
            return self.num_pos * self.num_neg
        if self.sampling == "random":
            return max(self.num_pos, self.num_neg)
        return min(self.num_pos, self.num_neg)

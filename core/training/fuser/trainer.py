"""Fine-tune a seq2seq (GenFuser format) or causal (chat prompt) fuser with accelerate."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from blender_core.training.fuser.config import FuserTrainConfig
from blender_core.training.fuser.encoding import Collator, EncodedDataset, encode_causal, encode_seq2seq
from blender_core.training.fuser.examples import FuserExample

logger = logging.getLogger(__name__)
_TRAIN_HINT = 'pip install "blender-llm[train]"'


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


def lr_multiplier(progress: float, warmup_ratio: float) -> float:
    """Linear warm-up to 1 over the first ``warmup_ratio`` of training, then linear decay to 0."""
    if warmup_ratio > 0 and progress < warmup_ratio:
        return max(progress / warmup_ratio, 1e-3)
    return max(0.0, (1.0 - progress) / (1.0 - warmup_ratio))


def resolve_kind(model: PreTrainedModel, kind: str) -> str:
    """``seq2seq`` for encoder-decoder models, ``causal`` otherwise (unless ``kind`` says)."""
    if kind != "auto":
        return kind
    return "seq2seq" if getattr(model.config, "is_encoder_decoder", False) else "causal"


def _mixed_precision(setting: str, kind: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp16" if kind == "causal" else "no"  # T5 overflows in fp16
    return "no"


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay for biases and norms."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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


class FuserTrainer:
    """Fine-tune a fuser on :class:`~blender_core.training.fuser.examples.FuserExample` s.

    Seq2seq models read the published GenFuser input (labels: the target, ending in ``</s>``); causal
    models read the :class:`~blender_core.fusion.causal.LLMFuser` chat prompt, with the loss on the answer
    tokens only. Saved fusers (``best/``, ``last/``) load with ``GenFuser`` / ``LLMFuser.from_pretrained``.

    Example:
        >>> model = AutoModelForSeq2SeqLM.from_pretrained("google/flan-t5-small")  # doctest: +SKIP
        >>> trainer = FuserTrainer(model, tokenizer, FuserTrainConfig(max_steps=100))  # doctest: +SKIP
        >>> result = trainer.train(train_examples, dev_examples, "runs/fuser")  # doctest: +SKIP
    """

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

    def encode(self, examples: Sequence[FuserExample]) -> EncodedDataset:
        """Token ids and labels of ``examples`` for this fuser's kind."""
        enc = encode_seq2seq if self.kind == "seq2seq" else encode_causal
        return EncodedDataset([enc(self.tokenizer, ex, self.config) for ex in examples])

    def _prepare_model(self) -> Any:
        c = self.config
        model: Any = self.base_model
        if c.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if c.lora:
            try:
                from peft import LoraConfig, TaskType, get_peft_model
            except ImportError as exc:
                raise ImportError(f"LoRA needs peft; install it with: {_TRAIN_HINT}") from exc
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

    def _save(self, model: Any, folder: Path, metrics: dict[str, Any]) -> None:
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

    def train(
        self,
        train_examples: Sequence[FuserExample],
        dev_examples: Sequence[FuserExample] | None,
        out_dir: str | Path,
    ) -> FuserTrainResult:
        """Run training; the best dev loss goes to ``out_dir/best``, the final weights to ``out_dir/last``."""
        try:
            import accelerate
        except ImportError as exc:
            raise ImportError(f"training needs accelerate; install it with: {_TRAIN_HINT}") from exc
        c = self.config
        if not train_examples:
            raise ValueError("train() got no training examples")
        out = Path(out_dir)
        accelerator = accelerate.Accelerator(
            mixed_precision=_mixed_precision(c.mixed_precision, self.kind),
            gradient_accumulation_steps=c.grad_accum,
        )
        accelerate.utils.set_seed(c.seed)
        main = accelerator.is_main_process
        if main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "fuser_train_config.json").write_text(
                json.dumps(
                    {**c.to_dict(), "resolved_kind": self.kind, "learning_rate": c.learning_rate_or_default},
                    indent=2,
                )
                + "\n"
            )
        collate = Collator(self.pad_id)
        loader = torch.utils.data.DataLoader(
            self.encode(train_examples),
            batch_size=c.batch_size,
            shuffle=True,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(c.seed),
        )
        dev = list(dev_examples or [])[: c.dev_max_examples]
        dev_loader = (
            torch.utils.data.DataLoader(self.encode(dev), batch_size=c.batch_size, collate_fn=collate)
            if dev
            else None
        )
        model = self._prepare_model()
        optimizer = torch.optim.AdamW(_param_groups(model, c.weight_decay), lr=c.learning_rate_or_default)
        progress_holder = [0.0]
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda _: lr_multiplier(progress_holder[0], c.warmup_ratio)
        )
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        steps_per_epoch = math.ceil(len(loader) / c.grad_accum)
        total_steps = steps_per_epoch * c.epochs
        if c.max_steps:
            total_steps = min(total_steps, c.max_steps) if c.max_minutes else c.max_steps
        budget_s = c.max_minutes * 60.0
        unwrapped = accelerator.unwrap_model(model)
        log_path = out / "log.jsonl"
        start = time.monotonic()
        state: dict[str, Any] = {
            "step": 0,
            "seen": 0,
            "best": None,
            "best_step": None,
            "first": None,
            "last": None,
        }
        stopped_by = "epochs"

        def evaluate_and_save(final: bool) -> None:
            metrics: dict[str, Any] = {"step": state["step"], "elapsed_s": round(time.monotonic() - start, 1)}
            if main and dev_loader is not None:
                with accelerator.autocast():
                    loss = dev_loss(unwrapped, dev_loader, accelerator.device)
                metrics["dev_loss"] = loss
                logger.info("step %d: dev loss %.4f on %d examples", state["step"], loss, len(dev))
                _append(log_path, metrics)
                if state["best"] is None or loss < state["best"]:
                    state["best"], state["best_step"] = loss, state["step"]
                    self._save(unwrapped, out / "best", metrics)
            elif main and final:
                self._save(unwrapped, out / "best", metrics)
            accelerator.wait_for_everyone()

        bar = tqdm(
            total=total_steps,
            desc=f"train fuser ({self.kind})",
            unit="step",
            disable=not (c.progress and main),
            dynamic_ncols=True,
        )
        initial_dev: float | None = None
        if main and dev_loader is not None:  # the starting point, to judge the run by (logged as step 0)
            with accelerator.autocast():
                initial_dev = dev_loss(unwrapped, dev_loader, accelerator.device)
            _append(log_path, {"step": 0, "elapsed_s": 0.0, "dev_loss": initial_dev})
        loss_ema: float | None = None
        window: list[float] = []
        optimizer.zero_grad()
        done = False
        epoch = 0
        while not done:
            for batch in loader:
                with accelerator.accumulate(model):
                    loss = model(**batch).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and c.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), c.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                state["seen"] += int(batch["input_ids"].shape[0]) * accelerator.num_processes
                value = float(loss.detach())
                window.append(value)
                loss_ema = value if loss_ema is None else 0.9 * loss_ema + 0.1 * value
                if not accelerator.sync_gradients:
                    continue
                step_loss = sum(window) / len(window)
                window.clear()
                state["step"] += 1
                if state["first"] is None:
                    state["first"] = step_loss
                state["last"] = step_loss
                now = time.monotonic() - start
                progress = state["step"] / total_steps
                if budget_s:
                    progress = max(progress, now / budget_s)
                progress_holder[0] = min(progress, 1.0)
                scheduler.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss_ema:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if main:
                    _append(
                        log_path,
                        {
                            "step": state["step"],
                            "loss": round(step_loss, 5),
                            "lr": scheduler.get_last_lr()[0],
                            "elapsed_s": round(now, 1),
                        },
                    )
                if state["step"] >= total_steps:
                    stopped_by = "max_steps" if c.max_steps and state["step"] >= c.max_steps else "epochs"
                    done = True
                    break
                if budget_s and now >= budget_s:
                    stopped_by, done = "max_minutes", True
                    break
                if c.eval_every and state["step"] % c.eval_every == 0:
                    evaluate_and_save(final=False)
            epoch += 1
            if not c.max_steps and epoch >= c.epochs:
                done = True
        bar.close()
        evaluate_and_save(final=True)
        if main:
            self._save(
                unwrapped,
                out / "last",
                {"step": state["step"], "elapsed_s": round(time.monotonic() - start, 1)},
            )
        result = FuserTrainResult(
            kind=self.kind,
            steps=int(state["step"]),
            examples_seen=int(state["seen"]),
            seconds=round(time.monotonic() - start, 1),
            first_loss=state["first"],
            last_loss=state["last"],
            initial_dev_loss=initial_dev,
            best_dev_loss=state["best"],
            best_step=state["best_step"],
            best_dir=out / "best",
            last_dir=out / "last",
            stopped_by=stopped_by,
        )
        if main:
            (out / "result.json").write_text(
                json.dumps(
                    {**result.__dict__, "best_dir": str(result.best_dir), "last_dir": str(result.last_dir)},
                    indent=2,
                )
                + "\n"
            )
        accelerator.wait_for_everyone()
        return result


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


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

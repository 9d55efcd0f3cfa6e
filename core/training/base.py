"""The training loop every trainer shares, on ``accelerate``: one process or many (``accelerate launch``),
CPU or GPU.

:class:`BaseTrainer` owns the set-up (Accelerator with mixed precision and gradient accumulation, the seed,
AdamW and its schedule), the loop (accumulation, clipping, the loss EMA, the tqdm bar, ``log.jsonl``), the
evaluation and save cadence and the stopping rule; a trainer fills in its hooks (model, loss, dev metric,
saving, result). What a run writes to ``out_dir``: the config (``config_file``), ``log.jsonl``, ``best/``
(the best dev metric, else the final weights), ``last/``, ``result.json``.
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch
from tqdm.auto import tqdm

from blender_core.training.config import BaseTrainConfig
from blender_core.training.optim import ProgressSchedule, param_groups, training_progress
from blender_core.training.run import Run

ConfigT = TypeVar("ConfigT", bound=BaseTrainConfig)
ResultT = TypeVar("ResultT")

TRAIN_HINT = 'pip install "blender-llm[train]"'


def require_accelerate() -> Any:
    """The ``accelerate`` module, or an ImportError that says which extra to install."""
    try:
        import accelerate
    except ImportError as exc:
        raise ImportError(f"training needs accelerate; install it with: {TRAIN_HINT}") from exc
    return accelerate


def resolve_mixed_precision(setting: str, *, fp16_ok: bool = True) -> str:
    """``auto``: bf16 on GPUs that have it, else fp16 where ``fp16_ok``, else none; none on CPU."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp16" if fp16_ok else "no"
    return "no"


class BaseTrainer(ABC, Generic[ConfigT, ResultT]):
    """The shared loop; a trainer sets the class attributes, implements the abstract hooks and calls
    :meth:`_fit` from its ``train``.

    Stopping: after ``total_steps`` optimizer steps (``stopped_by`` "max_steps" when ``max_steps`` set the
    bound, else "epochs"), when the batches run out ("epochs"), or after ``max_minutes`` ("max_minutes").

    Example:
        >>> class RegressionTrainer(BaseTrainer[BaseTrainConfig, int]):  # doctest: +SKIP
        ...     metric_name, higher_is_better = "dev_mse", False
        ...     def _loss(self, model, batch):
        ...         x, y = batch
        ...         return torch.nn.functional.mse_loss(model(x), y), len(x)
        ...     def _result(self, run, stopped_by):
        ...         return run.state.step
        ...     # _prepare_model, _evaluate, _save_model likewise; train(...) builds a loader, calls _fit
    """

    # The file the run's config is written to, in out_dir.
    config_file: ClassVar[str] = "train_config.json"
    # The dev metric's key in log rows and metrics.json, and which way is better.
    metric_name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    # Also evaluate before training, logged as step 0 (Run.initial_metric).
    eval_at_start: ClassVar[bool] = False
    # A loss row in log.jsonl every this many optimizer steps, with the loss EMA (log_ema) or the mean loss
    # of the step's micro-batches.
    log_every: ClassVar[int] = 1
    log_ema: ClassVar[bool] = False
    # Weight of the newest micro-batch loss in the EMA on the bar (0.1: decay 0.9).
    ema_weight: ClassVar[float] = 0.1
    # Training items per second on the bar under this name, since the last loss row (None: not shown).
    rate_name: ClassVar[str | None] = None

    config: ConfigT

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def _prepare_model(self) -> Any:
        """The model to train, in train mode (LoRA applied, checkpointing on, as the config says)."""

    @abstractmethod
    def _loss(self, model: Any, batch: Any) -> tuple[torch.Tensor, int]:
        """The loss of one micro-batch, and how many training items it holds."""

    @abstractmethod
    def _evaluate(self, run: Run) -> float | None:
        """The dev metric of ``run.unwrapped`` (main process, under autocast); None without dev data."""

    @abstractmethod
    def _save_model(self, model: Any, folder: Path, metrics: dict[str, Any]) -> None:
        """Save ``model`` (unwrapped) to ``folder`` with ``metrics.json``."""

    @abstractmethod
    def _result(self, run: Run, stopped_by: str) -> ResultT:
        """What ``train`` returns (a frozen dataclass; written to ``result.json``)."""

    @property
    def _bar_desc(self) -> str:
        """The progress bar's label."""
        return "train"

    @property
    def _fp16_ok(self) -> bool:
        """Whether ``mixed_precision="auto"`` may pick fp16 (on GPUs without bf16)."""
        return True

    def _config_record(self) -> dict[str, Any]:
        """What goes to ``config_file``."""
        return self.config.to_dict()

    def _total_steps(self, steps_per_pass: int) -> int:
        """Optimizer steps of the run, from those of one pass over the loader (default: one pass, capped by
        ``max_steps``)."""
        c = self.config
        return min(steps_per_pass, c.max_steps) if c.max_steps else steps_per_pass

    def _batches(self, run: Run) -> Iterable[Any]:
        """The training micro-batches, in order (default: one pass over the loader)."""
        return run.loader

    def _on_start(self, run: Run) -> None:
        """Before the loop (e.g. restore a saved state)."""

    def _after_step(self, run: Run) -> None:
        """After each optimizer step that did not stop the run, and after its evaluation."""

    def _on_end(self, run: Run) -> None:
        """After the final evaluation, before ``last/`` is saved."""

    # ------------------------------------------------------------------ the run
    def _fit(self, out_dir: str | Path, loader: torch.utils.data.DataLoader) -> ResultT:
        """Train on ``loader`` (not yet prepared) and write the run to ``out_dir``."""
        accelerate = require_accelerate()
        c = self.config
        out = Path(out_dir)
        accelerator = accelerate.Accelerator(
            mixed_precision=resolve_mixed_precision(c.mixed_precision, fp16_ok=self._fp16_ok),
            gradient_accumulation_steps=c.grad_accum,
        )
        accelerate.utils.set_seed(c.seed)
        if accelerator.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            config_json = json.dumps(self._config_record(), indent=2, default=str)
            (out / self.config_file).write_text(config_json + "\n")
        model = self._prepare_model()
        optimizer = torch.optim.AdamW(param_groups(model, c.weight_decay), lr=c.learning_rate_or_default)
        schedule = ProgressSchedule(optimizer, c.warmup_ratio)
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        run = Run(accelerator, out, model, optimizer, schedule, loader)
        run.total_steps = self._total_steps(math.ceil(len(loader) / c.grad_accum))
        self._on_start(run)
        if self.eval_at_start:
            run.initial_metric = self._dev_metric(run)
            if run.initial_metric is not None:
                run.log({"step": 0, "elapsed_s": 0.0, self.metric_name: run.initial_metric})
        stopped_by = self._loop(run)
        self._evaluate_and_save(run, final=True)
        self._on_end(run)
        last = {"step": run.state.step, "elapsed_s": round(run.elapsed(), 1)}  # elapsed(): on every process
        if run.main:
            self._save_model(run.unwrapped, out / "last", last)
        result = self._result(run, stopped_by)
        if run.main:
            fields = {k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}
            (out / "result.json").write_text(json.dumps(fields, indent=2) + "\n")
        accelerator.wait_for_everyone()
        return result

    def _loop(self, run: Run) -> str:
        """Optimizer steps until a bound is reached; returns why it stopped."""
        c, state, accelerator = self.config, run.state, run.accelerator
        budget_s = c.max_minutes * 60.0
        stopped_by = "epochs"
        loss_ema: float | None = None
        step_losses: list[float] = []  # the current step's micro-batch losses
        rate_t, rate_n = time.monotonic(), 0
        bar = tqdm(total=run.total_steps, initial=state.step, desc=self._bar_desc, unit="step",
                   disable=not (c.progress and run.main), dynamic_ncols=True)
        run.optimizer.zero_grad()
        for batch in self._batches(run) if state.step < run.total_steps else ():
            with accelerator.accumulate(run.model):
                loss, n = self._loss(run.model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and c.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(run.model.parameters(), c.max_grad_norm)
                run.optimizer.step()
                run.optimizer.zero_grad()
            state.batches += 1
            state.seen += n * accelerator.num_processes
            rate_n += n * accelerator.num_processes
            value = float(loss.detach())
            step_losses.append(value)
            w = self.ema_weight
            loss_ema = value if loss_ema is None else (1.0 - w) * loss_ema + w * value
            if not accelerator.sync_gradients:
                continue
            step_loss = sum(step_losses) / len(step_losses)
            step_losses.clear()
            state.step += 1
            if run.first_loss is None:
                run.first_loss = step_loss
            run.last_loss = step_loss
            now = run.elapsed()
            run.schedule.advance(training_progress(state.step, run.total_steps, now, budget_s))
            postfix = {"loss": f"{loss_ema:.4f}", "lr": f"{run.schedule.lr:.2e}"}
            if self.rate_name:
                postfix[self.rate_name] = f"{rate_n / max(time.monotonic() - rate_t, 1e-6):.2f}"
            bar.update(1)
            bar.set_postfix(postfix)
            if state.step % self.log_every == 0:
                rate_t, rate_n = time.monotonic(), 0
                run.log({"step": state.step, "loss": round(loss_ema if self.log_ema else step_loss, 5),
                         "lr": run.schedule.lr, "elapsed_s": round(now, 1)})
            if state.step >= run.total_steps:
                stopped_by = "max_steps" if c.max_steps and state.step >= c.max_steps else "epochs"
                break
            if budget_s and now >= budget_s:
                stopped_by = "max_minutes"
                break
            if c.eval_every and state.step % c.eval_every == 0:
                self._evaluate_and_save(run, final=False)
            self._after_step(run)
        bar.close()
        return stopped_by

    def _dev_metric(self, run: Run) -> float | None:
        """The dev metric now, by the main process under autocast; None elsewhere or without dev data."""
        if not run.main:
            return None
        with run.accelerator.autocast():
            return self._evaluate(run)

    def _evaluate_and_save(self, run: Run, *, final: bool) -> None:
        """Log the dev metric and save ``best/`` when it improved; at the end without dev data, ``best/`` is
        the final model."""
        state = run.state
        metrics: dict[str, Any] = {"step": state.step, "elapsed_s": round(run.elapsed(), 1)}
        value = self._dev_metric(run)
        if value is not None:
            metrics[self.metric_name] = value
            run.log(metrics)
            if state.best is None or (value > state.best if self.higher_is_better else value < state.best):
                state.best, state.best_step = value, state.step
                self._save_model(run.unwrapped, run.out / "best", metrics)
        elif run.main and final:
            self._save_model(run.unwrapped, run.out / "best", metrics)
        run.accelerator.wait_for_everyone()

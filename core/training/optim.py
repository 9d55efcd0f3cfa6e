"""AdamW for fine-tuning and its learning-rate schedule: linear warm-up, then linear decay to 0, driven by
how far training is (the larger of the share of steps done and the share of the time budget spent)."""

from __future__ import annotations

from typing import Any

import torch


def lr_multiplier(progress: float, warmup_ratio: float) -> float:
    """Linear warm-up to 1 over the first ``warmup_ratio`` of training, then linear decay to 0."""
    if warmup_ratio > 0 and progress < warmup_ratio:
        return max(progress / warmup_ratio, 1e-3)
    return max(0.0, (1.0 - progress) / (1.0 - warmup_ratio))


def training_progress(step: int, total_steps: int, elapsed_s: float, budget_s: float) -> float:
    """How far training is, in [0, 1]: ``step / total_steps``, or the share of ``budget_s`` (seconds; 0: no
    budget) already spent when that is larger, so a time-bounded run ends with its LR decayed.

    Example:
        >>> training_progress(10, 100, elapsed_s=30.0, budget_s=60.0)
        0.5
    """
    progress = step / total_steps
    if budget_s:
        progress = max(progress, elapsed_s / budget_s)
    return min(progress, 1.0)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay for biases, norms and trained embedding rows (the usual transformer recipe)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "norm" in name.lower() or "trainable_tokens" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class ProgressSchedule:
    """AdamW's learning rate as ``lr_multiplier(progress)``; the loop sets the progress before each step.

    Example:
        >>> opt = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=1e-3)
        >>> schedule = ProgressSchedule(opt, warmup_ratio=0.0)
        >>> schedule.advance(0.25)
        >>> round(schedule.lr, 6)
        0.00075
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_ratio: float) -> None:
        self.progress = 0.0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda _: lr_multiplier(self.progress, warmup_ratio)
        )

    def advance(self, progress: float) -> None:
        """Step the scheduler to ``progress`` (in [0, 1], see :func:`training_progress`)."""
        self.progress = progress
        self.scheduler.step()

    @property
    def lr(self) -> float:
        """The learning rate of the last step."""
        return float(self.scheduler.get_last_lr()[0])

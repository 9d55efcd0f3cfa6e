"""One training run as the loop and a trainer's hooks see it: the prepared objects, the counters, the clock
and the ``log.jsonl`` file."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from blender_core.training.optim import ProgressSchedule


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` to the JSON-lines file ``path``."""
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


@dataclass
class RunState:
    """The counters of a run (a trainer with a resumable state saves them)."""

    step: int = 0  # optimizer steps done
    batches: int = 0  # micro-batches consumed (the loader position, for a resume)
    elapsed: float = 0.0  # seconds of training before this session (set when a state is saved)
    best: float | None = None  # the best dev metric so far
    best_step: int | None = None
    seen: int = 0  # training items (comparisons, examples) over all processes


class Run:
    """What one call of ``train`` works with, handed to the trainer's hooks."""

    def __init__(
        self,
        accelerator: Any,
        out: Path,
        model: Any,
        optimizer: torch.optim.Optimizer,
        schedule: ProgressSchedule,
        loader: Any,
    ) -> None:
        """Args:
        accelerator: the run's ``accelerate.Accelerator``.
        out: the output folder (written by the main process only).
        model / optimizer / loader: as ``accelerator.prepare`` returned them.
        schedule: the learning-rate schedule of ``optimizer``.
        """
        self.accelerator = accelerator
        self.out = out
        self.model = model
        self.unwrapped = accelerator.unwrap_model(model)  # the model itself, to evaluate and save
        self.optimizer = optimizer
        self.schedule = schedule
        self.loader = loader
        self.state = RunState()
        self.total_steps = 0  # set by the trainer from the loader's length and the bounds
        self.first_loss: float | None = None  # mean loss of the first optimizer step
        self.last_loss: float | None = None  # and of the last one
        self.initial_metric: float | None = None  # the dev metric before training, where the trainer takes it
        self._start = time.monotonic()

    @property
    def main(self) -> bool:
        """Whether this is the main process (the one that evaluates and writes files)."""
        return bool(self.accelerator.is_main_process)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def restore(self, state: RunState) -> None:
        """Continue from a saved ``state``: its counters, and its training time on the clock."""
        self.state = state
        self._start = time.monotonic() - state.elapsed

    def elapsed(self) -> float:
        """Seconds of training; the main process's value on every process (call it on all of them)."""
        value = torch.tensor([time.monotonic() - self._start], device=self.device)
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast

            value = broadcast(value)
        return float(value[0])

    def log(self, row: dict[str, Any]) -> None:
        """Append ``row`` to ``out/log.jsonl`` (main process only)."""
        if self.main:
            append_jsonl(self.out / "log.jsonl", row)

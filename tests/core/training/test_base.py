"""The shared loop on a one-weight regression: stopping reasons, the loss rows, best/ by either metric
direction, the step-0 evaluation and the files of a run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from blender_core.training.base import BaseTrainer
from blender_core.training.config import BaseTrainConfig
from blender_core.training.run import Run


@dataclass(frozen=True)
class ToyResult:
    steps: int
    seen: int
    best: float | None
    best_step: int | None
    first_loss: float | None
    last_loss: float | None
    best_dir: Path
    stopped_by: str


class ToyTrainer(BaseTrainer[BaseTrainConfig, ToyResult]):
    """Fit y = 2x + 1 with a Linear(1, 1); the dev metric is a scripted sequence (the boundary a real
    trainer fills with its own evaluation)."""

    config_file = "toy_config.json"
    metric_name = "dev_score"
    higher_is_better = True

    def __init__(self, config: BaseTrainConfig, *, n: int = 10, dev_scores: list[float] | None = None) -> None:
        self.config = config
        torch.manual_seed(0)
        self.model = torch.nn.Linear(1, 1)
        x = torch.linspace(-1, 1, n).unsqueeze(1)
        self.data = torch.utils.data.TensorDataset(x, 2 * x + 1)
        self.dev_scores = list(dev_scores) if dev_scores is not None else None
        self.losses: list[float] = []  # every micro-batch loss, as the loop saw it
        self.evaluated_at: list[int] = []

    def train(self, out_dir: Path) -> ToyResult:
        # shuffled by torch's global RNG, which the loop seeds from config.seed
        loader = torch.utils.data.DataLoader(self.data, batch_size=self.config.batch_size, shuffle=True)
        return self._fit(out_dir, loader)

    def _prepare_model(self) -> Any:
        return self.model.train()

    def _loss(self, model: Any, batch: Any) -> tuple[torch.Tensor, int]:
        x, y = batch
        loss = torch.nn.functional.mse_loss(model(x), y)
        self.losses.append(float(loss.detach()))
        return loss, len(x)

    def _evaluate(self, run: Run) -> float | None:
        if self.dev_scores is None:
            return None
        self.evaluated_at.append(run.state.step)
        return self.dev_scores.pop(0)

    def _save_model(self, model: Any, folder: Path, metrics: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), folder / "model.pt")
        (folder / "metrics.json").write_text(json.dumps(metrics))

    def _result(self, run: Run, stopped_by: str) -> ToyResult:
        s = run.state
        return ToyResult(s.step, s.seen, s.best, s.best_step, run.first_loss, run.last_loss, run.out / "best", stopped_by)


class LowerIsBetter(ToyTrainer):
    higher_is_better = False


class EmaEveryTwo(ToyTrainer):
    log_every = 2
    log_ema = True
    ema_weight = 0.25


class EvalAtStart(ToyTrainer):
    eval_at_start = True


def _config(**kwargs: Any) -> BaseTrainConfig:
    base = {"learning_rate": 0.1, "batch_size": 2, "warmup_ratio": 0.0, "eval_every": 0, "progress": False}
    return BaseTrainConfig(**{**base, **kwargs})


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_max_steps_stops_the_run(tmp_path: Path) -> None:
    trainer = ToyTrainer(_config(max_steps=3))
    result = trainer.train(tmp_path)
    assert (result.steps, result.seen, result.stopped_by) == (3, 6, "max_steps")
    assert [r["step"] for r in _rows(tmp_path)] == [1, 2, 3]  # a loss row every step by default
    assert set(_rows(tmp_path)[0]) == {"step", "loss", "lr", "elapsed_s"}
    assert json.loads((tmp_path / "toy_config.json").read_text())["max_steps"] == 3
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["best_dir"] == str(tmp_path / "best")
    assert saved["steps"] == 3
    for folder in ("best", "last"):  # no dev data: best/ is the final model
        assert json.loads((tmp_path / folder / "metrics.json").read_text())["step"] == 3


def test_the_data_running_out_stops_the_run(tmp_path: Path) -> None:
    # 10 items, batches of 2, 2 per step: 5 micro-batches, the last step takes the fifth alone
    result = ToyTrainer(_config(grad_accum=2, max_steps=100)).train(tmp_path)
    assert (result.steps, result.seen, result.stopped_by) == (3, 10, "epochs")


def test_the_time_budget_stops_the_run_with_the_lr_decayed(tmp_path: Path) -> None:
    result = ToyTrainer(_config(max_minutes=1e-9, max_steps=4)).train(tmp_path)
    assert (result.steps, result.stopped_by) == (1, "max_minutes")
    assert _rows(tmp_path)[0]["lr"] == 0.0  # progress by time is 1: the schedule has decayed to 0


def test_the_loss_of_a_step_is_the_mean_of_its_micro_batches(tmp_path: Path) -> None:
    trainer = ToyTrainer(_config(grad_accum=2, max_steps=2))
    result = trainer.train(tmp_path)
    losses = trainer.losses
    assert len(losses) == 4
    means = [(losses[0] + losses[1]) / 2, (losses[2] + losses[3]) / 2]
    assert [r["loss"] for r in _rows(tmp_path)] == [round(m, 5) for m in means]
    assert result.first_loss == pytest.approx(means[0])
    assert result.last_loss == pytest.approx(means[1])


def test_ema_rows_every_log_every_steps(tmp_path: Path) -> None:
    trainer = EmaEveryTwo(_config(max_steps=4))
    trainer.train(tmp_path)
    ema, want = None, []
    for i, value in enumerate(trainer.losses, start=1):
        ema = value if ema is None else 0.75 * ema + 0.25 * value
        if i % 2 == 0:
            want.append(round(ema, 5))
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [2, 4]
    assert [r["loss"] for r in rows] == want


@pytest.mark.parametrize(("trainer_cls", "best", "best_step"), [(ToyTrainer, 0.7, 2), (LowerIsBetter, 0.5, 1)])
def test_best_follows_the_metric_direction(
    tmp_path: Path, trainer_cls: type[ToyTrainer], best: float, best_step: int
) -> None:
    trainer = trainer_cls(_config(max_steps=3, eval_every=1), dev_scores=[0.5, 0.7, 0.6])
    result = trainer.train(tmp_path)
    assert trainer.evaluated_at == [1, 2, 3]  # every step, the last one as the final evaluation
    assert (result.best, result.best_step) == (best, best_step)
    saved = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert (saved["step"], saved["dev_score"]) == (best_step, best)
    assert [(r["step"], r["dev_score"]) for r in _rows(tmp_path) if "dev_score" in r] == [(1, 0.5), (2, 0.7), (3, 0.6)]


def test_eval_every_skips_the_step_that_stops(tmp_path: Path) -> None:
    trainer = ToyTrainer(_config(max_steps=4, eval_every=2), dev_scores=[0.1, 0.2])
    trainer.train(tmp_path)
    assert trainer.evaluated_at == [2, 4]  # step 4 stops the run: evaluated once, as the final evaluation


def test_eval_at_start_logs_step_zero(tmp_path: Path) -> None:
    trainer = EvalAtStart(_config(max_steps=1), dev_scores=[0.3, 0.4])
    trainer.train(tmp_path)
    rows = _rows(tmp_path)
    assert rows[0] == {"step": 0, "elapsed_s": 0.0, "dev_score": 0.3}
    assert trainer.evaluated_at == [0, 1]


def test_the_seed_makes_a_run_repeatable(tmp_path: Path) -> None:
    runs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        trainer = ToyTrainer(_config(max_steps=4, seed=seed))
        trainer.train(tmp_path / name)
        runs.append((trainer.losses, trainer.model.weight.detach().clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])
    assert runs[0][0] != runs[2][0]  # another seed, another order of the batches

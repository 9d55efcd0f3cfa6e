"""The learning-rate schedule driven by steps and by a time budget, and AdamW's parameter groups."""

from __future__ import annotations

import pytest
import torch

from blender_core.training.optim import ProgressSchedule, lr_multiplier, param_groups, training_progress


def test_progress_is_the_larger_of_steps_and_time() -> None:
    assert training_progress(25, 100, elapsed_s=10.0, budget_s=0.0) == 0.25  # no budget: steps only
    assert training_progress(25, 100, elapsed_s=10.0, budget_s=100.0) == 0.25
    assert training_progress(25, 100, elapsed_s=60.0, budget_s=100.0) == pytest.approx(0.6)
    assert training_progress(25, 100, elapsed_s=500.0, budget_s=100.0) == 1.0  # capped


def test_schedule_sets_the_optimizer_lr() -> None:
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=1e-2)
    schedule = ProgressSchedule(optimizer, warmup_ratio=0.1)
    assert schedule.lr == pytest.approx(1e-5)  # the warm-up starts at 1e-3 of the peak
    schedule.advance(0.05)
    assert schedule.lr == pytest.approx(5e-3)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)
    schedule.advance(training_progress(10, 100, elapsed_s=55.0, budget_s=100.0))  # time is ahead of steps
    assert schedule.lr == pytest.approx(1e-2 * lr_multiplier(0.55, 0.1))
    assert schedule.lr == pytest.approx(5e-3)
    schedule.advance(training_progress(10, 100, elapsed_s=120.0, budget_s=100.0))  # the budget is spent
    assert schedule.lr == 0.0


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = torch.nn.Linear(4, 4)
        self.LayerNorm = torch.nn.LayerNorm(4)
        self.final_layer_norm = torch.nn.LayerNorm(4)
        self.trainable_tokens_delta = torch.nn.Parameter(torch.zeros(2, 4))
        self.frozen = torch.nn.Linear(4, 4).requires_grad_(False)


def test_param_groups_skip_decay_for_biases_norms_and_token_rows() -> None:
    block = _Block()
    decay, no_decay = param_groups(block, 0.1)
    names = {id(p): n for n, p in block.named_parameters()}
    assert decay["weight_decay"] == 0.1
    assert no_decay["weight_decay"] == 0.0
    assert [names[id(p)] for p in decay["params"]] == ["dense.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == [
        "LayerNorm.bias", "LayerNorm.weight", "dense.bias", "final_layer_norm.bias", "final_layer_norm.weight",
        "trainable_tokens_delta",
    ]

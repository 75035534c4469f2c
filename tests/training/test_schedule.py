"""The training schedule both loops share: warm-up and cosine decay, the run's length, and
the steps it counts."""

from __future__ import annotations

import math

import pytest
import torch

from training.schedule import Schedule, lr_at
from training.settings import TrainSettings


def test_learning_rate_schedule() -> None:
    s = TrainSettings(lr=1e-3, lr_decay_floor=0.01)
    total, warmup = 100, 10
    assert lr_at(0, total, warmup, s) == pytest.approx(1e-4)
    assert lr_at(9, total, warmup, s) == pytest.approx(1e-3)
    assert lr_at(10, total, warmup, s) == pytest.approx(1e-3)
    assert lr_at(100, total, warmup, s) == pytest.approx(1e-5)
    lrs = [lr_at(i, total, warmup, s) for i in range(warmup, total + 1)]
    assert all(b <= a for a, b in zip(lrs, lrs[1:], strict=False))
    assert lr_at(0, total, 0, s) == pytest.approx(1e-3)  # no warm-up


def test_run_length_from_grids_and_batches() -> None:
    s = TrainSettings(epochs=5, warmup_epochs=2, fiber_batch=1000)
    # Per image batch of 16 frames: ceil(16*32*32/1000) + ceil(16*16*16/1000) + ceil(16*8*8/1000)
    # = 17 + 5 + 2 fiber steps.
    schedule = Schedule.for_batches(s, [(32, 32), (16, 16), (8, 8)], 16, 3)
    per_epoch = 3 * (math.ceil(16384 / 1000) + math.ceil(4096 / 1000) + math.ceil(1024 / 1000))
    assert per_epoch == 72
    assert (schedule.total, schedule.warmup, schedule.step) == (5 * per_epoch, 2 * per_epoch, 0)


def test_fiber_steps_are_counted_at_the_scheduled_rates() -> None:
    s = TrainSettings(lr=1e-2, epochs=2, warmup_epochs=1, lr_decay_floor=0.1)
    schedule = Schedule(s, steps_per_epoch=4)
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = schedule.optimizer([weight])
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == s.lr
    assert schedule.last_lr() == lr_at(0, 8, 4, s)  # before any step: the first step's
    used = []
    for step in range(8):
        assert schedule.lr() == lr_at(step, 8, 4, s)
        schedule.fiber_step(optimizer, (weight**2).sum())
        used.append(optimizer.param_groups[0]["lr"])
        assert schedule.step == step + 1 and schedule.last_lr() == used[-1]
    assert used == [lr_at(i, 8, 4, s) for i in range(8)]
    assert used[3] == pytest.approx(s.lr) and used[-1] < used[4]


def test_a_batch_step_runs_at_the_last_rate_and_is_not_counted() -> None:
    s = TrainSettings(lr=1e-2, epochs=1, warmup_epochs=1)
    schedule = Schedule(s, steps_per_epoch=10)
    flow, stats = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    flow_opt, stats_opt = schedule.optimizer([flow]), schedule.optimizer([stats])
    for _ in range(3):
        schedule.fiber_step(flow_opt, (flow * 2).sum())
    out = stats * 3
    before = stats.detach().clone()
    schedule.batch_step(stats_opt, [out], [torch.ones_like(out)])
    assert schedule.step == 3
    assert stats_opt.param_groups[0]["lr"] == lr_at(2, 10, 10, s) == schedule.last_lr()
    assert torch.all(stats.detach() < before)  # one Adam step against the gradient 3
    assert stats.grad is not None and torch.equal(stats.grad, torch.full((2,), 3.0))

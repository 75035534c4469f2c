"""The optimisation schedule both training loops share (CFLOW-AD's official recipe).

Adam at ``settings.lr``; the learning rate warms up linearly over the first
``warmup_epochs``, then decays on a cosine to ``lr * lr_decay_floor`` at the end of the
run. Both are counted in fiber steps (one Adam step on one fiber batch of one layer), so
a run's length is estimated up front from the feature grids and the batch counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from training.settings import TrainSettings


def lr_at(step: int, total: int, warmup: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to lr * lr_decay_floor.

    Args:
        step: the fiber step (0-based).
        total: the run's fiber steps.
        warmup: the warm-up's fiber steps.
        settings: ``lr`` and ``lr_decay_floor``.

    Returns:
        The learning rate of ``step``.
    """
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    floor = settings.lr * settings.lr_decay_floor
    return floor + (settings.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class Schedule:
    """A run's learning rates and its count of fiber steps taken.

    Args:
        settings: ``lr``, ``lr_decay_floor``, ``epochs`` and ``warmup_epochs``.
        steps_per_epoch: fiber steps per epoch.
    """

    def __init__(self, settings: TrainSettings, steps_per_epoch: int) -> None:
        self.settings = settings
        self.total = steps_per_epoch * settings.epochs
        self.warmup = steps_per_epoch * settings.warmup_epochs
        self.step = 0

    @classmethod
    def for_batches(
        cls, settings: TrainSettings, grids: Sequence[tuple[int, int]], frames_per_batch: int, batches: int
    ) -> Schedule:
        """The schedule of a run over ``batches`` image batches per epoch.

        Args:
            settings: the training settings (``fiber_batch`` among them).
            grids: the feature grid (H_l, W_l) of each layer.
            frames_per_batch: frames in a full image batch.
            batches: image batches per epoch.

        Returns:
            The schedule (its length approximate when the last image batch is short).
        """
        per_batch = sum(math.ceil(frames_per_batch * h * w / settings.fiber_batch) for h, w in grids)
        return cls(settings, per_batch * batches)

    def optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Adam:
        """The run's optimizer over ``params``.

        Args:
            params: the parameters it trains.

        Returns:
            Adam at the base learning rate (the schedule sets each step's).
        """
        return torch.optim.Adam(params, lr=self.settings.lr)

    def lr(self) -> float:
        """The learning rate of the next fiber step."""
        return lr_at(self.step, self.total, self.warmup, self.settings)

    def last_lr(self) -> float:
        """The learning rate of the last fiber step taken (of the first before any)."""
        return lr_at(max(self.step - 1, 0), self.total, self.warmup, self.settings)

    def fiber_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One fiber step: at its learning rate, a gradient step on ``loss``; counted.

        Args:
            optimizer: the optimizer of the parameters ``loss`` depends on.
            loss: the fiber batch's loss.
        """
        _set_lr(optimizer, self.lr())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.step += 1

    def batch_step(
        self, optimizer: torch.optim.Optimizer, outputs: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]
    ) -> None:
        """A step between fiber steps (SANFlow's statistics network, once per image batch):
        at the last fiber step's learning rate, on the gradients ``grads`` of ``outputs``;
        not counted.

        Args:
            optimizer: the optimizer of the parameters ``outputs`` depend on.
            outputs: tensors to back-propagate from.
            grads: the loss's gradient with respect to each of ``outputs``.
        """
        _set_lr(optimizer, self.last_lr())
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(list(outputs), list(grads))
        optimizer.step()

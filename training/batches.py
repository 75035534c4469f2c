"""What the training loops iterate over: image batches of encoder features (cached when they
fit a memory budget), SANFlow's batches with synthetic anomalies, precomputed motion
features, and the shuffled fiber batches cut from any of them."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detector.encoders import Encoder
from detector.model import to_input
from training.augment import SyntheticAnomalies


def _grids(features: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
    return [(int(f.shape[2]), int(f.shape[3])) for f in features]


class FeatureBatches:
    """Encoder features of frame batches: computed once and cached if they fit the budget.
    ``grids``: the feature grid (H_l, W_l) of each layer."""

    def __init__(
        self, encoder: Encoder, frames: Sequence[np.ndarray], size: int, batch: int, cache_mb: int
    ) -> None:
        self.encoder, self.frames, self.size, self.batch = encoder, frames, size, batch
        probe = encoder(to_input(frames[:1], size))
        self.grids = _grids(probe)
        per_frame = sum(f.numel() * 4 for f in probe)
        self.cache: list[list[torch.Tensor]] | None = None
        if per_frame * len(frames) <= cache_mb * 2**20:
            self.cache = [self._compute(i) for i in range(0, len(frames), batch)]

    def _compute(self, start: int) -> list[torch.Tensor]:
        return self.encoder(to_input(self.frames[start : start + self.batch], self.size))

    def __len__(self) -> int:
        return math.ceil(len(self.frames) / self.batch)

    def get(self, idx: int) -> list[torch.Tensor]:
        """Features of batch ``idx`` (frames idx*batch ... idx*batch + batch - 1)."""
        return self.cache[idx] if self.cache is not None else self._compute(idx * self.batch)

    def epoch(self, generator: torch.Generator) -> Iterator[list[torch.Tensor]]:
        for idx in torch.randperm(len(self), generator=generator).tolist():
            yield self.get(idx)


class MotionBatches:
    """Precomputed motion features (N, 4, G, G) in image batches, with the interface of
    :class:`FeatureBatches` (one "layer"), so the motion head trains with :func:`train_head`."""

    def __init__(self, features: torch.Tensor, batch: int) -> None:
        self.frames, self.batch = features, batch
        self.grids = [(int(features.shape[2]), int(features.shape[3]))]

    def __len__(self) -> int:
        return math.ceil(len(self.frames) / self.batch)

    def epoch(self, generator: torch.Generator) -> Iterator[list[torch.Tensor]]:
        for idx in torch.randperm(len(self), generator=generator).tolist():
            yield [self.frames[idx * self.batch : (idx + 1) * self.batch]]


class SANFlowBatches:
    """Image batches for SANFlow: (images, encoder features, anomaly masks (B, S, S)).

    With ``augment``, every batch is drawn afresh each epoch (shuffled frames, balanced
    between normal frames and the three synthetic-anomaly kinds) and its features are
    computed for it; without, the batches and their features are CFLOW's (cached when
    they fit) and the masks are empty. ``grids``: the feature grid (H_l, W_l) of each layer.
    """

    def __init__(
        self,
        encoder: Encoder,
        frames: Sequence[np.ndarray],
        size: int,
        batch: int,
        cache_mb: int,
        augment: SyntheticAnomalies | None = None,
    ) -> None:
        self.encoder, self.frames, self.size, self.batch, self.augment = encoder, frames, size, batch, augment
        self.features = None if augment else FeatureBatches(encoder, frames, size, batch, cache_mb)
        self.grids = (self.features.grids if self.features is not None
                      else _grids(encoder(to_input(frames[:1], size))))

    def __len__(self) -> int:
        return math.ceil(len(self.frames) / self.batch)

    def epoch(
        self, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]]:
        if self.features is not None:
            for idx in torch.randperm(len(self), generator=generator).tolist():
                images = to_input(self.frames[idx * self.batch : (idx + 1) * self.batch], self.size)
                masks = torch.zeros(images.shape[0], self.size, self.size, dtype=torch.bool)
                yield images, self.features.get(idx), masks
            return
        assert self.augment is not None
        order = torch.randperm(len(self.frames), generator=generator).tolist()
        for i in range(0, len(order), self.batch):
            items = self.augment.batch(order[i : i + self.batch])
            images = to_input([a.image for a in items], self.size)
            masks = torch.from_numpy(np.stack([a.mask for a in items]))
            if masks.shape[1:] != (self.size, self.size):  # frames not at the input size
                masks = F.interpolate(masks[:, None].float(), size=(self.size, self.size),
                                      mode="nearest-exact")[:, 0] > 0.5
            yield images, self.encoder(images), masks


def fiber_batches(
    head: nn.Module, features: Sequence[torch.Tensor], fiber_batch: int, generator: torch.Generator
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """An image batch's fibers, layer by layer, in shuffled batches of ``fiber_batch``.

    Args:
        head: the flow head (it cuts features into fibers and their conditions).
        features: the batch's encoder features per layer.
        fiber_batch: fibers per batch.
        generator: the run's random stream (shuffles).

    Returns:
        An iterator of (layer, indices into the layer's fibers, fibers, their grid positions).
    """
    for layer, feature in enumerate(features):
        fibers, positions = head.fibers(feature)
        order = torch.randperm(fibers.shape[0], generator=generator)
        for i in range(0, fibers.shape[0], fiber_batch):
            idx = order[i : i + fiber_batch]
            yield layer, idx, fibers[idx], positions[idx]

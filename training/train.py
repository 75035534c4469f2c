"""Training a scene's flow head on normal frames, then measuring and calibrating it.

CFLOW-AD's training recipe (official code): encoder features of an image batch are
computed once (here: cached for the whole run when they fit a memory budget) and cut into
shuffled fiber batches; each fiber batch takes one Adam step on its layer's flow with the
loss -log sigmoid(log p / D); the learning rate warms up linearly, then decays on a cosine.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass
from torch import nn
from tqdm.auto import tqdm

from detector.anomaly_map import MapStatistics, Reduction, anomaly_map, frame_score
from detector.calibration import Calibration
from detector.encoders import Encoder
from detector.model import SceneModel, ScoreSettings, build_head, to_input

log = logging.getLogger(__name__)


@pydantic_dataclass(config=ConfigDict(extra="forbid"))
class TrainSettings:
    """Training hyper-parameters (defaults: CFLOW-AD's reference settings where they exist).

    A pydantic dataclass, so the ``training:`` section of a config file is validated
    strictly against exactly these fields.
    """

    model: str = "cflow"
    input_size: int = Field(default=256, ge=32)
    epochs: int = Field(default=20, ge=1)
    image_batch: int = Field(default=16, ge=1)
    fiber_batch: int = Field(default=1024, ge=1)
    lr: float = Field(default=2e-4, gt=0)
    warmup_epochs: int = Field(default=2, ge=0)
    lr_decay_floor: float = Field(default=1e-3, gt=0, le=1)  # final lr = lr * floor (official: 0.1**3)
    coupling_blocks: int = Field(default=8, ge=1)
    cond_dim: int = Field(default=128, ge=4, multiple_of=4)
    clamp: float = Field(default=1.9, gt=0)
    seed: int = 0
    feature_cache_mb: int = Field(default=4096, ge=0)
    reduction: Reduction = "max"
    topk: float = Field(default=0.001, gt=0, le=1)
    blur_sigma: float = Field(default=0.0, ge=0)
    position_norm: bool = False
    false_alarm_rate: float = Field(default=0.001, gt=0, lt=1)
    threads: int | None = Field(default=None, ge=1)
    holdout_fraction: float = Field(default=0.25, gt=0, lt=1)
    frame_stride: int = Field(default=1, ge=1)
    max_frames_per_video: int | None = Field(default=None, ge=1)


@dataclass
class TrainResult:
    model: SceneModel
    history: list[dict]
    holdout_nll: list[torch.Tensor]  # per-layer NLL maps of the held-out frames
    seconds: float


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and numpy (FrEIA draws its soft permutations from numpy's global RNG)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


class FeatureBatches:
    """Encoder features of frame batches: computed once and cached if they fit the budget."""

    def __init__(
        self, encoder: Encoder, frames: Sequence[np.ndarray], size: int, batch: int, cache_mb: int
    ) -> None:
        self.encoder, self.frames, self.size, self.batch = encoder, frames, size, batch
        probe = encoder(to_input(frames[:1], size))
        per_frame = sum(f.numel() * 4 for f in probe)
        self.cache: list[list[torch.Tensor]] | None = None
        if per_frame * len(frames) <= cache_mb * 2**20:
            self.cache = [self._compute(i) for i in range(0, len(frames), batch)]

    def _compute(self, start: int) -> list[torch.Tensor]:
        return self.encoder(to_input(self.frames[start : start + self.batch], self.size))

    def __len__(self) -> int:
        return math.ceil(len(self.frames) / self.batch)

    def epoch(self, generator: torch.Generator) -> Iterator[list[torch.Tensor]]:
        for idx in torch.randperm(len(self), generator=generator).tolist():
            yield self.cache[idx] if self.cache is not None else self._compute(idx * self.batch)


def lr_at(step: int, total: int, warmup: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to lr * lr_decay_floor."""
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    floor = settings.lr * settings.lr_decay_floor
    return floor + (settings.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _fiber_steps(head: nn.Module, features: Sequence[torch.Tensor], settings: TrainSettings,
                 generator: torch.Generator) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    for layer, feature in enumerate(features):
        fibers, cond = head.fibers(feature)
        order = torch.randperm(fibers.shape[0], generator=generator)
        for i in range(0, fibers.shape[0], settings.fiber_batch):
            idx = order[i : i + settings.fiber_batch]
            yield layer, fibers[idx], cond[idx]


def train_head(
    head: nn.Module,
    batches: FeatureBatches,
    settings: TrainSettings,
    generator: torch.Generator,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Fit ``head`` by maximum likelihood on the fibers of ``batches``; returns epoch history."""
    probe = batches.cache[0] if batches.cache is not None else batches._compute(0)
    steps_per_batch = sum(
        math.ceil(f.shape[0] * f.shape[2] * f.shape[3] / settings.fiber_batch) for f in probe
    )
    steps_per_epoch = steps_per_batch * len(batches)  # approximate for a short last batch
    total, warmup = steps_per_epoch * settings.epochs, steps_per_epoch * settings.warmup_epochs
    optimizer = torch.optim.Adam(head.parameters(), lr=settings.lr)
    history: list[dict] = []
    step = 0
    head.train()
    bar = tqdm(total=settings.epochs * len(batches), desc="training", unit="batch",
               disable=not progress)
    for epoch in range(settings.epochs):
        loss_sum, nll_sum, count = 0.0, 0.0, 0
        for features in batches.epoch(generator):
            for layer, fibers, cond in _fiber_steps(head, features, settings, generator):
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total, warmup, settings)
                log_p = head.fiber_log_prob(layer, fibers, cond)
                per_dim = log_p / fibers.shape[1]
                loss = -F.logsigmoid(per_dim).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                loss_sum += float(loss.detach()) * fibers.shape[0]
                nll_sum += float(-per_dim.detach().sum())
                count += fibers.shape[0]
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / max(count, 1):.4f}",
                            nll=f"{nll_sum / max(count, 1):.3f}")
        record = {"epoch": epoch + 1, "loss": loss_sum / max(count, 1),
                  "nll_per_dim": nll_sum / max(count, 1), "lr": lr_at(step - 1, total, warmup, settings)}
        history.append(record)
        log.info("epoch %d: loss %.4f, NLL/dim %.4f", epoch + 1, record["loss"], record["nll_per_dim"])
        if on_epoch:
            on_epoch(record)
    bar.close()
    head.eval()
    return history


@torch.no_grad()
def measure_normal(
    model: SceneModel, encoder: Encoder, frames: Sequence[np.ndarray], batch: int
) -> list[torch.Tensor]:
    """NLL-per-dimension maps of frames, concatenated per layer: [(N, H_l, W_l)]."""
    per_layer: list[list[torch.Tensor]] = []
    for i in range(0, len(frames), batch):
        maps = model.nll_maps(encoder(to_input(frames[i : i + batch], model.input_size)))
        if not per_layer:
            per_layer = [[] for _ in maps]
        for acc, m in zip(per_layer, maps, strict=True):
            acc.append(m)
    return [torch.cat(acc) for acc in per_layer]


@torch.no_grad()
def fit_normal_statistics(
    holdout_nll: Sequence[torch.Tensor],
    input_size: int,
    settings: ScoreSettings,
    position_norm: bool,
    false_alarm_rate: float,
) -> tuple[MapStatistics, Calibration]:
    """Normal statistics and score calibration from held-out frames' NLL maps."""
    stats = MapStatistics.from_nll(holdout_nll, position_norm)
    raw = []
    for i in range(0, holdout_nll[0].shape[0], 32):
        maps = anomaly_map([m[i : i + 32] for m in holdout_nll], stats, (input_size, input_size),
                           settings.blur_sigma)
        raw.append(frame_score(maps, settings.reduction, settings.topk))
    return stats, Calibration.fit(torch.cat(raw).double().numpy(), false_alarm_rate)


def train_scene(
    encoder: Encoder,
    train_frames: Sequence[np.ndarray],
    holdout_frames: Sequence[np.ndarray],
    settings: TrainSettings,
    progress: bool = True,
) -> TrainResult:
    """Train a scene model on normal frames and calibrate it on held-out normal frames."""
    if not train_frames:
        raise ValueError("no training frames")
    if len(holdout_frames) < 2:
        raise ValueError("calibration needs at least 2 held-out normal frames")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    start = time.perf_counter()
    generator = seed_everything(settings.seed)
    encoder.eval()
    head = build_head(settings.model, {
        "feature_dims": encoder.channels, "cond_dim": settings.cond_dim,
        "blocks": settings.coupling_blocks, "clamp": settings.clamp,
    })
    batches = FeatureBatches(encoder, train_frames, settings.input_size, settings.image_batch,
                             settings.feature_cache_mb)
    history = train_head(head, batches, settings, generator, progress)
    model = SceneModel(
        kind=settings.model, head=head, encoder=encoder.name, encoder_digest=encoder.digest,
        input_size=settings.input_size,
        settings=ScoreSettings(settings.reduction, settings.topk, settings.blur_sigma),
    )
    holdout_nll = measure_normal(model, encoder, holdout_frames, settings.image_batch)
    model.stats, model.calibration = fit_normal_statistics(
        holdout_nll, settings.input_size, model.settings, settings.position_norm,
        settings.false_alarm_rate,
    )
    return TrainResult(model, history, holdout_nll, time.perf_counter() - start)


def settings_summary(settings: TrainSettings) -> dict:
    return asdict(settings)

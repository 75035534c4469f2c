"""A scene's model: its flow head, normal-footage statistics, calibration and settings.

Flow heads are registered by name (``HEADS``) so a scene's checkpoint names the kind it
needs; the encoder is not part of a scene model, since one encoder pass is shared by all
scenes in a batch. A head's ``forward(features, images=None)`` returns per-layer
log-likelihood maps in nats; heads with ``needs_images`` (SANFlow's statistics network)
also read the input images, (B, 3, S, S) in [0, 1] as :func:`to_input` makes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch import nn

from common.config import Strict
from detector.anomaly_map import MapStatistics, Reduction, anomaly_map, frame_score, nll_per_dim
from detector.calibration import Calibration
from detector.cflow import CFlowHead
from detector.sanflow import SANFlowHead

HEADS: dict[str, type[nn.Module]] = {"cflow": CFlowHead, "sanflow": SANFlowHead}


def build_head(kind: str, config: dict) -> nn.Module:
    """Instantiate a registered flow head from its saved configuration."""
    if kind not in HEADS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(sorted(HEADS))}")
    return HEADS[kind](**config)


class ScoreSettings(Strict):
    """How a frame score is read off the anomaly map: ``blur_sigma`` (0: none) smooths the
    map, ``reduction`` (with ``topk``, see :func:`~detector.anomaly_map.frame_score`) reads it.

    A trained model's come from its training settings (``training.train.score_settings``)
    and are stored in its checkpoint. The defaults, an untrained model's, are the training
    settings' defaults (tests/training checks that they agree).
    """

    reduction: Reduction = "max"
    topk: float = 0.001
    blur_sigma: float = 0.0


def resize_for_model(frame_bgr: np.ndarray, size: int) -> np.ndarray:
    """A BGR uint8 frame of any size -> the ``size`` x ``size`` BGR frame the model sees
    (area averaging when shrinking). A frame already at that size is returned as it is."""
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
        raise ValueError(f"expected a BGR uint8 HxWx3 image, got {frame_bgr.dtype} {frame_bgr.shape}")
    if frame_bgr.shape[:2] == (size, size):
        return frame_bgr
    interp = cv2.INTER_AREA if min(frame_bgr.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(frame_bgr, (size, size), interpolation=interp)


def to_input(frames_bgr: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """BGR uint8 frames of any size -> RGB float tensor (B, 3, size, size) in [0, 1]."""
    batch = np.empty((len(frames_bgr), size, size, 3), dtype=np.uint8)
    for i, frame in enumerate(frames_bgr):
        try:
            batch[i] = resize_for_model(frame, size)[:, :, ::-1]
        except ValueError as exc:
            raise ValueError(f"frame {i}: {exc}") from None
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)


@dataclass
class ScoredBatch:
    """A batch's anomaly maps (B, S, S) and frame scores (B,), calibrated so that 1.0 is
    the scene's threshold, with the raw frame scores in model units."""

    maps: torch.Tensor
    scores: np.ndarray
    raw: np.ndarray


@dataclass
class SceneModel:
    """Everything needed to turn encoder features of a scene's frames into maps and scores."""

    kind: str
    head: nn.Module
    encoder: str
    encoder_digest: str
    input_size: int
    stats: MapStatistics | None = None
    calibration: Calibration | None = None
    settings: ScoreSettings = field(default_factory=ScoreSettings)

    @property
    def feature_dims(self) -> list[int]:
        return list(self.head.feature_dims)

    @property
    def needs_images(self) -> bool:
        """Whether the head reads the input images besides the features (SANFlow)."""
        return bool(getattr(self.head, "needs_images", False))

    @torch.no_grad()
    def nll_maps(
        self, features: Sequence[torch.Tensor], images: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Per-layer NLL-per-dimension maps (B, H_l, W_l). ``images``: the encoder's input
        batch (see :func:`to_input`), required when :attr:`needs_images`."""
        self.head.eval()
        if self.needs_images and images is None:
            raise ValueError(f"a {self.kind} scene model needs the input images as well as the features")
        return nll_per_dim(self.head(features, images), self.feature_dims)

    @torch.no_grad()
    def score_nll(self, nll: Sequence[torch.Tensor]) -> ScoredBatch:
        """Calibrated maps and scores from per-layer NLL maps (see :meth:`nll_maps`)."""
        if self.stats is None or self.calibration is None:
            raise RuntimeError("scene model is not calibrated (not trained?)")
        maps = anomaly_map(nll, self.stats, (self.input_size, self.input_size), self.settings.blur_sigma)
        raw = frame_score(maps, self.settings.reduction, self.settings.topk).double().cpu().numpy()
        cal = self.calibration
        return ScoredBatch(
            maps=(maps - cal.center) / (cal.threshold - cal.center),
            scores=np.asarray(cal.calibrate(raw)),
            raw=raw,
        )

    def score(self, features: Sequence[torch.Tensor], images: torch.Tensor | None = None) -> ScoredBatch:
        """Calibrated maps and scores of a batch from its encoder features (and its input
        images, for heads that need them)."""
        return self.score_nll(self.nll_maps(features, images))

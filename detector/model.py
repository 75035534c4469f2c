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
from typing import Literal

import cv2
import numpy as np
import torch
from pydantic import Field
from torch import nn

from common.config import Strict
from detector.anomaly_map import MapStatistics, Reduction, anomaly_map, frame_score, nll_per_dim
from detector.calibration import Calibration
from detector.cflow import CFlowHead
from detector.motion import MotionSettings
from detector.sanflow import SANFlowHead
from detector.temporal import ScoreHistory

HEADS: dict[str, type[nn.Module]] = {"cflow": CFlowHead, "sanflow": SANFlowHead}


def build_head(kind: str, config: dict) -> nn.Module:
    """Instantiate a registered flow head from its saved configuration."""
    if kind not in HEADS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(sorted(HEADS))}")
    return HEADS[kind](**config)


class ScoreSettings(Strict):
    """How a frame score is read off the anomaly map: ``blur_sigma`` (0: none) smooths the
    map, ``reduction`` (with ``topk``, see :func:`~detector.anomaly_map.frame_score`) reads it,
    and ``window`` > 1 publishes the causal mean of a camera's last calibrated scores
    (:mod:`detector.temporal`; the maps stay per frame).

    A trained model's come from its training settings (``training.train.score_settings``)
    and are stored in its checkpoint. The defaults, an untrained model's, are the training
    settings' defaults (tests/training checks that they agree).
    """

    reduction: Reduction = "max"
    topk: float = 0.001
    blur_sigma: float = 0.0
    window: int = Field(default=1, ge=1, description="published score: the causal mean of the camera's "
                                                    "last `window` calibrated frame scores (1: per frame; "
                                                    "see detector.temporal)")
    window_max_step: int = Field(default=3, ge=1, description="a run of frames ends where the previous "
                                                             "frame is more source frames back than this")
    window_max_gap_ms: int = Field(default=2000, ge=1, description="... or was captured longer before")

    def history(self) -> ScoreHistory | None:
        """A camera-keyed smoothing state for these settings (None: per-frame scores)."""
        return (ScoreHistory(self.window, self.window_max_step, self.window_max_gap_ms)
                if self.window > 1 else None)


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
    has_motion: np.ndarray | None = None  # (B,) bool: scored with motion evidence


@dataclass
class MotionModel:
    """A scene's motion channel (:mod:`detector.motion`): a CFLOW-AD flow over the motion
    feature map, conditioned on the grid position, with the normal statistics of its NLL
    and the calibration of frames that have motion evidence.

    How a frame with motion evidence is scored (``combine``):

    * ``max``: the pixel-wise maximum of the appearance map and the motion map, each in
      its own calibrated units (appearance: the scene's calibration; motion:
      :attr:`channel_calibration`) -- an anomaly of either kind shows as strongly as on
      its own channel;
    * ``sum``: ``appearance map + weight * motion map`` (both standardised NLL).

    Either way the joint frame score is calibrated with :attr:`calibration`. A frame
    without evidence (a camera's first frame, or the first after a gap) is scored on
    appearance alone, with the scene model's own calibration.
    """

    settings: MotionSettings
    head: CFlowHead
    stats: MapStatistics | None = None
    calibration: Calibration | None = None
    weight: float = 1.0
    combine: Literal["sum", "max"] = "sum"
    channel_calibration: Calibration | None = None

    @torch.no_grad()
    def nll_maps(self, motion: torch.Tensor) -> list[torch.Tensor]:
        """The NLL-per-dimension map (B, G, G) of motion features (B, 4, G, G), as a one-layer list."""
        self.head.eval()
        return nll_per_dim(self.head([motion]), self.head.feature_dims)


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
    motion: MotionModel | None = None

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

    def motion_nll(self, motion: Sequence[np.ndarray | None]) -> tuple[np.ndarray, list[torch.Tensor] | None]:
        """Which frames of a batch have motion evidence, and their motion NLL maps.

        Args:
            motion: per frame, its motion features (4, G, G) or None (no evidence).

        Returns:
            A boolean mask over the batch, and the one-layer NLL maps of the frames it
            selects (None when the model has no motion channel or no frame has evidence).
        """
        has = np.array([m is not None for m in motion], dtype=bool)
        if self.motion is None or not has.any():
            return np.zeros(len(motion), dtype=bool), None
        feats = torch.from_numpy(np.stack([m for m in motion if m is not None]))
        return has, self.motion.nll_maps(feats)

    @torch.no_grad()
    def raw_maps(
        self, nll: Sequence[torch.Tensor], has_motion: np.ndarray | None = None,
        motion_nll: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Uncalibrated anomaly maps (B, S, S): standardised appearance NLL, plus the weighted
        standardised motion NLL for the frames ``has_motion`` selects."""
        if self.stats is None:
            raise RuntimeError("scene model is not calibrated (not trained?)")
        size = (self.input_size, self.input_size)
        maps = anomaly_map(nll, self.stats, size, self.settings.blur_sigma)
        if self.motion is not None and motion_nll is not None and has_motion is not None and has_motion.any():
            if self.motion.stats is None:
                raise RuntimeError("scene model's motion channel is not calibrated")
            rows = torch.from_numpy(np.flatnonzero(has_motion))
            motion_map = anomaly_map(motion_nll, self.motion.stats, size, self.settings.blur_sigma)
            if self.motion.combine == "sum":
                maps[rows] = maps[rows] + self.motion.weight * motion_map
            else:
                own, cal = self.motion.channel_calibration, self.calibration
                if own is None or cal is None:
                    raise RuntimeError("the motion channel's own calibration is missing (combine: max)")
                appearance = (maps[rows] - cal.center) / (cal.threshold - cal.center)
                motion = self.motion.weight * (motion_map - own.center) / (own.threshold - own.center)
                maps[rows] = torch.maximum(appearance, motion)
        return maps

    def raw_scores(self, maps: torch.Tensor) -> np.ndarray:
        """Raw frame scores (B,) float64 of maps (B, S, S), read as this model's settings say."""
        return frame_score(maps, self.settings.reduction, self.settings.topk).double().cpu().numpy()

    @torch.no_grad()
    def score_nll(
        self, nll: Sequence[torch.Tensor], has_motion: np.ndarray | None = None,
        motion_nll: Sequence[torch.Tensor] | None = None,
    ) -> ScoredBatch:
        """Calibrated maps and scores from per-layer NLL maps (see :meth:`nll_maps`) and, for
        the frames ``has_motion`` selects, their motion NLL maps (see :meth:`motion_nll`;
        ignored by a model without a motion channel)."""
        if self.stats is None or self.calibration is None:
            raise RuntimeError("scene model is not calibrated (not trained?)")
        maps = self.raw_maps(nll, has_motion, motion_nll)
        raw = self.raw_scores(maps)
        n = len(raw)
        usable = self.motion is not None and has_motion is not None and motion_nll is not None
        with_motion = has_motion if usable else np.zeros(n, bool)
        cal = self.calibration
        out = (maps - cal.center) / (cal.threshold - cal.center)
        scores = np.asarray(cal.calibrate(raw), dtype=np.float64)
        if with_motion.any():
            if self.motion is None or self.motion.calibration is None:
                raise RuntimeError("scene model has no calibrated motion channel")
            mcal = self.motion.calibration
            rows = torch.from_numpy(np.flatnonzero(with_motion))
            out[rows] = (maps[rows] - mcal.center) / (mcal.threshold - mcal.center)
            scores[with_motion] = np.asarray(mcal.calibrate(raw[with_motion]), dtype=np.float64)
        return ScoredBatch(maps=out, scores=scores, raw=raw, has_motion=with_motion)

    def score(
        self, features: Sequence[torch.Tensor], images: torch.Tensor | None = None,
        motion: Sequence[np.ndarray | None] | None = None,
    ) -> ScoredBatch:
        """Calibrated maps and scores of a batch from its encoder features (and its input
        images, for heads that need them, and per frame its motion features or None, for a
        model with a motion channel)."""
        has, motion_nll = self.motion_nll(motion) if motion is not None else (None, None)
        return self.score_nll(self.nll_maps(features, images), has, motion_nll)

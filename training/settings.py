"""The ``training:`` section of a config file, importable without torch (see
:mod:`detector.settings` for why)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from common.config import Strict
from detector.motion import MotionSettings
from detector.settings import Reduction


class MotionTraining(Strict):
    """The ``training.motion:`` section: whether a scene gets a motion channel
    (:mod:`detector.motion`), how its motion features are computed and how its motion head
    is trained. The head is a CFLOW-AD flow over the 4 motion channels, conditioned on the
    grid position; it trains on the same schedule as the appearance head."""

    enabled: bool = False
    features: MotionSettings = Field(default_factory=MotionSettings)
    combine: Literal["max", "sum"] = Field(
        default="max", description="joint map: pixel-wise max of the calibrated maps, or their sum")
    weight: float = Field(default=1.0, gt=0, description="weight of the motion map in the joint map")
    cond_dim: int = Field(default=64, ge=4, multiple_of=4)
    coupling_blocks: int = Field(default=4, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    epochs: int | None = Field(default=None, ge=1, description="None: the appearance head's")


class TrainSettings(Strict):
    """Training hyper-parameters (defaults: CFLOW-AD's reference settings where they exist).

    A strict model, so the ``training:`` section of a config file is validated against
    exactly these fields. ``reduction``, ``topk`` and ``blur_sigma`` are how the trained
    model reads its frame score (:func:`training.train.score_settings`).
    """

    model: Literal["cflow", "sanflow"] = "cflow"
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
    # Cross-fitting: the threshold from every fold of the footage (1 / holdout_fraction
    # folds), each scored by a model that did not train on it; one extra training per fold.
    cross_fit: bool = False
    cross_fit_epochs: int | None = Field(default=None, ge=1)  # the fold models' (None: ``epochs``)
    frame_stride: int = Field(default=1, ge=1)
    max_frames_per_video: int | None = Field(default=None, ge=1)
    motion: MotionTraining = Field(default_factory=MotionTraining)
    # SANFlow (model: sanflow). The ablations of the paper: sanflow_bce_weight: 0 (without
    # BCE), sanflow_kl_weight: 0 (without KL), sanflow_augment: false (without synthetic
    # anomalies), sanflow_fixed_variance: true (no statistics network; sigma^2 = prior mode).
    sanflow_bce_weight: float = Field(default=1.0, ge=0, le=100)  # lambda_1
    sanflow_kl_weight: float = Field(default=0.2, ge=0, le=100)  # lambda_2
    sanflow_prior_mode: float = Field(default=0.1, gt=0, le=10)  # xi, the prior variance's mode
    sanflow_prior_window: int = Field(default=11, ge=2, le=64)  # p: prior IG(p^2/2 - 1, p^2 xi / 2)
    sanflow_augment: bool = True
    sanflow_fixed_variance: bool = False
    sanflow_stats_width: int = Field(default=64, ge=1, le=512)  # filters of the statistics network
    sanflow_jitter: float = Field(default=0.1, ge=0, le=0.5)  # colour jitter of pasted regions
    sanflow_flip_prob: float = Field(default=0.5, ge=0, le=1)  # per axis
    sanflow_border: float = Field(default=4.0, ge=0, le=32)  # softened edge, px at a 256 px input

    def with_changes(self, **changes: Any) -> TrainSettings:
        """A validated copy with ``changes`` (what ``dataclasses.replace`` did).

        Args:
            changes: new values by field name.

        Returns:
            The new settings; a ``pydantic.ValidationError`` names a bad field or value.
        """
        return type(self).model_validate({**self.model_dump(), **changes})

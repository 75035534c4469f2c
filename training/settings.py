"""The ``training:`` section of a config file, importable without torch (see
:mod:`detector.settings` for why)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from common.config import Strict
from detector.motion import MotionSettings
from detector.settings import Reduction

#: The statistics network's input (``sanflow_stats_input``): the image at full size, or
#: downscaled by 2, 4 or 8 (``detector.sanflow.STATS_INPUTS``; tests check they agree).
StatsInput = Literal["full", "half", "quarter", "eighth"]

#: Named presets (``training.preset``): the settings each one fills in. Keys given beside
#: the preset win over its values.
PRESETS: dict[str, dict[str, Any]] = {
    # SANFlow as its paper trains it (Kim et al., NeurIPS 2023): 80 epochs (the official
    # code's 20 meta-epochs of 4 sub-epochs), Adam at 5e-4, a 512-dimensional position
    # embedding, NLL + 1.0 BCE + 0.2 KL, prior mode 0.1 (window p = 11, the official
    # code's), anomalies mapped to N(1, sigma^2), the statistics network at full resolution.
    "sanflow-paper": {
        "model": "sanflow",
        "epochs": 80,
        "lr": 5e-4,
        "cond_dim": 512,
        "sanflow_bce_weight": 1.0,
        "sanflow_kl_weight": 0.2,
        "sanflow_prior_mode": 0.1,
        "sanflow_prior_window": 11,
        "sanflow_margin": 1.0,
        "sanflow_stats_width": 64,
        "sanflow_stats_input": "full",
        "sanflow_fixed_variance": False,
        "sanflow_augment": True,
    },
}


class MotionTraining(Strict):
    """The ``training.motion:`` section: whether a scene gets a motion channel
    (:mod:`detector.motion`), how its motion features are computed and how its motion head
    is trained. The head is a CFLOW-AD flow over the motion channels, conditioned on the
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
    model reads its frame score (:func:`training.train.score_settings`). ``preset`` names a
    set of values (:data:`PRESETS`) for the fields not given beside it.
    """

    preset: str | None = Field(
        default=None, description="a named preset (PRESETS, e.g. sanflow-paper) filling in the settings "
                                  "not given beside it")
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
    score_window: int = Field(default=1, ge=1, description="published score: causal mean of the camera's "
                                                           "last N calibrated frame scores (1: per frame)")
    position_norm: bool = False
    false_alarm_rate: float = Field(default=0.001, gt=0, lt=1)
    threads: int | None = Field(
        default=None, ge=1,
        description="torch threads while training; None: the CPUs this process may run on (its affinity)",
    )
    holdout_fraction: float = Field(default=0.25, gt=0, lt=1)
    # Cross-fitting: the threshold from every fold of the footage (1 / holdout_fraction
    # folds), each scored by a model that did not train on it; one extra training per fold.
    cross_fit: bool = False
    cross_fit_epochs: int | None = Field(default=None, ge=1)  # the fold models' (None: half of ``epochs``)
    # max: the highest fold's own threshold (chosen on campus seed 1, see README);
    # pooled: the threshold fitted on all folds' scores together.
    cross_fit_rule: Literal["pooled", "max"] = "max"
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
    sanflow_margin: float = Field(default=1.0, gt=0, le=100)  # anomalies' base: N(margin, sigma^2)
    # The statistics network's input: full (the paper's), or the image downscaled by 2, 4 or 8
    # (a quarter, 1/16 or 1/64 of its cost; the variance is only read at strides 8-32).
    sanflow_stats_input: StatsInput = "full"
    #: How the predicted variance reaches the score: "learned" (the paper: the statistics
    #: network's σ² in the likelihood) or "prior" (the network shapes training only; frames
    #: are scored with σ² = the prior mode, so no network runs at inference).
    sanflow_score_variance: Literal["learned", "prior"] = "learned"

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("preset"), str) and data["preset"] in PRESETS:
            return {**PRESETS[data["preset"]], **data}
        return data

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str | None) -> str | None:
        if name is not None and name not in PRESETS:
            raise ValueError(f"unknown training preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        return name

    def with_changes(self, **changes: Any) -> TrainSettings:
        """A validated copy with ``changes`` (what ``dataclasses.replace`` did).

        Args:
            changes: new values by field name.

        Returns:
            The new settings; a ``pydantic.ValidationError`` names a bad field or value.

        Raises:
            ValueError: ``changes`` change the preset (a preset fills in the settings when
                they are made, from the fields not given beside it; a copy has them all).
        """
        if "preset" in changes and changes["preset"] != self.preset:
            raise ValueError("a copy cannot change the training preset: give it when the settings are made "
                             "(training.preset, or TrainSettings(preset=...))")
        return type(self).model_validate({**self.model_dump(), **changes})

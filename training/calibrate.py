"""On-site calibration: re-fit a trained scene's thresholds on more normal footage, without
retraining (``vigil calibrate``).

Held-out calibration footage at training time is often short (a hundred frames cannot pin
down a 1-in-1000 tail). More normal footage of the same camera -- recorded later, at other
times of day -- gives the thresholds more to stand on. Each video is scored as a stream
(its first frame without motion evidence), and the raw scores are pooled with the
held-out scores the checkpoint already has (or replace them, ``keep_existing=False``):
the appearance-only calibration from every frame, the joint (appearance + motion) one
from the frames with motion evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from detector.calibration import Calibration
from detector.encoders import Encoder
from detector.model import SceneModel
from training.motion import motion_sequence
from training.train import measure_nll


@dataclass
class Recalibration:
    """What a re-calibration changed: frames used, and each calibration before and after."""

    frames: int
    motion_frames: int
    appearance: tuple[Calibration, Calibration]
    motion: tuple[Calibration, Calibration] | None

    def summary(self) -> dict:
        """Thresholds and methods before and after, for the CLI's report."""
        def one(pair: tuple[Calibration, Calibration]) -> dict:
            before, after = pair
            return {"threshold_before": before.threshold, "threshold_after": after.threshold,
                    "method": after.method, "normal_frames": len(after.normal_scores)}

        out = {"frames": self.frames, "appearance": one(self.appearance)}
        if self.motion is not None:
            out["motion_frames"] = self.motion_frames
            out["motion"] = one(self.motion)
        return out


@dataclass
class _Run:
    """One run's NLL maps, kept between the appearance refit and the joint one."""

    nll: list[torch.Tensor]
    has_motion: np.ndarray | None
    motion_nll: list[torch.Tensor] | None


@torch.no_grad()
def _measure(model: SceneModel, encoder: Encoder, run: Sequence[np.ndarray], step: int) -> _Run:
    nll = measure_nll(model, encoder, run, 16)
    if model.motion is None:
        return _Run(nll, None, None)
    has, motion_nll = model.motion_nll(motion_sequence(run, None, step, model.motion.settings))
    return _Run(nll, has, motion_nll)


@torch.no_grad()
def _appearance_raw(model: SceneModel, run: _Run) -> np.ndarray:
    maps = model.raw_maps(run.nll)
    return model.raw_scores(maps)


@torch.no_grad()
def _joint_raw(model: SceneModel, run: _Run) -> np.ndarray:
    if run.motion_nll is None or run.has_motion is None:
        return np.zeros(0)
    rows = torch.from_numpy(np.flatnonzero(run.has_motion))
    joint = model.raw_maps([n[rows] for n in run.nll], np.ones(len(rows), bool), run.motion_nll)
    return model.raw_scores(joint)


def recalibrate(model: SceneModel, encoder: Encoder, runs: Sequence[Sequence[np.ndarray]], *,
                step: int = 1, false_alarm_rate: float | None = None,
                keep_existing: bool = True) -> Recalibration:
    """Re-fit ``model``'s calibrations (in place) on runs of normal frames.

    The appearance calibration is re-fit first: a joint score that combines calibrated
    maps (``combine: max``) is measured in its units.

    Args:
        model: a trained, calibrated scene model.
        encoder: its encoder.
        runs: runs of consecutive normal frames (e.g. one per video), at the input size.
        step: source frames between consecutive frames of a run.
        false_alarm_rate: the new nominal rate (None: keep the model's).
        keep_existing: pool the new scores with the ones the calibrations were fit on.

    Returns:
        What changed.
    """
    if model.calibration is None:
        raise ValueError("the scene model is not calibrated (not trained?)")
    measured = [_measure(model, encoder, run, step) for run in runs if len(run)]
    appearance = np.concatenate([_appearance_raw(model, r) for r in measured]) if measured else np.zeros(0)
    if appearance.size < 2:
        raise ValueError(f"calibration needs at least 2 normal frames, got {appearance.size}")
    rate = false_alarm_rate

    def refit(old: Calibration, new: np.ndarray, pool: bool) -> Calibration:
        pooled = np.concatenate([np.asarray(old.normal_scores), new]) if pool else new
        return Calibration.fit(pooled, rate or old.false_alarm_rate)

    before = model.calibration
    model.calibration = refit(before, appearance, keep_existing)
    motion_pair = None
    motion_frames = 0
    if model.motion is not None and model.motion.calibration is not None:
        joint = np.concatenate([_joint_raw(model, r) for r in measured])
        motion_frames = int(joint.size)
        # With ``max`` the held-out joint scores were measured in the old appearance
        # units, so only the new footage counts for the joint calibration then.
        pool = keep_existing and model.motion.combine == "sum"
        if joint.size >= 2 or (pool and joint.size):
            old = model.motion.calibration
            model.motion.calibration = refit(old, joint, pool)
            motion_pair = (old, model.motion.calibration)
    return Recalibration(int(appearance.size), motion_frames, (before, model.calibration), motion_pair)

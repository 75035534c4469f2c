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

from detector.anomaly_map import frame_score
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


@torch.no_grad()
def raw_scores(model: SceneModel, encoder: Encoder, run: Sequence[np.ndarray], step: int = 1,
               batch: int = 16) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw frame scores of a run of consecutive normal frames, as a stream would score them.

    Args:
        model: the trained scene model.
        encoder: its encoder.
        run: BGR frames at the model's input size, ``step`` source frames apart.
        step: source frames between consecutive frames.
        batch: frames per encoder pass.

    Returns:
        The appearance-only raw scores of every frame, and (for a model with a motion
        channel) the joint raw scores of the frames with motion evidence (all but the first).
    """
    nll = measure_nll(model, encoder, run, batch)
    appearance = frame_score(model.raw_maps(nll), model.settings.reduction, model.settings.topk)
    if model.motion is None:
        return appearance.double().numpy(), None
    has, motion_nll = model.motion_nll(motion_sequence(run, None, step, model.motion.settings))
    if motion_nll is None:
        return appearance.double().numpy(), np.zeros(0)
    rows = torch.from_numpy(np.flatnonzero(has))
    joint = model.raw_maps([n[rows] for n in nll], np.ones(len(rows), bool), motion_nll)
    return (appearance.double().numpy(),
            frame_score(joint, model.settings.reduction, model.settings.topk).double().numpy())


def recalibrate(model: SceneModel, encoder: Encoder, runs: Sequence[Sequence[np.ndarray]], *,
                step: int = 1, false_alarm_rate: float | None = None,
                keep_existing: bool = True) -> Recalibration:
    """Re-fit ``model``'s calibrations (in place) on runs of normal frames.

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
    scored = [raw_scores(model, encoder, run, step) for run in runs if len(run)]
    appearance = np.concatenate([a for a, _ in scored]) if scored else np.zeros(0)
    if appearance.size < 2:
        raise ValueError(f"calibration needs at least 2 normal frames, got {appearance.size}")

    def refit(old: Calibration, new: np.ndarray) -> Calibration:
        pooled = np.concatenate([np.asarray(old.normal_scores), new]) if keep_existing else new
        return Calibration.fit(pooled, false_alarm_rate or old.false_alarm_rate)

    before = model.calibration
    model.calibration = refit(before, appearance)
    motion_pair = None
    motion_frames = 0
    if model.motion is not None and model.motion.calibration is not None:
        joint = np.concatenate([j for _, j in scored if j is not None])
        motion_frames = int(joint.size)
        if keep_existing or joint.size >= 2:
            old = model.motion.calibration
            model.motion.calibration = refit(old, joint)
            motion_pair = (old, model.motion.calibration)
    return Recalibration(int(appearance.size), motion_frames, (before, model.calibration), motion_pair)

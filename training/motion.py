"""Training data and calibration of a scene's motion channel (:mod:`detector.motion`):
motion features of runs of consecutive frames, and the joint score's calibration."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from detector.calibration import Calibration
from detector.model import SceneModel
from detector.motion import MotionSettings, MotionTracker


def motion_sequence(
    frames: Sequence[np.ndarray], runs: Sequence[int] | None, step: int, settings: MotionSettings
) -> list[np.ndarray | None]:
    """Per frame, its motion features within its run, as a camera's stream would give them
    (:class:`~detector.motion.MotionTracker`; None for a run's first frame).

    Args:
        frames: BGR frames at the model input size, runs of consecutive frames one after another.
        runs: the runs' lengths (None: one run).
        step: source frames between consecutive frames of a run (``frame_stride``).
        settings: how motion features are computed.

    Returns:
        One entry per frame.
    """
    lengths = list(runs) if runs is not None else [len(frames)]
    if sum(lengths) != len(frames):
        raise ValueError(f"runs cover {sum(lengths)} frames, but there are {len(frames)}")
    # The streaming state itself, one run after another, so training sees what a camera does.
    tracker = MotionTracker(settings.model_copy(update={"max_step": max(step, settings.max_step)}))
    out: list[np.ndarray | None] = []
    start = 0
    for n in lengths:
        tracker.forget("run")
        out.extend(tracker.features("run", j * step, frames[start + j]) for j in range(n))
        start += n
    return out


@torch.no_grad()
def fit_motion_calibration(
    model: SceneModel, nll: Sequence[torch.Tensor], motion_nll: Sequence[torch.Tensor],
    false_alarm_rate: float,
) -> Calibration:
    """Calibrate the joint (appearance + motion) score of ``model`` on held-out frames.

    Args:
        model: a scene model whose motion channel has its statistics.
        nll: the held-out frames' appearance NLL maps (frames with a predecessor only).
        motion_nll: the same frames' motion NLL maps.
        false_alarm_rate: the share of normal frames the threshold lets through.

    Returns:
        The calibration, also set as ``model.motion.calibration``.
    """
    assert model.motion is not None
    joint = model.raw_maps(nll, np.ones(nll[0].shape[0], bool), motion_nll)
    raw = model.raw_scores(joint)
    model.motion.calibration = Calibration.fit(raw, false_alarm_rate)
    return model.motion.calibration

"""What the speed benchmarks (``bench/``) score: frames of a clip at the model's size, and
untrained scene models whose whole scoring path runs.

An untrained head costs what a trained one does, so speed can be measured without
training; its normal statistics and calibration are fitted on a few frames so that maps
and calibrated scores are computed as in a real scene model (its scores mean nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detector.encoders import Encoder
from detector.model import SceneModel, build_head, resize_for_model
from streamer.video import iter_frames
from training.settings import TrainSettings
from training.train import fit_normal_statistics, head_config, measure_nll, score_settings

__all__ = ["load_frames", "untrained_model"]


def load_frames(source: Path, count: int, size: int) -> list[np.ndarray]:
    """``count`` BGR frames of the video ``source`` at ``size`` x ``size`` (cycled if it is shorter)."""
    frames = [resize_for_model(f.image, size) for f in iter_frames(source, max_frames=count)]
    if not frames:
        raise ValueError(f"no frames in {source}")
    return [frames[i % len(frames)] for i in range(count)]


def untrained_model(settings: TrainSettings, encoder: Encoder, frames: Sequence[np.ndarray],
                    batch: int = 8) -> SceneModel:
    """An untrained scene model of ``settings``' kind, its statistics and calibration fitted
    on ``frames`` (at least 2, at ``settings.input_size``)."""
    head = build_head(settings.model, head_config(settings, encoder.channels)).eval()
    model = SceneModel(kind=settings.model, head=head, encoder=encoder.name, encoder_digest=encoder.digest,
                       input_size=settings.input_size, settings=score_settings(settings))
    nll = measure_nll(model, encoder, frames, batch)
    model.stats, model.calibration = fit_normal_statistics(nll, settings.input_size, model.settings, False,
                                                           settings.false_alarm_rate)
    return model

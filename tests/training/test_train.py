"""Training a scene head: likelihood goes up, schedule, calibration on held-out frames."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detector.encoders import Encoder
from tests.conftest import TINY_SIZE, resize, tiny_settings
from training.train import TrainResult, TrainSettings, lr_at, train_scene


def test_short_training_lowers_the_nll(encoder: Encoder, clip_frames: list[np.ndarray]) -> None:
    small = resize(clip_frames, 64)
    settings = tiny_settings(input_size=64, epochs=3, fiber_batch=512, cond_dim=16,
                             warmup_epochs=1, lr=1e-3, blur_sigma=1.0)
    result = train_scene(encoder, small[:16], small[16:20], settings, progress=False)
    nll = [h["nll_per_dim"] for h in result.history]
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert all(math.isfinite(v) for v in nll)
    assert nll[-1] < nll[0]
    assert all(b < a for a, b in zip(nll, nll[1:], strict=False))


def test_trained_model_is_calibrated_on_the_holdout(trained: TrainResult, encoder: Encoder) -> None:
    model = trained.model
    assert model.encoder == encoder.name and model.encoder_digest == encoder.digest
    assert model.input_size == TINY_SIZE
    assert model.stats is not None and model.stats.position_norm
    assert model.calibration is not None
    assert len(model.calibration.normal_scores) == 8
    # 8 held-out frames are far too few for a 0.1 % quantile: Gumbel extrapolation.
    assert model.calibration.method == "gumbel"
    assert model.calibration.threshold > max(model.calibration.normal_scores)
    assert [tuple(m.shape) for m in trained.holdout_nll] == [(8, 16, 16), (8, 8, 8), (8, 4, 4)]
    assert len(trained.history) == 1 and trained.seconds > 0


def test_training_is_reproducible(encoder: Encoder, clip_frames: list[np.ndarray]) -> None:
    small = resize(clip_frames[:12], 32)
    settings = tiny_settings(input_size=32, fiber_batch=256, cond_dim=8, blur_sigma=0.0)
    a = train_scene(encoder, small[:8], small[8:], settings, progress=False)
    b = train_scene(encoder, small[:8], small[8:], settings, progress=False)
    assert a.history == b.history
    assert a.model.calibration == b.model.calibration


def test_training_needs_frames(encoder: Encoder, clip_frames: list[np.ndarray]) -> None:
    small = resize(clip_frames[:3], 32)
    with pytest.raises(ValueError, match="no training frames"):
        train_scene(encoder, [], small, tiny_settings(input_size=32), progress=False)
    with pytest.raises(ValueError, match="at least 2 held-out"):
        train_scene(encoder, small[:2], small[2:], tiny_settings(input_size=32), progress=False)


def test_learning_rate_schedule() -> None:
    s = TrainSettings(lr=1e-3, lr_decay_floor=0.01)
    total, warmup = 100, 10
    assert lr_at(0, total, warmup, s) == pytest.approx(1e-4)
    assert lr_at(9, total, warmup, s) == pytest.approx(1e-3)
    assert lr_at(10, total, warmup, s) == pytest.approx(1e-3)
    assert lr_at(100, total, warmup, s) == pytest.approx(1e-5)
    lrs = [lr_at(i, total, warmup, s) for i in range(warmup, total + 1)]
    assert all(b <= a for a, b in zip(lrs, lrs[1:], strict=False))
    assert lr_at(0, total, 0, s) == pytest.approx(1e-3)  # no warm-up


def test_settings_are_strict() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        TrainSettings(epoch=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        TrainSettings(reduction="mean")  # type: ignore[arg-type]

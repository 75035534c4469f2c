"""SANFlow's training settings for its cheaper statistics network and its margin reach the
trained head (tiny trainings)."""

from __future__ import annotations

import math

import numpy as np

from detector.checkpoint import load_checkpoint, save_checkpoint
from detector.encoders import Encoder
from tests.conftest import resize
from training.settings import TrainSettings
from training.train import train_scene


def _settings(**overrides) -> TrainSettings:
    base = dict(model="sanflow", input_size=32, epochs=1, fiber_batch=256, cond_dim=8, warmup_epochs=1,
                lr=1e-3, blur_sigma=1.0, sanflow_stats_width=8)
    return TrainSettings(**{**base, **overrides})


def test_quarter_statistics_input_trains_and_is_stored(encoder: Encoder, clip_frames: list[np.ndarray],
                                                       tmp_path) -> None:
    small = resize(clip_frames[:12], 32)
    settings = _settings(sanflow_stats_input="quarter")
    result = train_scene(encoder, small[:8], small[8:], settings, progress=False)
    (record,) = result.history
    assert math.isfinite(record["loss"]) and record["anomalous_fraction"] > 0
    assert result.model.head.stats_input == "quarter"
    loaded, meta = load_checkpoint(save_checkpoint(result.model, tmp_path / "q"))
    assert meta["head"]["stats_input"] == "quarter" and loaded.head.stats_input == "quarter"


def test_margin_changes_what_the_anomalies_train(encoder: Encoder, clip_frames: list[np.ndarray]) -> None:
    small = resize(clip_frames[:12], 32)
    one = train_scene(encoder, small[:8], small[8:], _settings(), progress=False)
    again = train_scene(encoder, small[:8], small[8:], _settings(sanflow_margin=1.0), progress=False)
    two = train_scene(encoder, small[:8], small[8:], _settings(sanflow_margin=2.0), progress=False)
    assert one.history == again.history  # 1.0 is the default
    assert one.history[0]["anomalous_fraction"] == two.history[0]["anomalous_fraction"] > 0
    assert two.history[0]["bce"] != one.history[0]["bce"]

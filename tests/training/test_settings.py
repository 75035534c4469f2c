"""Training settings: one strict style for every settings model, validated copies, and the
score settings a trained model gets derived from them."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from detector.anomaly_map import frame_score
from detector.model import ScoreSettings
from training.augment import AugmentSettings
from training.settings import TrainSettings
from training.train import augment_settings, score_settings, settings_summary


def test_settings_are_strict() -> None:
    with pytest.raises(ValidationError):
        TrainSettings(epoch=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        TrainSettings(reduction="mean")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="blur"):
        ScoreSettings(blur=2.0)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ScoreSettings(reduction="mean")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="jiter"):
        AugmentSettings(jiter=0.2)  # type: ignore[call-arg]


def test_augment_settings_are_frozen() -> None:
    settings = AugmentSettings(border=8.0)
    with pytest.raises(ValidationError):
        settings.border = 2.0  # type: ignore[misc]
    assert settings == AugmentSettings(jitter=0.1, flip_prob=0.5, border=8.0)


def test_with_changes_is_a_validated_copy() -> None:
    base = TrainSettings(epochs=3)
    changed = base.with_changes(epochs=5, model="sanflow")
    assert (changed.epochs, changed.model) == (5, "sanflow")
    assert (base.epochs, base.model) == (3, "cflow")
    assert changed.with_changes() == changed and changed.with_changes() is not changed
    with pytest.raises(ValidationError, match="epochs"):
        base.with_changes(epochs=0)
    with pytest.raises(ValidationError, match="epoch"):
        base.with_changes(epoch=2)


def test_settings_summary_has_every_field() -> None:
    s = TrainSettings(seed=3, threads=2)
    summary = settings_summary(s)
    assert list(summary) == list(TrainSettings.model_fields)
    assert summary["seed"] == 3 and summary["threads"] == 2 and summary["max_frames_per_video"] is None
    assert TrainSettings(**summary) == s


def test_score_settings_come_from_the_training_settings() -> None:
    s = TrainSettings(reduction="topk", topk=0.02, blur_sigma=3.0)
    assert score_settings(s) == ScoreSettings(reduction="topk", topk=0.02, blur_sigma=3.0)
    # An untrained model's defaults are the training defaults: one answer to "how is a frame scored".
    assert score_settings(TrainSettings()) == ScoreSettings()
    assert augment_settings(TrainSettings()) == AugmentSettings()
    assert augment_settings(TrainSettings(sanflow_jitter=0.3, sanflow_border=2.0)) == AugmentSettings(
        jitter=0.3, flip_prob=0.5, border=2.0)


def test_frame_score_has_no_defaults_of_its_own() -> None:
    maps = torch.arange(100.0).view(1, 10, 10)
    with pytest.raises(TypeError):
        frame_score(maps)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="topk"):
        frame_score(maps, "topk")
    settings = ScoreSettings(reduction="topk", topk=0.05)
    assert frame_score(maps, settings.reduction, settings.topk).item() == pytest.approx(97.0)

"""Training settings: one strict style for every settings model, validated copies, and the
score settings a trained model gets derived from them."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from detector.anomaly_map import frame_score
from detector.model import ScoreSettings, build_head
from detector.sanflow import STATS_INPUTS
from training.augment import AugmentSettings
from training.settings import PRESETS, StatsInput, TrainSettings
from training.train import augment_settings, head_config, score_settings, settings_summary
from vigil.config import ConfigError, load_config, parse_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# SANFlow's paper settings (Kim et al., NeurIPS 2023; window p from its official code).
PAPER = {
    "model": "sanflow", "epochs": 80, "lr": 5e-4, "cond_dim": 512, "sanflow_bce_weight": 1.0,
    "sanflow_kl_weight": 0.2, "sanflow_prior_mode": 0.1, "sanflow_prior_window": 11,
    "sanflow_margin": 1.0, "sanflow_stats_width": 64, "sanflow_stats_input": "full",
    "sanflow_fixed_variance": False, "sanflow_augment": True,
}
# The ordinary defaults of the same fields (CFLOW-AD's reference settings and the CPU budget).
DEFAULTS = {
    "model": "cflow", "epochs": 20, "lr": 2e-4, "cond_dim": 128, "sanflow_bce_weight": 1.0,
    "sanflow_kl_weight": 0.2, "sanflow_prior_mode": 0.1, "sanflow_prior_window": 11,
    "sanflow_margin": 1.0, "sanflow_stats_width": 64, "sanflow_stats_input": "full",
    "sanflow_fixed_variance": False, "sanflow_augment": True,
}


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
    s = TrainSettings(reduction="topk", topk=0.02, blur_sigma=3.0, score_window=5)
    assert score_settings(s) == ScoreSettings(reduction="topk", topk=0.02, blur_sigma=3.0, window=5)
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


def _values(settings: TrainSettings, keys) -> dict:
    return {k: getattr(settings, k) for k in keys}


def test_sanflow_paper_preset_gives_the_paper_values_and_nothing_else() -> None:
    paper = TrainSettings(preset="sanflow-paper")
    assert _values(paper, PAPER) == PAPER
    assert paper.preset == "sanflow-paper"
    rest = [k for k in TrainSettings.model_fields if k not in PAPER and k != "preset"]
    assert _values(paper, rest) == _values(TrainSettings(), rest)
    assert set(PRESETS) == {"sanflow-paper"} and set(PRESETS["sanflow-paper"]) == set(PAPER)


def test_ordinary_defaults_are_unchanged() -> None:
    defaults = TrainSettings()
    assert defaults.preset is None
    assert _values(defaults, DEFAULTS) == DEFAULTS


def test_keys_beside_a_preset_win_and_copies_keep_it() -> None:
    quick = TrainSettings(preset="sanflow-paper", epochs=4, sanflow_stats_input="quarter")
    assert (quick.epochs, quick.sanflow_stats_input, quick.lr, quick.cond_dim) == (4, "quarter", 5e-4, 512)
    copy = quick.with_changes(seed=3)
    assert (copy.epochs, copy.lr, copy.seed, copy.preset) == (4, 5e-4, 3, "sanflow-paper")
    assert TrainSettings(**settings_summary(quick)) == quick  # what a checkpoint's meta holds
    with pytest.raises(ValueError, match="cannot change the training preset"):
        TrainSettings().with_changes(preset="sanflow-paper")


def test_unknown_preset_is_an_error_naming_it() -> None:
    with pytest.raises(ValidationError, match="unknown training preset 'sanflow-papr'; known: sanflow-paper"):
        TrainSettings(preset="sanflow-papr")
    with pytest.raises(ConfigError, match="cfg: training.preset: .*unknown training preset 'paper'"):
        parse_config({"training": {"preset": "paper"}}, "cfg")
    # A bad value beside a preset is still named.
    with pytest.raises(ConfigError, match="training.sanflow_stats_input"):
        parse_config({"training": {"preset": "sanflow-paper", "sanflow_stats_input": "tiny"}})


def test_shipped_paper_config_is_the_preset() -> None:
    cfg = load_config(CONFIGS / "sanflow-paper.yaml")
    assert cfg.training == TrainSettings(preset="sanflow-paper")
    assert _values(cfg.training, PAPER) == PAPER
    assert load_config(CONFIGS / "default.yaml").training.preset is None


def test_stats_input_settings_reach_the_head() -> None:
    assert set(typing.get_args(StatsInput)) == set(STATS_INPUTS)
    for name in STATS_INPUTS:
        config = head_config(TrainSettings(model="sanflow", sanflow_stats_input=name), [8, 16])
        assert config["stats_input"] == name
        assert build_head("sanflow", config).stats_input == name
    assert "stats_input" not in head_config(TrainSettings(), [8, 16])  # CFLOW-AD has no statistics network
    for bad in (dict(sanflow_stats_input="sixteenth"), dict(sanflow_margin=0.0), dict(sanflow_margin=-1.0)):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            TrainSettings(**bad)

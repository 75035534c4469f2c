"""Training a scene head: likelihood goes up, calibration on held-out frames, CFLOW and
SANFlow on one schedule (the schedule itself: test_schedule.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detector.encoders import Encoder
from tests.conftest import TINY_SIZE, resize, tiny_settings
from training.schedule import lr_at
from training.train import TrainResult, TrainSettings, train_scene


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


def test_cflow_and_sanflow_follow_one_schedule(encoder: Encoder, clip_frames: list[np.ndarray]) -> None:
    small = resize(clip_frames[:12], 32)
    same = dict(input_size=32, epochs=2, warmup_epochs=1, fiber_batch=256, cond_dim=8, blur_sigma=0.0,
                lr=1e-3)
    cflow = train_scene(encoder, small[:8], small[8:], tiny_settings(**same), progress=False)
    sanflow = train_scene(encoder, small[:8], small[8:], _sanflow_settings(**same, sanflow_augment=False),
                          progress=False)
    # One image batch of 8 frames, grids 4x4, 2x2, 1x1 at 32 px: one fiber batch per layer.
    per_epoch = sum(math.ceil(8 * cells / 256) for cells in (16, 4, 1))
    lrs = [lr_at(epoch * per_epoch - 1, 2 * per_epoch, per_epoch, tiny_settings(**same)) for epoch in (1, 2)]
    assert [h["lr"] for h in cflow.history] == [h["lr"] for h in sanflow.history] == lrs
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] < lrs[0]


def test_training_needs_frames(encoder: Encoder, clip_frames: list[np.ndarray]) -> None:
    small = resize(clip_frames[:3], 32)
    with pytest.raises(ValueError, match="no training frames"):
        train_scene(encoder, [], small, tiny_settings(input_size=32), progress=False)
    with pytest.raises(ValueError, match="at least 2 held-out"):
        train_scene(encoder, small[:2], small[2:], tiny_settings(input_size=32), progress=False)


# --------------------------------------------------------------------------- SANFlow


def _sanflow_settings(**overrides) -> TrainSettings:
    base = dict(model="sanflow", input_size=64, epochs=3, fiber_batch=512, cond_dim=16, warmup_epochs=1,
                lr=1e-3, blur_sigma=1.0, sanflow_stats_width=8)
    base.update(overrides)
    return tiny_settings(**base)


def test_sanflow_short_training_lowers_the_loss(encoder: Encoder, clip_frames: list[np.ndarray]) -> None:
    from detector.sanflow import SANFlowHead

    small = resize(clip_frames, 64)
    result = train_scene(encoder, small[:16], small[16:20], _sanflow_settings(), progress=False)
    loss = [h["loss"] for h in result.history]
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    keys = ("loss", "nll_per_dim", "bce", "kl_per_dim")
    assert all(math.isfinite(h[k]) for h in result.history for k in keys)
    assert all(b < a for a, b in zip(loss, loss[1:], strict=False))
    assert result.history[-1]["nll_per_dim"] < result.history[0]["nll_per_dim"]
    assert all(0 < h["anomalous_fraction"] < 0.5 for h in result.history)  # synthetic anomalies were seen
    model = result.model
    assert model.kind == "sanflow" and isinstance(model.head, SANFlowHead) and model.needs_images
    assert model.calibration is not None and len(model.calibration.normal_scores) == 4
    # The statistics network was trained: variances are no longer the prior's everywhere.
    assert float(model.head.stats.last.weight.detach().abs().sum()) > 0


def test_sanflow_training_is_reproducible(encoder: Encoder, clip_frames: list[np.ndarray]) -> None:
    small = resize(clip_frames[:12], 32)
    settings = _sanflow_settings(input_size=32, epochs=1, fiber_batch=256, cond_dim=8)
    a = train_scene(encoder, small[:8], small[8:], settings, progress=False)
    b = train_scene(encoder, small[:8], small[8:], settings, progress=False)
    assert a.history == b.history
    assert a.model.calibration == b.model.calibration


@pytest.mark.parametrize(
    "ablation",
    [dict(sanflow_bce_weight=0.0), dict(sanflow_kl_weight=0.0), dict(sanflow_augment=False),
     dict(sanflow_fixed_variance=True)],
    ids=["no-bce", "no-kl", "no-augment", "fixed-variance"],
)
def test_sanflow_ablations_train(encoder: Encoder, clip_frames: list[np.ndarray], ablation: dict) -> None:
    small = resize(clip_frames[:12], 32)
    settings = _sanflow_settings(input_size=32, epochs=1, fiber_batch=256, cond_dim=8, **ablation)
    result = train_scene(encoder, small[:8], small[8:], settings, progress=False)
    (record,) = result.history
    assert math.isfinite(record["loss"]) and result.model.calibration is not None
    if "sanflow_augment" in ablation:
        assert record["anomalous_fraction"] == 0
    if "sanflow_fixed_variance" in ablation:
        assert record["kl_per_dim"] == 0 and result.model.head.stats is None
        assert not result.model.needs_images
    else:
        assert result.model.needs_images


def test_sanflow_batches_with_and_without_augmentation(
    encoder: Encoder, clip_frames: list[np.ndarray]
) -> None:
    import torch

    from training.augment import SyntheticAnomalies
    from training.batches import SANFlowBatches

    frames = resize(clip_frames[:10], 64)
    plain = SANFlowBatches(encoder, frames, 64, 4, cache_mb=64)
    assert plain.features is not None and plain.features.cache is not None  # cached as for CFLOW
    augmented = SANFlowBatches(encoder, frames, 64, 4, cache_mb=64,
                               augment=SyntheticAnomalies(frames, seed=0))
    for batches in (plain, augmented):
        seen = 0
        for images, features, masks in batches.epoch(torch.Generator().manual_seed(0)):
            assert images.shape[1:] == (3, 64, 64) and masks.shape == (images.shape[0], 64, 64)
            assert masks.dtype == torch.bool
            assert [tuple(f.shape[2:]) for f in features] == [(8, 8), (4, 4), (2, 2)]
            if batches is augmented and images.shape[0] == 4:  # 3 of 4 frames get an anomaly
                assert masks.flatten(1).any(1).sum() == 3
            if batches is plain:
                assert not masks.any()
            seen += images.shape[0]
        assert seen == 10 and len(batches) == 3


def test_sanflow_settings_are_validated() -> None:
    from pydantic import ValidationError

    s = TrainSettings()
    assert s.model == "cflow"
    assert (s.sanflow_bce_weight, s.sanflow_kl_weight, s.sanflow_prior_mode) == (1.0, 0.2, 0.1)
    assert s.sanflow_augment and not s.sanflow_fixed_variance
    for bad in (dict(model="nope"), dict(sanflow_bce_weight=-1.0), dict(sanflow_kl_weight=-0.1),
                dict(sanflow_prior_mode=0.0), dict(sanflow_prior_window=1), dict(sanflow_jitter=0.9),
                dict(sanflow_flip_prob=1.5), dict(sanflow_stats_width=0), dict(sanflow_border=-1.0)):
        with pytest.raises(ValidationError):
            TrainSettings(**bad)

"""Cross-fitting: disjoint held-out folds that cover the footage, and the pooled threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detector.calibration import Calibration
from detector.encoders import Encoder
from detector.model import SceneModel
from tests.conftest import CLIP, resize, tiny_settings
from training.crossfit import cross_fit, cross_fit_motion
from training.data import SceneFootage, load_scene_frames, read_footage
from training.train import train_footage, train_scene


def _footage(videos: int, frames: int) -> SceneFootage:
    """Videos whose frames carry (video, index) in their first two pixels, to trace them."""
    vids = [[np.array([[[v, i, 0]]], np.uint8) for i in range(frames)] for v in range(videos)]
    return SceneFootage([Path(f"v{v}.avi") for v in range(videos)], vids)


def _ids(frames: list[np.ndarray]) -> set[tuple[int, int]]:
    return {(int(f[0, 0, 0]), int(f[0, 0, 1])) for f in frames}


@pytest.mark.parametrize(("videos", "fraction"), [(8, 0.25), (5, 0.25), (1, 0.25), (2, 0.3), (3, 0.5)])
def test_folds_hold_out_disjoint_parts_that_cover_the_footage(videos: int, fraction: float) -> None:
    foot = _footage(videos, 12)
    every = _ids([f for v in foot.videos for f in v])
    held: list[set[tuple[int, int]]] = []
    for fold in range(foot.folds(fraction)):
        split = foot.split(fraction, fold)
        train, out = _ids(split.train), _ids(split.holdout)
        assert not train & out and train | out == every  # each fold: every frame once
        assert sum(split.train_runs) == len(split.train) and sum(split.holdout_runs) == len(split.holdout)
        held.append(out)
    assert set().union(*held) == every  # together the folds hold out all of it ...
    assert sum(len(h) for h in held) == len(every)  # ... each frame in exactly one fold


def test_fold_zero_is_the_default_split() -> None:
    default = load_scene_frames([CLIP], 32, holdout_fraction=0.25, max_frames_per_video=12)
    fold0 = read_footage([CLIP], 32, max_frames_per_video=12).split(0.25, 0)
    assert default.summary == fold0.summary
    assert all((a == b).all() for a, b in zip(default.holdout, fold0.holdout, strict=True))


def test_a_fold_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="fold must be in 0..3"):
        _footage(8, 4).split(0.25, 4)


def _calibrated(scores: np.ndarray) -> SceneModel:
    model = SceneModel.__new__(SceneModel)
    model.motion = None
    model.calibration = Calibration.fit(scores, 0.001)
    return model


def test_cross_fit_pools_every_folds_scores() -> None:
    rng = np.random.default_rng(0)
    model = _calibrated(rng.normal(size=100))
    folds = [_calibrated(rng.normal(size=100) + shift) for shift in (0.5, 1.0, 1.5)]
    result = cross_fit(model, folds)
    assert result.folds == 4 and result.frames == 400 and len(model.calibration.normal_scores) == 400
    expected = Calibration.fit(np.concatenate([result.before.normal_scores,
                                               *[f.calibration.normal_scores for f in folds]]), 0.001)
    assert model.calibration == expected  # the same fit as on all the scores at once
    assert model.calibration.threshold > result.before.threshold  # the other folds run higher here
    assert result.summary()["threshold_before"] == result.before.threshold


def test_cross_fit_refuses_an_uncalibrated_fold() -> None:
    model = _calibrated(np.arange(10.0))
    bare = SceneModel.__new__(SceneModel)
    bare.calibration = None
    with pytest.raises(ValueError, match="fold model 1 is not calibrated"):
        cross_fit(model, [bare])


def _four_videos(clip_frames: list[np.ndarray], per_video: int, size: int) -> SceneFootage:
    """Four videos of ``per_video`` consecutive clip frames each, at ``size`` x ``size``."""
    small = resize(clip_frames[:4 * per_video], size)
    return SceneFootage([Path(f"v{i}.avi") for i in range(4)],
                        [small[i * per_video:(i + 1) * per_video] for i in range(4)])


def test_train_footage_cross_fitted_trains_one_model_per_fold_and_pools_them(
        encoder: Encoder, clip_frames: list[np.ndarray]) -> None:
    footage = _four_videos(clip_frames, 6, 32)
    settings = tiny_settings(input_size=32, fiber_batch=256, cond_dim=8, blur_sigma=0.0,
                             holdout_fraction=0.25, cross_fit=True)
    seen: list[tuple[int, int]] = []
    result, summary = train_footage(encoder, footage, settings, progress=False,
                                    on_fold=lambda f, k: seen.append((f, k)))
    assert seen == [(1, 4), (2, 4), (3, 4)]
    assert result.cross_fit is not None and result.cross_fit.folds == 4
    assert len(result.model.calibration.normal_scores) == 24  # every frame, each held out once
    # The deployed model is exactly the fold-0 model: same head, same map statistics.
    plain = footage.split(0.25, 0)
    alone = train_scene(encoder, plain.train, plain.holdout, settings, progress=False)
    assert alone.history == result.history
    assert alone.model.stats.layer_mean == result.model.stats.layer_mean
    assert alone.model.calibration == result.cross_fit.before
    assert summary["cross_fit"]["folds"] == 4 and summary["holdout"] == plain.summary["holdout"]
    without, _ = train_footage(encoder, footage, settings.with_changes(cross_fit=False), progress=False)
    assert without.cross_fit is None and without.model.calibration == alone.model.calibration


def test_cross_fit_max_rule_holds_for_the_busiest_fold() -> None:
    rng = np.random.default_rng(1)
    quiet, busy = rng.normal(size=100), rng.normal(size=100) + 3.0
    model = _calibrated(quiet)
    result = cross_fit(model, [_calibrated(busy)], rule="max")
    assert result.rule == "max" and result.summary()["rule"] == "max"
    assert model.calibration.threshold == Calibration.fit(busy, 0.001).threshold
    assert model.calibration.center == float(np.median(np.concatenate([quiet, busy])))
    assert model.calibration.threshold > result.before.threshold  # the quiet fold's own
    with pytest.raises(ValueError, match="unknown cross-fit rule 'mean'"):
        cross_fit(_calibrated(quiet), [_calibrated(busy)], rule="mean")  # type: ignore[arg-type]


def test_the_interval_is_that_of_the_rule_that_made_the_threshold() -> None:
    """The 90 % interval ``vigil train`` reports for a cross-fitted threshold resamples each
    fold by blocks and re-applies the rule: under ``max`` it brackets the busiest fold's
    threshold (on campus footage the interval of the pooled scores, the old report, lay
    below it)."""
    from training.crossfit import with_order

    rng = np.random.default_rng(3)
    quiet = [rng.normal(size=300) for _ in range(3)]
    busy = rng.normal(size=300) + 2.0
    model = _calibrated(quiet[0])
    folds = [_calibrated(q) for q in quiet[1:]] + [_calibrated(busy)]
    result = cross_fit(model, folds, rule="max")
    ordered = with_order(result, [quiet[0], *quiet[1:], busy])
    lo, hi = ordered.interval()
    assert lo < model.calibration.threshold < hi
    assert ordered.interval() == (lo, hi)  # reproducible
    pooled = with_order(cross_fit(_calibrated(quiet[0]), [_calibrated(q) for q in (*quiet[1:], busy)]),
                        [*quiet, busy])
    plo, phi = pooled.interval()
    assert plo < pooled.after.threshold < phi
    assert (plo, phi) != (lo, hi)


def _with_motion(scores: np.ndarray, joint: np.ndarray) -> SceneModel:
    from types import SimpleNamespace

    model = _calibrated(scores)
    model.motion = SimpleNamespace(calibration=Calibration.fit(joint, 0.001))  # type: ignore[assignment]
    return model


def test_cross_fit_motion_refits_the_joint_threshold_by_the_rule() -> None:
    rng = np.random.default_rng(2)
    quiet, busy = rng.normal(size=100), rng.normal(size=100) + 2.0
    model = _with_motion(quiet, quiet)
    appearance = model.calibration
    result = cross_fit_motion(model, [_with_motion(quiet, busy)], rule="max")
    assert model.calibration == appearance  # only the joint calibration moves
    assert result.before.threshold == Calibration.fit(quiet, 0.001).threshold
    assert model.motion.calibration.threshold == Calibration.fit(busy, 0.001).threshold
    assert len(model.motion.calibration.normal_scores) == 200
    with pytest.raises(ValueError, match="fold model 1 has no calibrated motion channel"):
        cross_fit_motion(_with_motion(quiet, quiet), [_calibrated(busy)])


def test_train_footage_cross_fits_the_motion_channel_with_fold_models_that_have_one(
        encoder: Encoder, clip_frames: list[np.ndarray]) -> None:
    footage = _four_videos(clip_frames, 8, 64)
    settings = tiny_settings(input_size=64, fiber_batch=256, cond_dim=8, blur_sigma=0.0,
                             holdout_fraction=0.25, cross_fit=True, cross_fit_rule="max",
                             motion={"enabled": True, "coupling_blocks": 2, "cond_dim": 8,
                                     "features": {"size": 32, "cell": 8}})
    result, summary = train_footage(encoder, footage, settings, progress=False)
    assert result.cross_fit is not None and result.motion_cross_fit is not None
    joint = result.model.motion.calibration
    assert result.motion_cross_fit.after == joint and result.motion_cross_fit.folds == 4
    # each fold's 8 held-out frames are one run: 7 have a previous frame
    assert len(joint.normal_scores) == 4 * 7
    assert summary["motion_cross_fit"]["folds"] == 4
    without, _ = train_footage(encoder, footage, settings.with_changes(cross_fit=False), progress=False)
    assert without.motion_cross_fit is None and len(without.model.motion.calibration.normal_scores) == 7
    assert joint.threshold >= result.motion_cross_fit.before.threshold - 1e-9  # max: at least fold 0's

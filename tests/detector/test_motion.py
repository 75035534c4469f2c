"""The motion channel: flow features, per-camera streaming state, gaps, and a scene model
whose score depends only on the frame, its camera's previous frame and the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from detector.checkpoint import load_checkpoint, load_scene, save_checkpoint
from detector.motion import MotionSettings, MotionTracker, flow_features, motion_frame
from detector.scorer import FrameScorer
from scenes.registry import SceneRegistry
from tests.conftest import TINY_SIZE, resize, tiny_settings
from tests.detector.streaming import CAMERAS, sent_images, stream_two_cameras
from training.train import TrainResult, train_scene

SETTINGS = MotionSettings(size=64, cell=8, preset="ultrafast", channels="flow")


def _texture(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size // 8, size // 8), dtype=np.uint8)
    import cv2

    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def test_flow_features_measure_displacement_per_source_frame() -> None:
    a = _texture()
    shifted = np.roll(a, 3, axis=1)  # 3 px to the right
    feats = flow_features(a, shifted, 1, SETTINGS)
    inner = feats[:, 2:-2, 2:-2]
    assert feats.shape == (4, 8, 8) and feats.dtype == np.float32
    assert np.median(inner[0]) == pytest.approx(3.0, abs=0.6)  # u
    assert abs(np.median(inner[1])) < 0.5  # v
    assert np.median(inner[2]) == pytest.approx(np.log1p(3.0), abs=0.2)
    # The same displacement over 3 source frames is a third of the speed.
    slow = flow_features(a, shifted, 3, SETTINGS)
    assert np.median(slow[0, 2:-2, 2:-2]) == pytest.approx(1.0, abs=0.25)
    still = flow_features(a, a, 1, SETTINGS)
    assert np.abs(still[:2]).max() < 0.05
    with pytest.raises(ValueError, match="at least one source frame apart"):
        flow_features(a, a, 0, SETTINGS)


def test_tracker_keeps_each_camera_apart_and_marks_gaps() -> None:
    frames = [np.dstack([np.roll(_texture(), 2 * i, axis=1)] * 3) for i in range(4)]
    alone = MotionTracker(SETTINGS)
    ref = [alone.features("a", i, f) for i, f in enumerate(frames)]
    mixed = MotionTracker(SETTINGS)
    got_a, got_b = [], []
    for i, f in enumerate(frames):  # interleaved with another camera, as in a shared batch
        got_a.append(mixed.features("a", i, f))
        got_b.append(mixed.features("b", 100 + i, frames[-1 - i]))
    assert ref[0] is None and got_a[0] is None and got_b[0] is None
    for r, g in zip(ref[1:], got_a[1:], strict=True):
        assert np.array_equal(r, g)
    gaps = MotionTracker(SETTINGS)
    f = frames[0]
    assert gaps.features("c", 10, f) is None  # first frame
    assert gaps.features("c", 11, f) is not None
    assert gaps.features("c", 11 + SETTINGS.max_step + 1, f) is None  # a seq jump
    assert gaps.features("c", 5, f) is None  # backwards (a redelivery or a restarted source)
    assert gaps.features("c", 6, f, ts_ms=1_000) is not None
    assert gaps.features("c", 7, f, ts_ms=1_000 + SETTINGS.max_gap_ms + 1) is None  # a reconnect
    gaps.forget("c")
    assert gaps.features("c", 8, f) is None


def test_tracker_is_bounded() -> None:
    tracker = MotionTracker(SETTINGS, max_cameras=2)
    f = np.zeros((64, 64, 3), np.uint8)
    for cam in ("a", "b", "c"):
        tracker.features(cam, 0, f)
    assert tracker.features("a", 1, f) is None  # "a" was dropped: its next frame is a gap
    assert tracker.features("c", 1, f) is not None


def test_span_reaches_back_within_the_run_and_speed_keeps_two_channels() -> None:
    # Frames move 2 px per source frame; with span 2 the flow spans two frames (4 px) but is
    # divided by the seq step, so the speed stays 2 px per source frame.
    frames = [np.dstack([np.roll(_texture(), 2 * i, axis=1)] * 3) for i in range(5)]
    spanned = MotionTracker(SETTINGS.model_copy(update={"span": 2}))
    single = MotionTracker(SETTINGS)
    feats = [spanned.features("a", i, f) for i, f in enumerate(frames)]
    ones = [single.features("a", i, f) for i, f in enumerate(frames)]
    assert feats[0] is None
    assert np.array_equal(feats[1], ones[1])  # the run's start: only one frame back yet
    grey = [motion_frame(f, SETTINGS) for f in frames]
    for i in (2, 3, 4):
        assert np.array_equal(feats[i], flow_features(grey[i - 2], grey[i], 2, SETTINGS))
    assert np.median(feats[3][0, 2:-2, 2:-2]) == pytest.approx(2.0, abs=0.5)
    # A gap starts a new run: the span counts from the first frame after it.
    assert spanned.features("a", 4 + SETTINGS.max_step + 1, frames[0]) is None
    after = spanned.features("a", 4 + SETTINGS.max_step + 2, frames[1])
    assert np.array_equal(after, flow_features(grey[0], grey[1], 1, SETTINGS))
    speed = SETTINGS.model_copy(update={"channels": "speed"})
    assert speed.n_channels == 2 and SETTINGS.n_channels == 4 and MotionSettings().n_channels == 2
    only = flow_features(grey[0], grey[1], 1, speed)
    assert only.shape == (2, 8, 8)
    assert np.array_equal(only, flow_features(grey[0], grey[1], 1, SETTINGS)[2:])


def test_motion_frame_is_small_grey() -> None:
    frame = np.zeros((192, 256, 3), np.uint8)
    assert motion_frame(frame, SETTINGS).shape == (64, 64)


@pytest.fixture(scope="module")
def motion_trained(encoder, clip_frames) -> TrainResult:
    small = resize(clip_frames, TINY_SIZE)
    settings = tiny_settings(motion={"enabled": True, "features": {"size": 64, "cell": 8},
                                     "coupling_blocks": 2, "cond_dim": 16})
    return train_scene(encoder, small[:24], small[24:36], settings, progress=False,
                       train_runs=[12, 12], holdout_runs=[12])


def test_training_gives_a_calibrated_motion_channel(motion_trained: TrainResult) -> None:
    motion = motion_trained.model.motion
    assert motion is not None and motion.stats is not None and motion.calibration is not None
    assert motion_trained.motion_history and motion_trained.motion_history[-1]["epoch"] == 1
    # 11 held-out pairs calibrate the joint score (the run's first frame has no predecessor).
    assert len(motion.calibration.normal_scores) == 11


def test_checkpoint_round_trip_keeps_motion_scores(motion_trained, encoder, clip_frames, tmp_path) -> None:
    folder = save_checkpoint(motion_trained.model, tmp_path / "m")
    loaded, meta = load_checkpoint(folder)
    assert meta["motion"]["settings"]["size"] == 64 and loaded.motion is not None
    frames = clip_frames[:6]
    a = FrameScorer(encoder, motion_trained.model).score_batch(frames, range(6))
    b = FrameScorer(encoder, loaded).score_batch(frames, range(6))
    for x, y in zip(a, b, strict=True):
        assert x.score == y.score and np.array_equal(x.anomaly_map, y.anomaly_map)


def test_a_speed_only_channel_trains_saves_and_scores(encoder, clip_frames, tmp_path) -> None:
    small = resize(clip_frames, TINY_SIZE)
    settings = tiny_settings(motion={"enabled": True, "coupling_blocks": 2, "cond_dim": 16,
                                     "features": {"size": 64, "cell": 8, "channels": "speed"}})
    result = train_scene(encoder, small[:12], small[12:20], settings, progress=False,
                         train_runs=[12], holdout_runs=[8])
    loaded, meta = load_checkpoint(save_checkpoint(result.model, tmp_path / "s"))
    assert meta["motion"]["settings"]["channels"] == "speed"
    assert loaded.motion is not None and loaded.motion.settings.n_channels == 2
    a = FrameScorer(encoder, result.model).score_batch(clip_frames[:4], range(4))
    b = FrameScorer(encoder, loaded).score_batch(clip_frames[:4], range(4))
    assert [x.score for x in a] == [y.score for y in b]


def test_a_gap_frame_is_scored_on_appearance_with_its_own_calibration(motion_trained, encoder,
                                                                      clip_frames) -> None:
    model = motion_trained.model
    stream = FrameScorer(encoder, model).score_batch(clip_frames[:3], [0, 1, 2])
    alone = FrameScorer(encoder, model).score_batch(clip_frames[:3])  # no seqs: appearance only
    assert stream[0].score == alone[0].score  # the first frame has no motion evidence
    assert stream[1].score != alone[1].score
    # Appearance-only scoring is exactly the model without its motion channel.
    from dataclasses import replace

    plain = FrameScorer(encoder, replace(model, motion=None)).score_batch(clip_frames[:3], [0, 1, 2])
    assert [r.score for r in plain] == [r.score for r in alone]


@pytest.mark.parametrize("flow", [{}, {"flow_overlap": True, "flow_threads": 2},
                                  {"flow_overlap": False, "flow_threads": 2}],
                         ids=["default", "overlap-2-threads", "before-2-threads"])
def test_worker_scores_equal_offline_per_camera_across_batches(motion_trained, encoder, clip_frames,
                                                               tmp_path, flow) -> None:
    registry = SceneRegistry(tmp_path / "scenes")
    scores = stream_two_cameras(motion_trained.model, encoder, clip_frames, registry, range(6), **flow)
    model, _ = load_scene(registry, "walk")
    for cam, offset in CAMERAS:
        images = sent_images(clip_frames, offset, range(6))
        offline = FrameScorer(encoder, model).score_batch(images, range(6))
        assert [scores[(cam, q)] for q in range(6)] == pytest.approx([r.score for r in offline], abs=1e-4)


@pytest.mark.parametrize("channels", ["flow", "speed"])
def test_flow_features_pool_the_flow_as_defined(channels) -> None:
    """The pooling (cell sums, row-first maxima) equals its definition on the raw DIS flow."""
    import cv2

    settings = MotionSettings(size=64, cell=8, preset="ultrafast", channels=channels)
    a, b = _texture(1), np.roll(_texture(1), 2, axis=0)
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST).calc(a, b, None) / 2.0
    g, c = settings.grid, settings.cell
    mag = np.sqrt((flow**2).sum(axis=2)).reshape(g, c, g, c)
    want = np.stack([*np.moveaxis(flow.reshape(g, c, g, c, 2).mean(axis=(1, 3)), 2, 0),
                     np.log1p(mag.mean(axis=(1, 3))), np.log1p(mag.max(axis=(1, 3)))])
    got = flow_features(a, b, 2, settings)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want if channels == "flow" else want[2:], rtol=1e-5, atol=1e-6)


def test_bench_motion_cost_compares_the_flow_variants(motion_trained, clip_frames, tmp_path) -> None:
    import contextlib
    import io

    import cv2

    from detector.checkpoint import save_scene
    from tests.conftest import load_bench_script

    save_scene(SceneRegistry(tmp_path / "scenes"), "walk", motion_trained.model)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(clip_frames[:6]):
        cv2.imwrite(str(frames / f"{i:03d}.jpg"), frame)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        result = load_bench_script("motion_cost").main([
            "--registry", str(tmp_path / "scenes"), "--scene", "walk", "--frames", str(frames),
            "--rounds", "2", "--cameras", "2", "--batch", "4", "--flow", "before:1,overlap:2"])
    assert set(result["ratios"]) == {"motion, flow before the encoder, 1 thread(s)",
                                     "motion, flow overlap the encoder, 2 thread(s)"}
    assert all(r["min"] > 0 for r in result["ratios"].values()) and len(result["rounds"]) == 2
    assert "| appearance only |" in out.getvalue()

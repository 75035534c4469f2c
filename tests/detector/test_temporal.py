"""Score smoothing: the causal mean of a camera's run of calibrated scores, kept per camera
across micro-batches, reset at gaps, equal in the worker, the offline scorer and evaluation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.checkpoint import load_checkpoint, load_scene, save_checkpoint
from detector.model import SceneModel
from detector.scorer import FrameScorer
from detector.temporal import ScoreHistory, causal_mean, follows
from scenes.registry import SceneRegistry
from tests.detector.streaming import CAMERAS, sent_images, stream_two_cameras


def test_causal_mean_uses_no_future_frames() -> None:
    scores = np.array([0.0, 3.0, 0.0, 0.0, 9.0])
    assert causal_mean(scores, 2).tolist() == [0.0, 1.5, 1.5, 0.0, 4.5]
    assert causal_mean(scores, 1).tolist() == scores.tolist()
    with pytest.raises(ValueError, match="at least 1"):
        causal_mean(scores, 0)


@given(st.lists(st.floats(-50, 50), min_size=1, max_size=40), st.integers(1, 8))
def test_history_of_one_run_equals_the_causal_mean(scores: list[float], window: int) -> None:
    h = ScoreHistory(window)
    got = [h.smooth("cam", seq, s) for seq, s in enumerate(scores)]
    assert got == pytest.approx(causal_mean(np.array(scores), window).tolist(), abs=1e-9)


def test_cameras_never_see_each_other_and_gaps_start_a_new_run() -> None:
    h = ScoreHistory(window=3, max_step=2, max_gap_ms=1000)
    assert h.smooth("a", 0, 3.0, ts_ms=0) == 3.0
    assert h.smooth("b", 0, 100.0, ts_ms=0) == 100.0  # another camera, in the same batch
    assert h.smooth("a", 1, 0.0, ts_ms=100) == 1.5
    assert h.smooth("a", 3, 0.0, ts_ms=300) == 1.0  # seq step 2 <= max_step: same run
    assert h.smooth("a", 6, 6.0, ts_ms=600) == 6.0  # seq jump: a new run
    assert h.smooth("a", 7, 0.0, ts_ms=5000) == 0.0  # a reconnect (capture-time gap)
    assert h.smooth("a", 7, 4.0, ts_ms=5000) == 4.0  # a redelivered seq: a new run
    h.forget("a")
    assert h.smooth("a", 8, 2.0) == 2.0
    assert not follows(8, None, 8, None, 3, 2000) and follows(8, None, 11, None, 3, 2000)


def test_a_non_finite_score_is_refused_and_leaves_the_run_as_it_was() -> None:
    h = ScoreHistory(window=2)
    h.smooth("a", 0, 2.0)
    with pytest.raises(ValueError, match="camera 'a' frame 1: non-finite score"):
        h.smooth("a", 1, float("nan"))
    assert h.smooth("a", 1, 4.0) == 3.0


def test_history_is_bounded() -> None:
    h = ScoreHistory(window=4, max_cameras=2)
    for cam in ("a", "b", "c"):
        h.smooth(cam, 0, 8.0)
    assert h.smooth("a", 1, 0.0) == 0.0  # "a" was dropped: its next frame starts a run
    assert h.smooth("c", 1, 0.0) == 4.0


@pytest.fixture(scope="module")
def windowed(scene_model: SceneModel) -> SceneModel:
    return replace(scene_model, settings=scene_model.settings.model_copy(update={"window": 3}))


def test_checkpoint_keeps_the_window_and_the_scorer_smooths_a_stream(windowed, scene_model, encoder,
                                                                     clip_frames, tmp_path) -> None:
    loaded, meta = load_checkpoint(save_checkpoint(windowed, tmp_path / "w"))
    assert meta["score"]["window"] == 3 and loaded.settings.window == 3
    frames = clip_frames[:6]
    per_frame = [r.score for r in FrameScorer(encoder, scene_model).score_batch(frames, range(6))]
    scorer = FrameScorer(encoder, loaded)
    smoothed = [r.score for r in scorer.score_batch(frames[:4], range(4))]
    smoothed += [r.score for r in scorer.score_batch(frames[4:], range(4, 6))]  # state across batches
    assert smoothed == pytest.approx(causal_mean(np.array(per_frame), 3).tolist(), abs=1e-6)
    # The maps stay per frame.
    a = FrameScorer(encoder, scene_model).score_batch(frames, range(6))
    b = FrameScorer(encoder, loaded).score_batch(frames, range(6))
    assert all(np.array_equal(x.anomaly_map, y.anomaly_map) for x, y in zip(a, b, strict=True))


def test_worker_smooths_each_camera_across_shared_batches(windowed, encoder, clip_frames, tmp_path) -> None:
    registry = SceneRegistry(tmp_path / "scenes")
    seqs = [0, 1, 2, 3, 8, 9]  # a seq jump after 3: frame 8 starts a new run
    scores = stream_two_cameras(windowed, encoder, clip_frames, registry, seqs)
    model, _ = load_scene(registry, "walk")
    for cam, offset in CAMERAS:
        per_frame = np.array([r.score for r in FrameScorer(encoder, replace(
            model, settings=model.settings.model_copy(update={"window": 1}))).score_batch(
                sent_images(clip_frames, offset, seqs), seqs)])
        expected = np.concatenate([causal_mean(per_frame[:4], 3), causal_mean(per_frame[4:], 3)])
        assert [scores[(cam, q)] for q in seqs] == pytest.approx(expected.tolist(), abs=1e-4)

"""FrameScorer: per-frame scores independent of the batch; encoder checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from detector.encoders import Encoder
from detector.model import SceneModel, to_input
from detector.scorer import EncoderMismatchError, FrameScorer, check_encoder
from tests.conftest import TINY_SIZE


def test_same_frame_scores_the_same_alone_and_in_a_mixed_batch(
    encoder: Encoder, scene_model: SceneModel, clip_frames: list[np.ndarray]
) -> None:
    scorer = FrameScorer(encoder, scene_model, "campus")
    frame = clip_frames[5]
    (alone,) = scorer.score_batch([frame])
    mixed = scorer.score_batch([clip_frames[30], frame, clip_frames[39], clip_frames[0], frame])
    # Equal up to float rounding, not bit-identical: the flows' matrix products are blocked
    # differently for different numbers of fibers, so maps differ by ~4e-7 (measured on this
    # 2-core CPU with one torch thread; the max-reduced score happened to match exactly).
    # With two threads the encoder's convolutions also differ by batch size (features ~2e-5,
    # scores ~1e-6). The other frames never influence the result beyond that rounding.
    for other in (mixed[1], mixed[4]):
        assert other.score == pytest.approx(alone.score, abs=1e-5)
        assert other.raw == pytest.approx(alone.raw, abs=1e-5)
        np.testing.assert_allclose(other.anomaly_map, alone.anomaly_map, atol=1e-5, rtol=0)
    # Within one batch, two copies of a frame are exactly equal.
    assert mixed[1].score == mixed[4].score
    # And the other frames do get their own scores.
    assert len({round(r.raw, 6) for r in mixed[:4]}) == 4


def test_results_shape_and_calibration(
    encoder: Encoder, scene_model: SceneModel, clip_frames: list[np.ndarray]
) -> None:
    scorer = FrameScorer(encoder, scene_model)
    results = list(scorer.score_stream(clip_frames[:11], batch_size=4))
    assert len(results) == 11
    cal = scene_model.calibration
    assert cal is not None
    for r in results:
        assert r.anomaly_map.shape == (TINY_SIZE, TINY_SIZE)
        assert r.anomaly_map.dtype == np.float32
        assert np.isfinite(r.score) and np.isfinite(r.raw)
        assert r.score == pytest.approx(float(cal.calibrate(r.raw)), abs=1e-9)
        # The frame score is the maximum of the raw map; the calibrated map keeps that order.
        assert r.anomaly_map.max() == pytest.approx(r.score, abs=1e-4)


def test_held_out_frames_reproduce_calibration_scores(
    encoder: Encoder, scene_model: SceneModel, clip_frames: list[np.ndarray]
) -> None:
    # The calibration was fitted on held-out frames 24..31 resized to the input size.
    import cv2

    held = [cv2.resize(f, (TINY_SIZE, TINY_SIZE), interpolation=cv2.INTER_AREA)
            for f in clip_frames[24:32]]
    raw = np.sort([r.raw for r in FrameScorer(encoder, scene_model).score_batch(held)])
    assert scene_model.calibration is not None
    np.testing.assert_allclose(raw, scene_model.calibration.normal_scores, atol=1e-4)


def test_encoder_mismatch(encoder: Encoder, scene_model: SceneModel) -> None:
    other_weights = dataclasses.replace(scene_model, encoder_digest="0123456789abcdef")
    with pytest.raises(EncoderMismatchError, match="0123456789abcdef"):
        FrameScorer(encoder, other_weights, "campus")
    other_encoder = dataclasses.replace(scene_model, encoder="resnet18")
    with pytest.raises(EncoderMismatchError, match="scene lobby"):
        check_encoder(other_encoder, encoder, "lobby")


def test_to_input_converts_bgr_to_rgb() -> None:
    frame = np.zeros((10, 20, 3), dtype=np.uint8)
    frame[..., 0] = 255  # blue in BGR
    x = to_input([frame], 8)
    assert x.shape == (1, 3, 8, 8)
    assert x[0, 2].eq(1.0).all() and x[0, :2].eq(0.0).all()
    with pytest.raises(ValueError, match="frame 0"):
        to_input([np.zeros((4, 4), dtype=np.uint8)], 8)

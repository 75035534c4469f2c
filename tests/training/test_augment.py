"""Synthetic anomalies: inside the frame, masks that match the pasted pixels, balanced and
reproducible batches, a preview a person can look at."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import resize
from training.augment import (
    ANOMALY_KINDS,
    KINDS,
    AugmentSettings,
    SyntheticAnomalies,
    color_jitter,
    draw_shape,
    paste_anomaly,
    preview_grid,
    soft_alpha,
)


@pytest.mark.parametrize("size", [64, 256])
@pytest.mark.parametrize("kind", ANOMALY_KINDS)
def test_pastes_stay_inside_the_frame(kind: str, size: int) -> None:
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    donor = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    settings = AugmentSettings(border=8.0)
    margin = 8.0 * size / 256 / 2 + 0.5
    for _ in range(60):
        out = paste_anomaly(frame, donor, kind, rng, settings)
        assert out.image.shape == frame.shape and out.image.dtype == np.uint8
        assert out.box is not None
        y0, x0, y1, x1 = out.box
        assert 0 <= y0 < y1 <= size and 0 <= x0 < x1 <= size  # the whole shape is in the frame
        assert out.mask.any() and not out.mask[:y0].any() and not out.mask[y1:].any()
        assert not out.mask[:, :x0].any() and not out.mask[:, x1:].any()
        # Blend weights reach at most the soft edge's half-width past the shape.
        ys, xs = np.nonzero(out.alpha)
        assert ys.min() >= y0 - margin and ys.max() < y1 + margin
        assert xs.min() >= x0 - margin and xs.max() < x1 + margin
        # Pixels with zero weight are untouched.
        untouched = out.alpha == 0
        assert np.array_equal(out.image[untouched], frame[untouched])


@pytest.mark.parametrize("kind", ANOMALY_KINDS)
@pytest.mark.parametrize("border", [0.0, 4.0, 12.0])
def test_mask_matches_the_pasted_pixels(kind: str, border: float) -> None:
    rng = np.random.default_rng(4)
    black = np.zeros((256, 256, 3), dtype=np.uint8)
    white = np.full((256, 256, 3), 255, dtype=np.uint8)
    settings = AugmentSettings(jitter=0.0, border=border)
    for _ in range(20):
        out = paste_anomaly(black, white, kind, rng, settings)
        # White pasted on black: a pixel is at least half white exactly where the mask is.
        assert np.array_equal(out.image[..., 0] >= 128, out.mask)
        assert np.array_equal(out.alpha >= 0.5, out.mask)
        assert np.all(out.image[out.alpha == 1.0] == 255)
        if border == 0:
            assert np.array_equal(out.alpha > 0, out.mask)
        else:  # the edge is softened: partial weights on both sides of it
            assert ((out.alpha > 0) & (out.alpha < 1)).any()


def test_shape_sizes_follow_the_paper_scaled_to_the_frame() -> None:
    rng = np.random.default_rng(5)
    for size, scale in ((256, 1.0), (128, 0.5)):
        small = [draw_shape("small_rect", size, size, rng).shape for _ in range(300)]
        medium = [draw_shape("medium_rect", size, size, rng).shape for _ in range(300)]
        circles = [draw_shape("circle", size, size, rng) for _ in range(300)]
        for shapes, (a, b) in ((small, (2, 32)), (medium, (16, 64))):
            short = [min(s) for s in shapes]
            assert min(short) >= max(1, round(a * scale)) and max(short) <= round(b * scale)
        assert max(max(s) for s in small) <= round(50 * scale)
        assert max(max(s) for s in medium) <= min(size, round(256 * scale))
        assert {s[0] > s[1] for s in small} == {True, False}  # both orientations
        diameters = [c.shape[0] for c in circles]
        assert min(diameters) >= 2 * int(10 * scale) + 1 and max(diameters) <= 2 * int(25 * scale) + 1
        assert all(c.shape[0] == c.shape[1] and c[c.shape[0] // 2].all() for c in circles)
    tiny = draw_shape("medium_rect", 16, 16, rng)
    assert tiny.shape[0] <= 16 and tiny.shape[1] <= 16
    with pytest.raises(ValueError, match="unknown synthetic-anomaly kind"):
        draw_shape("triangle", 64, 64, rng)


def test_soft_alpha_ramp() -> None:
    shape = np.zeros((20, 20), dtype=np.uint8)
    shape[5:15, 5:15] = 1
    alpha = soft_alpha(shape, 4.0)
    assert alpha[10, 10] == 1.0 and alpha[0, 0] == 0.0
    assert alpha[5, 10] == pytest.approx(0.625) and alpha[4, 10] == pytest.approx(0.375)
    assert np.array_equal(alpha >= 0.5, shape.astype(bool))


def test_color_jitter_is_bounded() -> None:
    rng = np.random.default_rng(6)
    image = rng.integers(30, 220, (32, 32, 3), dtype=np.uint8)
    assert color_jitter(image, 0.0, rng) is image
    out = color_jitter(image, 0.1, rng)
    assert out.dtype == np.uint8 and out.shape == image.shape
    diff = np.abs(out.astype(int) - image.astype(int))
    assert diff.mean() > 0 and diff.mean() < 40


def test_batches_are_balanced_reproducible_and_use_other_frames(clip_frames: list[np.ndarray]) -> None:
    frames = resize(clip_frames[:12], 64)
    aug = SyntheticAnomalies(frames, AugmentSettings(), seed=7)
    batch = aug.batch(list(range(8)))
    assert sorted(a.kind for a in batch) == sorted(KINDS * 2)
    for i, a in enumerate(batch):
        if a.kind == "normal":
            assert a.donor is None and not a.mask.any() and np.array_equal(a.image, frames[i])
        else:
            assert a.donor is not None and a.donor != i and a.mask.any()
    # Odd batch sizes: as balanced as they can be.
    counts = {k: 0 for k in KINDS}
    for a in aug.batch(list(range(6))):
        counts[a.kind] += 1
    assert max(counts.values()) - min(counts.values()) <= 1
    again = SyntheticAnomalies(frames, AugmentSettings(), seed=7).batch(list(range(8)))
    for a, b in zip(batch, again, strict=True):
        assert a.kind == b.kind and a.box == b.box and np.array_equal(a.image, b.image)
    other = SyntheticAnomalies(frames, AugmentSettings(), seed=8).batch(list(range(8)))
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(batch, other, strict=True))


def test_preview_grid(tmp_path: Path, clip_frames: list[np.ndarray]) -> None:
    frames = resize(clip_frames[:10], 64)
    out = preview_grid(frames, tmp_path / "sub" / "preview.png", count=8, columns=4)
    image = cv2.imread(str(out))
    # 2 rows x 4 pairs of (frame | mask), each 64x64 with a 2-pixel frame around the pair
    assert image.shape == (2 * 68, 4 * 132, 3)
    with pytest.raises(OSError, match="could not write"):
        preview_grid(frames, tmp_path / "preview.unknown-ext", count=2)

"""Synthetic anomalies for SANFlow training on scene footage.

SANFlow trains its flows to send synthetic anomalies to a base distribution of their own.
On a video scene they are made from the scene itself: a region cut from another normal
frame of the same scene (so the texture is plausible but out of place), colour-jittered
and flipped, pasted at a random position with a softened border. Three kinds, with the
paper's sizes in pixels at a 256-pixel input (scaled with the frame):

- ``small_rect``: 2-32 × 10-50 (thin scratches and small objects), either orientation;
- ``medium_rect``: 16-64 × 64-256, either orientation;
- ``circle``: radius 10-25.

A training batch is balanced between untouched normal frames and the three kinds. The
anomaly mask is the pasted shape; the blend weight (``alpha``) ramps linearly across its
edge over ``border`` pixels, centred on it, so that ``alpha >= 0.5`` exactly on the mask.
All randomness comes from a ``numpy.random.Generator``: a seed reproduces every batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydantic import ConfigDict

from common.config import Strict

KINDS = ("normal", "small_rect", "medium_rect", "circle")
ANOMALY_KINDS = KINDS[1:]
REFERENCE_SIZE = 256  # the paper's sizes are in pixels of a 256 x 256 input
RECT_SIDES = {"small_rect": ((2, 32), (10, 50)), "medium_rect": ((16, 64), (64, 256))}
CIRCLE_RADIUS = (10, 25)
BGR_LUMA = np.array([0.114, 0.587, 0.299], dtype=np.float32)


class AugmentSettings(Strict):
    """How synthetic anomalies look. ``jitter``: colour-jitter strength, drawn per paste
    from U(0, jitter) (brightness, contrast, saturation factors in 1 ± s, hue shift ± s of
    the colour circle); ``flip_prob``: chance of flipping the donor, per axis;
    ``border``: width of the softened edge in pixels at a 256-pixel input."""

    model_config = ConfigDict(frozen=True)

    jitter: float = 0.1
    flip_prob: float = 0.5
    border: float = 4.0


@dataclass
class Augmented:
    """One training frame: BGR uint8 image, anomaly mask (bool), blend weights of the pasted
    pixels (float32, 0 = untouched), its kind, the shape's box (y0, x0, y1, x1; end
    exclusive) and the donor frame's index (None for a normal frame)."""

    image: np.ndarray
    mask: np.ndarray
    alpha: np.ndarray
    kind: str
    box: tuple[int, int, int, int] | None = None
    donor: int | None = None


def _scale(height: int, width: int) -> float:
    return min(height, width) / REFERENCE_SIZE


def draw_shape(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A binary shape (uint8, 1 inside) of ``kind``, sized for a ``height`` × ``width``
    frame and never larger than it."""
    scale = _scale(height, width)
    if kind in RECT_SIDES:
        (a_lo, a_hi), (b_lo, b_hi) = RECT_SIDES[kind]
        a = max(1, round(rng.uniform(a_lo, a_hi) * scale))
        b = max(1, round(rng.uniform(b_lo, b_hi) * scale))
        if rng.random() < 0.5:
            a, b = b, a
        return np.ones((min(a, height), min(b, width)), dtype=np.uint8)
    if kind == "circle":
        radius = rng.uniform(*CIRCLE_RADIUS) * scale
        radius = max(0.5, min(radius, (min(height, width) - 1) / 2))
        half = math.floor(radius)
        yy, xx = np.ogrid[-half : half + 1, -half : half + 1]
        return (yy**2 + xx**2 <= radius**2).astype(np.uint8)
    raise ValueError(f"unknown synthetic-anomaly kind {kind!r}; known: {', '.join(ANOMALY_KINDS)}")


def soft_alpha(shape: np.ndarray, border: float) -> np.ndarray:
    """Blend weights of a binary shape: a linear ramp ``border`` pixels wide, centred on the
    shape's edge (0.5 at the edge); > 0.5 on every shape pixel, < 0.5 off it."""
    if border <= 0:
        return shape.astype(np.float32)
    inside = cv2.distanceTransform(shape, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = cv2.distanceTransform((1 - shape).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    signed = np.where(shape > 0, inside - 0.5, 0.5 - outside)
    return np.clip(0.5 + signed / border, 0.0, 1.0).astype(np.float32)


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation factors from U(1 - s, 1 + s), hue shift from
    U(-s, s) of the colour circle, on a BGR uint8 image."""
    if strength <= 0:
        return image
    x = image.astype(np.float32) / 255.0
    x = x * rng.uniform(1 - strength, 1 + strength)
    mean = float((x @ BGR_LUMA).mean())
    x = (x - mean) * rng.uniform(1 - strength, 1 + strength) + mean
    gray = (x @ BGR_LUMA)[..., None]
    x = np.clip(gray + (x - gray) * rng.uniform(1 - strength, 1 + strength), 0.0, 1.0)
    hsv = cv2.cvtColor(np.ascontiguousarray(x, dtype=np.float32), cv2.COLOR_BGR2HSV)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-strength, strength) * 360.0) % 360.0
    x = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def paste_anomaly(
    frame: np.ndarray,
    donor: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    settings: AugmentSettings | None = None,
) -> Augmented:
    """Cut a ``kind`` shape from (a flipped, jittered) ``donor`` at a random position and
    paste it into ``frame`` at another random position, wholly inside the frame."""
    settings = settings or AugmentSettings()
    if frame.shape != donor.shape or frame.ndim != 3:
        raise ValueError(f"frame {frame.shape} and donor {donor.shape} must be equal-sized HxWx3 images")
    height, width = frame.shape[:2]
    shape = draw_shape(kind, height, width, rng)
    h, w = shape.shape
    y0, x0 = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    sy0, sx0 = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    border = settings.border * _scale(height, width)
    margin = math.ceil(border / 2 + 0.5) + 1 if border > 0 else 0
    # The region the paste touches: the shape's box plus the soft edge, clipped to the frame.
    ry0, rx0 = max(0, y0 - margin), max(0, x0 - margin)
    ry1, rx1 = min(height, y0 + h + margin), min(width, x0 + w + margin)
    local = np.zeros((ry1 - ry0, rx1 - rx0), dtype=np.uint8)
    local[y0 - ry0 : y0 - ry0 + h, x0 - rx0 : x0 - rx0 + w] = shape
    alpha_local = soft_alpha(local, border)
    source = donor
    if rng.random() < settings.flip_prob:
        source = source[:, ::-1]
    if rng.random() < settings.flip_prob:
        source = source[::-1]
    # Donor pixels for the region, shifted so the shape's box comes from (sy0, sx0); the soft
    # edge may reach past the donor's border, which is reflected.
    padded = cv2.copyMakeBorder(np.ascontiguousarray(source), margin, margin, margin, margin,
                                cv2.BORDER_REFLECT_101)
    dy, dx = sy0 - y0 + margin, sx0 - x0 + margin
    patch = color_jitter(padded[ry0 + dy : ry1 + dy, rx0 + dx : rx1 + dx],
                         float(rng.uniform(0.0, settings.jitter)), rng)
    image = frame.copy()
    a = alpha_local[..., None]
    region = image[ry0:ry1, rx0:rx1].astype(np.float32)
    image[ry0:ry1, rx0:rx1] = np.clip(np.round(region * (1 - a) + patch.astype(np.float32) * a), 0, 255)
    alpha = np.zeros((height, width), dtype=np.float32)
    alpha[ry0:ry1, rx0:rx1] = alpha_local
    mask = np.zeros((height, width), dtype=bool)
    mask[y0 : y0 + h, x0 : x0 + w] = shape > 0
    return Augmented(image, mask, alpha, kind, (y0, x0, y0 + h, x0 + w))


class SyntheticAnomalies:
    """Balanced batches of normal and synthetically anomalous frames of one scene.

    ``frames`` are the scene's normal training frames (BGR uint8, all the same size); a
    frame's donor is another of them (itself only when there is no other).
    """

    def __init__(
        self,
        frames: Sequence[np.ndarray],
        settings: AugmentSettings | None = None,
        seed: int | np.random.Generator = 0,
    ) -> None:
        if not frames:
            raise ValueError("synthetic anomalies need at least one normal frame")
        self.frames = frames
        self.settings = settings or AugmentSettings()
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def kinds(self, n: int) -> list[str]:
        """``n`` kinds, as balanced as ``n`` allows (normal : small : medium : circle), shuffled."""
        start = int(self.rng.integers(0, len(KINDS)))
        kinds = [KINDS[(start + i) % len(KINDS)] for i in range(n)]
        return [kinds[i] for i in self.rng.permutation(n)]

    def augment(self, index: int, kind: str) -> Augmented:
        frame = self.frames[index]
        if kind == "normal":
            zeros = np.zeros(frame.shape[:2], dtype=np.float32)
            return Augmented(frame.copy(), zeros.astype(bool), zeros, kind)
        n = len(self.frames)
        donor = index if n == 1 else (index + 1 + int(self.rng.integers(0, n - 1))) % n
        out = paste_anomaly(frame, self.frames[donor], kind, self.rng, self.settings)
        out.donor = donor
        return out

    def batch(self, indices: Sequence[int]) -> list[Augmented]:
        """The frames at ``indices``, balanced between normal and the three anomaly kinds."""
        return [self.augment(i, k) for i, k in zip(indices, self.kinds(len(indices)), strict=True)]


def preview_grid(
    frames: Sequence[np.ndarray],
    path: str | Path,
    settings: AugmentSettings | None = None,
    count: int = 8,
    seed: int = 0,
    columns: int = 4,
) -> Path:
    """Write a PNG grid of ``count`` augmented frames, each beside its mask (white; the blend
    weight in grey), with the shape's outline in red and its kind written on it."""
    aug = SyntheticAnomalies(frames, settings, seed)
    indices = aug.rng.choice(len(frames), size=count, replace=len(frames) < count).tolist()
    cells = []
    for item in aug.batch(indices):
        shown = item.image.copy()
        contours, _ = cv2.findContours(item.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(shown, contours, -1, (0, 0, 255), 1)
        cv2.putText(shown, item.kind, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1, cv2.LINE_AA)
        weight = np.round(item.alpha * 160).astype(np.uint8)
        weight[item.mask] = 255
        pair = np.concatenate([shown, cv2.cvtColor(weight, cv2.COLOR_GRAY2BGR)], axis=1)
        cells.append(cv2.copyMakeBorder(pair, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=(40, 40, 40)))
    blank = np.zeros_like(cells[0])
    rows = [
        np.concatenate([*cells[i : i + columns], *[blank] * (columns - len(cells[i : i + columns]))], axis=1)
        for i in range(0, len(cells), columns)
    ]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        written = cv2.imwrite(str(out), np.concatenate(rows, axis=0))
    except cv2.error:
        written = False
    if not written:
        raise OSError(f"could not write the augmentation preview {out} (use a .png or .jpg name)")
    return out

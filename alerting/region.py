"""The alert's region: the box around the hottest area of a frame's anomaly map."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Region", "hot_region"]


@dataclass(frozen=True)
class Region:
    """A box in frame pixel coordinates: ``x0 <= x < x1``, ``y0 <= y < y1``."""

    x0: int
    y0: int
    x1: int
    y1: int
    width: int  # of the frame
    height: int

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]

    def to_json(self) -> dict[str, int]:
        return {"x0": self.x0, "y0": self.y0, "x1": self.x1, "y1": self.y1,
                "width": self.width, "height": self.height}

    @classmethod
    def from_json(cls, data: dict | None) -> Region | None:
        keys = ("x0", "y0", "x1", "y1", "width", "height")
        return None if not data else cls(**{k: int(data[k]) for k in keys})


def hot_region(amap: np.ndarray, width: int, height: int, level: float = 1.0) -> Region | None:
    """Box of the largest connected area of ``amap >= level`` (the calibrated map: 1.0 is the
    scene's threshold), scaled from the map's grid to a ``width`` x ``height`` frame. When no
    value reaches ``level``, the level half-way between the map's median and its maximum is
    used instead (the hottest area relative to the rest). ``None`` for a flat map."""
    m = np.asarray(amap, dtype=np.float32)
    if m.ndim != 2 or m.size == 0 or not np.isfinite(m).all():
        return None
    if float(m.max()) < level:
        median, top = float(np.median(m)), float(m.max())
        if top <= median:  # flat map: nothing stands out
            return None
        level = (median + top) / 2
    mask = (m >= level).astype(np.uint8)
    count, _labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[best, :4])
    sx, sy = width / m.shape[1], height / m.shape[0]
    x0, y0 = int(np.floor(x * sx)), int(np.floor(y * sy))
    x1, y1 = int(np.ceil((x + w) * sx)), int(np.ceil((y + h) * sy))
    return Region(max(0, x0), max(0, y0), min(width, x1), min(height, y1), width, height)

"""Heat-map overlays of calibrated anomaly maps on frames."""

from __future__ import annotations

import cv2
import numpy as np

# Calibrated map values are shown on [0, OVERLAY_MAX]: 1.0 (the threshold) is mid-scale.
OVERLAY_MAX = 2.0


def heat_overlay(
    frame_bgr: np.ndarray,
    calibrated_map: np.ndarray,
    score: float | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend a jet-coloured map onto the frame; the blend grows with the map value, so
    normal regions stay readable. Optionally print the frame score (red at/above 1.0)."""
    h, w = frame_bgr.shape[:2]
    m = cv2.resize(calibrated_map.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    level = np.clip(m / OVERLAY_MAX, 0.0, 1.0)
    colour = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    weight = (alpha * level)[..., None]
    out = (frame_bgr.astype(np.float32) * (1 - weight) + colour.astype(np.float32) * weight).astype(np.uint8)
    if score is not None:
        colour_text = (0, 0, 255) if score >= 1.0 else (255, 255, 255)
        scale = max(0.4, w / 640)
        text = f"score {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        # A dark box behind the text keeps it readable on any background.
        cv2.rectangle(out, (4, 4), (12 + tw, 12 + th + base), (0, 0, 0), -1)
        cv2.putText(out, text, (8, 8 + th), cv2.FONT_HERSHEY_SIMPLEX, scale, colour_text, 1, cv2.LINE_AA)
    return out

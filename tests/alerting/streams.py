"""Synthetic frame + score streams for the alert role: the shipped clip with a composited
object and scores/maps that follow it (what a detector that sees the object would send)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from common.bus import Producer
from common.messages import FRAMES_TOPIC, SCORES_TOPIC, FrameMessage, ScoreMessage
from streamer.video import iter_frames
from tests.conftest import CLIP

T0 = 1_700_000_000_000
STEP_MS = 100  # 10 fps
MAP = 32
BOX = 40  # side of the composited square, pixels
MODEL = "campus:cflow:0123456789ab"


def clip_images() -> list[np.ndarray]:
    """All 120 frames of the shipped clip (256x192 BGR)."""
    return [f.image for f in iter_frames(CLIP)]


@dataclass
class Event:
    first: int  # first anomalous frame
    last: int  # last anomalous frame (inclusive)


def box_at(seq: int, event: Event, width: int, height: int) -> tuple[int, int, int, int]:
    """The object's box (x0, y0, x1, y1) in frame ``seq``: it moves left to right."""
    a = (seq - event.first) / max(1, event.last - event.first)
    x0 = int(20 + a * (width - BOX - 40))
    y0 = height // 2 - BOX // 2
    return x0, y0, x0 + BOX, y0 + BOX


def composite(images: list[np.ndarray], event: Event) -> list[np.ndarray]:
    out = []
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (BOX, BOX, 3), dtype=np.uint8)
    for seq, img in enumerate(images):
        img = img.copy()
        if event.first <= seq <= event.last:
            x0, y0, x1, y1 = box_at(seq, event, img.shape[1], img.shape[0])
            img[y0:y1, x0:x1] = texture
        out.append(img)
    return out


def score_for(seq: int, event: Event | None, scores: dict[int, float] | None = None) -> float:
    if scores is not None and seq in scores:
        return scores[seq]
    if event is not None and event.first <= seq <= event.last:
        return 1.8 + 0.05 * (seq - event.first) / max(1, event.last - event.first)
    return 0.3 + 0.1 * np.sin(seq)


def map_for(seq: int, score: float, event: Event | None, width: int, height: int) -> np.ndarray:
    amap = np.full((MAP, MAP), 0.2, np.float32)
    if event is not None and event.first <= seq <= event.last:
        x0, y0, x1, y1 = box_at(seq, event, width, height)
        sx, sy = MAP / width, MAP / height
        amap[int(y0 * sy):int(np.ceil(y1 * sy)), int(x0 * sx):int(np.ceil(x1 * sx))] = score
        amap = cv2.GaussianBlur(amap, (3, 3), 0)
    return amap


def messages(images: list[np.ndarray], camera: str, event: Event | None,
             scores: dict[int, float] | None = None, scene: str = "campus",
             seqs: range | None = None) -> list[tuple[FrameMessage, ScoreMessage]]:
    out = []
    for seq in seqs if seqs is not None else range(len(images)):
        img = images[seq]
        h, w = img.shape[:2]
        frame = FrameMessage.from_image(img, camera=camera, scene=scene, seq=seq, ts=T0 + seq * STEP_MS,
                                        source="replay")
        s = score_for(seq, event, scores)
        score = ScoreMessage(camera=camera, scene=scene, seq=seq, ts=frame.ts, source="replay", score=s,
                             raw=s, model=MODEL, latency_ms=5.0, anomaly_map=map_for(seq, s, event, w, h))
        out.append((frame, score))
    return out


def publish(producer: Producer, pairs: list[tuple[FrameMessage, ScoreMessage]], score_lag: int = 2) -> None:
    """Frames in order, each score ``score_lag`` frames after its frame (as a detector would)."""
    pending: list[ScoreMessage] = []
    for frame, score in pairs:
        producer.send(FRAMES_TOPIC, *frame.to_record())
        pending.append(score)
        if len(pending) > score_lag:
            producer.send(SCORES_TOPIC, *pending.pop(0).to_record())
    for score in pending:
        producer.send(SCORES_TOPIC, *score.to_record())
    producer.flush()


# ----------------------------------------------------------------------------- for the real detector

#: Frames of the checkerboard object in :func:`write_checker_folder`.
CHECKER_FIRST, CHECKER_LAST = 60, 79
CHECKER_BOX = 80


def checker(size: int) -> np.ndarray:
    """A red/green checkerboard: far from anything in the clip, so even the tiny test model
    scores it high (2.5-4.2, against at most 2.0 on the clip's normal frames)."""
    p = np.zeros((size, size, 3), np.uint8)
    for y in range(0, size, 8):
        for x in range(0, size, 8):
            p[y:y + 8, x:x + 8] = (0, 0, 255) if ((x + y) // 8) % 2 else (0, 255, 0)
    return p


def write_checker_folder(folder) -> None:
    """The shipped clip as an STC frame folder (``000.jpg`` ...), with an 80 px checkerboard
    crossing the view in frames 60-79."""
    folder.mkdir(parents=True, exist_ok=True)
    patch = checker(CHECKER_BOX)
    for seq, img in enumerate(clip_images()):
        img = img.copy()
        if CHECKER_FIRST <= seq <= CHECKER_LAST:
            a = (seq - CHECKER_FIRST) / (CHECKER_LAST - CHECKER_FIRST)
            x0 = 20 + int(a * (img.shape[1] - CHECKER_BOX - 40))
            y0 = img.shape[0] // 2 - CHECKER_BOX // 2
            img[y0:y0 + CHECKER_BOX, x0:x0 + CHECKER_BOX] = patch
        cv2.imwrite(str(folder / f"{seq:03d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])

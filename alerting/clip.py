"""Clip and snapshot of an alert.

A clip is encoded progressively (H.264 MP4 through :class:`streamer.video.VideoWriter`) into a
temporary file while the alert runs, so memory stays bounded however long it lasts: the
pre-roll frames from the ring buffer first, then every frame as its score arrives, until the
post-roll after the end. Frames with a map get the heat overlay (optional). The snapshot is
the peak frame as JPEG, with the overlay and the region's box.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import tempfile
from pathlib import Path

import cv2
import numpy as np

from alerting.region import Region
from alerting.ring import RingEntry
from common.messages import MessageError, decode_jpeg, encode_jpeg
from detector.overlay import heat_overlay
from streamer.video import VideoWriter

__all__ = ["ClipAssembler", "estimate_fps", "render_frame", "snapshot_jpeg"]

log = logging.getLogger(__name__)

REGION_COLOUR = (0, 0, 255)  # BGR red


def estimate_fps(entries: list[RingEntry], default: float = 10.0) -> float:
    """Frame rate of a camera from the capture times of consecutive buffered frames."""
    steps = [b.ts - a.ts for a, b in zip(entries, entries[1:], strict=False) if b.ts > a.ts]
    if not steps:
        return default
    return float(min(60.0, max(0.5, 1000.0 / statistics.median(steps))))


def render_frame(entry: RingEntry, overlay: bool, size: tuple[int, int] | None = None) -> np.ndarray | None:
    """The decoded frame (BGR), with the heat overlay if asked and a map is attached;
    resized to ``size`` (width, height) if given. None if the JPEG is corrupt."""
    try:
        image = decode_jpeg(entry.jpeg)
    except MessageError as exc:
        log.warning("frame %d: undecodable JPEG: %s", entry.seq, exc)
        return None
    if overlay and entry.amap is not None:
        image = heat_overlay(image, entry.amap, entry.score)
    if size is not None and (image.shape[1], image.shape[0]) != size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


def snapshot_jpeg(entry: RingEntry, region: Region | None, quality: int = 90) -> bytes | None:
    """The peak frame with its heat overlay and the region's box, as JPEG."""
    image = render_frame(entry, overlay=True)
    if image is None:
        return None
    if region is not None:
        sx, sy = image.shape[1] / region.width, image.shape[0] / region.height
        p0 = (int(region.x0 * sx), int(region.y0 * sy))
        p1 = (max(p0[0], int(region.x1 * sx) - 1), max(p0[1], int(region.y1 * sy) - 1))
        cv2.rectangle(image, p0, p1, REGION_COLOUR, 2)
    return encode_jpeg(image, quality)


class ClipAssembler:
    """One alert's clip, written frame by frame in seq order to a temporary MP4."""

    def __init__(self, fps: float, size: tuple[int, int], *, overlay: bool, crf: int, max_frames: int,
                 tmp_dir: Path | None = None) -> None:
        if tmp_dir is not None:
            Path(tmp_dir).mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(suffix=".mp4", prefix="vigil-clip-", dir=tmp_dir)
        os.close(fd)
        self.path = Path(name)
        self.size, self.overlay, self.max_frames = size, overlay, max_frames
        self.writer = VideoWriter(self.path, fps, size[0], size[1], crf=crf)
        self.first_seq: int | None = None
        self.last_seq: int | None = None  # the last frame considered (written or not)
        self.seqs: list[int] = []  # frames written
        self.broken = False  # the encoder failed: the clip keeps what it has

    @property
    def frames(self) -> int:
        return len(self.seqs)

    def add(self, entry: RingEntry) -> bool:
        """Write a frame (if it is newer than the last one and the clip is not full)."""
        if self.last_seq is not None and entry.seq <= self.last_seq:
            return False
        self.last_seq = entry.seq
        if self.frames >= self.max_frames or self.broken:
            return False
        image = render_frame(entry, self.overlay, self.size)
        if image is None:
            return False
        try:
            self.writer.write(image)
        except Exception as exc:  # noqa: BLE001 - an encoder failure must not stop the alert role
            log.error("clip %s: encoding frame %d failed (%s); the clip ends here", self.path, entry.seq, exc)
            self.broken = True
            return False
        if self.first_seq is None:
            self.first_seq = entry.seq
        self.seqs.append(entry.seq)
        return True

    def finish(self) -> bytes | None:
        """Close the file and return its bytes (None if no frame was written); removes it."""
        try:
            self.writer.close()
            return self.path.read_bytes() if self.frames else None
        except Exception as exc:  # noqa: BLE001 - no clip rather than no alert
            log.error("clip %s could not be finished: %s", self.path, exc)
            return None
        finally:
            self.discard()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

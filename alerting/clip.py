"""Clip and snapshot of an alert.

A clip is encoded progressively (H.264 MP4 through :class:`streamer.video.VideoWriter`) into a
temporary file while the alert runs, so memory stays bounded however long it lasts: the
pre-roll frames from the ring buffer first, then every frame as its score arrives, until the
post-roll after the end (:class:`ClipRecorder` decides which frames; :class:`ClipAssembler`
encodes them). Frames with a map get the heat overlay (optional). The snapshot is the peak
frame as JPEG, with the overlay and the region's box.

A frame that cannot be rendered (a damaged JPEG, one declaring more than ``max_pixels``, a
map the overlay cannot use) is left out of the clip and logged; an encoder failure ends the
clip with what it has. Neither ends the alert.
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

from alerting.config import ClipSettings
from alerting.region import Region
from alerting.ring import FrameRing, RingEntry
from common.messages import MessageError, decode_jpeg, encode_jpeg, jpeg_size
from detector.overlay import heat_overlay
from streamer.writer import VideoWriter

__all__ = ["ClipAssembler", "ClipRecorder", "estimate_fps", "render_frame", "snapshot_jpeg"]

log = logging.getLogger(__name__)

REGION_COLOUR = (0, 0, 255)  # BGR red
#: Default cap of the pixels a frame's JPEG may declare (``alerting.clip.max_frame_pixels``).
MAX_FRAME_PIXELS = 40_000_000


def estimate_fps(entries: list[RingEntry], default: float = 10.0) -> float:
    """Frame rate of a camera from the capture times of consecutive buffered frames."""
    steps = [b.ts - a.ts for a, b in zip(entries, entries[1:], strict=False) if b.ts > a.ts]
    if not steps:
        return default
    return float(min(60.0, max(0.5, 1000.0 / statistics.median(steps))))


def render_frame(entry: RingEntry, overlay: bool, size: tuple[int, int] | None = None,
                 max_pixels: int = MAX_FRAME_PIXELS) -> np.ndarray | None:
    """The decoded frame (BGR), with the heat overlay if asked and a map is attached;
    resized to ``size`` (width, height) if given. None if the JPEG is corrupt or declares
    more than ``max_pixels`` (it is not decoded then)."""
    try:
        width, height = jpeg_size(entry.jpeg)
        if width * height > max_pixels:
            raise MessageError(f"JPEG declares {width}x{height} pixels, over {max_pixels}")
        image = decode_jpeg(entry.jpeg)
    except MessageError as exc:
        log.warning("frame %d: undecodable JPEG: %s", entry.seq, exc)
        return None
    if overlay and _drawable(entry.amap):
        image = heat_overlay(image, entry.amap, entry.score)
    if size is not None and (image.shape[1], image.shape[0]) != size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


def _drawable(amap: np.ndarray | None) -> bool:
    """Whether a map can be overlaid: non-empty, 2-D, finite (else the frame goes without)."""
    return (amap is not None and amap.ndim == 2 and amap.size > 0
            and bool(np.isfinite(amap).all()))


def snapshot_jpeg(entry: RingEntry, region: Region | None, quality: int = 90,
                  max_pixels: int = MAX_FRAME_PIXELS) -> bytes | None:
    """The peak frame with its heat overlay and the region's box, as JPEG."""
    image = render_frame(entry, overlay=True, max_pixels=max_pixels)
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
                 tmp_dir: Path | None = None, max_pixels: int = MAX_FRAME_PIXELS) -> None:
        if tmp_dir is not None:
            Path(tmp_dir).mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(suffix=".mp4", prefix="vigil-clip-", dir=tmp_dir)
        os.close(fd)
        self.path = Path(name)
        self.size, self.overlay, self.max_frames, self.max_pixels = size, overlay, max_frames, max_pixels
        self.writer = VideoWriter(self.path, fps, size[0], size[1], crf=crf)
        self.first_seq: int | None = None
        self.last_seq: int | None = None  # the last frame considered (written or not)
        self.seqs: list[int] = []  # frames written
        #: ``[seq, ts, score]`` of every frame written (score None: the frame had none yet)
        self.timeline: list[list] = []
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
        try:
            image = render_frame(entry, self.overlay, self.size, self.max_pixels)
        except Exception as exc:  # noqa: BLE001 - one frame that cannot be drawn: the clip goes on without it
            log.error("clip %s: frame %d cannot be rendered (%r); left out", self.path, entry.seq, exc)
            return False
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
        score = None if entry.score is None else round(float(entry.score), 4)
        self.timeline.append([entry.seq, entry.ts, score])
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


class ClipRecorder:
    """Which frames go into one alert's clip: the pre-roll, then every frame of the ring not fed
    yet, and after the alert's end only those within the post-roll.

    The clip (a :class:`ClipAssembler`) is opened with the pre-roll, or without one by the first
    frame fed; if it cannot be opened the alert goes on without it (the next feed tries again).
    """

    def __init__(self, camera: str, start_seq: int, settings: ClipSettings) -> None:
        self.camera, self.start_seq, self.settings = camera, start_seq, settings
        self.clip: ClipAssembler | None = None
        self.cut_ts: int | None = None  # capture ms of the post-roll's end; None: the alert runs

    @property
    def frames(self) -> int:
        """Frames written so far."""
        return self.clip.frames if self.clip is not None else 0

    @property
    def first_seq(self) -> int | None:
        """Seq of the first frame written (None: none yet)."""
        return self.clip.first_seq if self.clip is not None else None

    @property
    def timeline(self) -> list[list]:
        """``[seq, ts, score]`` of the frames written so far (the alert page's score timeline)."""
        return list(self.clip.timeline) if self.clip is not None else []

    @property
    def last_written_seq(self) -> int | None:
        """Seq of the last frame written (None: none yet)."""
        return self.clip.seqs[-1] if self.clip is not None and self.clip.seqs else None

    def start(self, ring: FrameRing, seq: int, ts: int) -> None:
        """Open the clip with the pre-roll: the ring's frames up to ``seq``, from ``pre_roll_s``
        before ``ts`` on."""
        pre_roll = ring.since_ts(ts - int(self.settings.pre_roll_s * 1000), seq)
        self.clip = self._new_clip(ring, pre_roll[0]) if pre_roll else None
        if self.clip is not None:
            for e in pre_roll:
                self.clip.add(e)

    def feed(self, ring: FrameRing, upto_seq: int) -> None:
        """Add the ring's frames up to ``upto_seq`` not fed yet (after the end: none past the post-roll)."""
        entries = self.unfed(ring, upto_seq)
        if self.cut_ts is not None:
            entries = [e for e in entries if e.ts <= self.cut_ts]
        if not entries:
            return
        if self.clip is None:
            self.clip = self._new_clip(ring, entries[0])
            if self.clip is None:
                return
        for e in entries:
            self.clip.add(e)

    def unfed(self, ring: FrameRing, upto_seq: int) -> list[RingEntry]:
        """The ring's frames up to ``upto_seq`` after the last one fed (from the start without a clip)."""
        after = self.clip.last_seq if self.clip is not None and self.clip.last_seq is not None else None
        first = (after + 1) if after is not None else self.start_seq
        return list(ring.between(first, upto_seq))

    def end(self, ts: int) -> None:
        """The alert ended at capture time ``ts``: record on for the post-roll, then stop."""
        self.cut_ts = ts + int(self.settings.post_roll_s * 1000)

    def post_roll_done(self, ts: int) -> bool:
        """Whether a frame at capture time ``ts`` completes the post-roll (False while the alert runs)."""
        return self.cut_ts is not None and ts >= self.cut_ts

    def finish(self) -> bytes | None:
        """The clip's MP4 bytes (None without a frame); the temporary file is removed."""
        return self.clip.finish() if self.clip is not None else None

    def discard(self) -> None:
        """Drop the clip being recorded."""
        if self.clip is not None:
            self.clip.discard()

    def _new_clip(self, ring: FrameRing, first: RingEntry) -> ClipAssembler | None:
        c = self.settings
        fps = estimate_fps(list(ring.between(-1, ring.newest_seq or 0)))
        try:
            return ClipAssembler(fps, (first.width, first.height), overlay=c.overlay, crf=c.crf,
                                 max_frames=max(1, int(c.max_s * fps)), tmp_dir=c.tmp_dir,
                                 max_pixels=c.max_frame_pixels)
        except Exception as exc:  # noqa: BLE001 - an alert without a clip beats no alert
            log.error("camera %s: cannot start a clip (%s); the alert goes on without one", self.camera, exc)
            return None

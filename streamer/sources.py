"""Frame sources of a camera: RTSP (live), a video file or an STC frame folder (replay).

A camera is described by a :class:`CameraConfig`; :func:`open_source` turns it into a
:class:`Source`, an iterable of :class:`CapturedFrame` s that the ingest worker
(:mod:`streamer.ingest`) publishes. Every source

* samples the decoded frames down to the camera's analysis ``fps`` (a frame is kept when
  its timestamp reaches the next sampling instant; ``fps=None`` keeps every frame),
* resizes kept frames to ``resize`` (width, height) if set,
* numbers frames with ``seq``: the index of the frame among all frames *decoded* from the
  source (so sampling leaves gaps), monotonic for the whole life of the source -- across
  RTSP reconnects and file loops,
* stops promptly when its ``stop`` event is set (at the latest after one blocked read,
  which the read timeout bounds).

Timestamps (``ts_ms``, epoch milliseconds):

* live (RTSP): the wall-clock time at which the frame was decoded (kept non-decreasing);
* replay (file, frame folder): ``replay_start_ms`` + the frame's media time (its
  presentation time in the file; ``index / 25 fps`` in a frame folder; looping adds the
  length of the pass). ``replay_start_ms=None`` (the default) takes the wall clock when the
  source starts, so timestamps look like a capture that began then; set it to a fixed value
  for fully deterministic messages (tests, evaluation). A fast replay (``realtime=False``)
  therefore produces timestamps ahead of the wall clock: ``now - ts`` is a latency only for
  live sources and paced replays.

RTSP sources never give up: a failed open, a read error, the end of the stream or a stream
that delivers no frame for ``watchdog_s`` seconds close the connection and reconnect after
a capped exponential back-off (``reconnect_initial_s`` doubling up to ``reconnect_max_s``;
reset once a connection delivers a frame). The first ``warmup_frames`` decoded frames after
each (re)connect are flagged ``warmup`` (a decoder that joined mid-GOP may produce smeared
frames). URLs in logs, errors and ``repr`` have their credentials redacted.

Corrupt frames are skipped, never delivered, and counted: a frame-folder image that does
not decode (a truncated JPEG), a packet that does not decode, a frame the decoder flags
corrupt. Each is counted in ``frames_skipped`` and told to ``on_skip(seq, what)``; the
ingest worker counts them per camera. A replay's file is opened once when the source is
made, so a missing file or one that is no video (a text file named ``.mp4``) is a
:class:`SourceError` naming the camera before anything runs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import av
import cv2
import numpy as np

from common.messages import JPEG_MAGIC, decode_jpeg, jpeg_size
from common.messages import Source as SourceType
from common.redact import redact_url
from common.retry import backoff_delay
from streamer.camera import CameraConfig
from streamer.decode import AV_ERRORS, LIVE_MAX_BAD_PACKETS, DecodeLoop, DecodeLoopError
from streamer.video import (
    DEFAULT_DIR_FPS,
    IMAGE_SUFFIXES,
    SkipListener,
    SourceError,
    iter_video_frames,
    numbered_images,
    probe_video,
    read_image_file,
    read_jpeg_file,
)

#: What a replay's frame loader returns: the image (``None`` for a JPEG file that need not be
#: decoded) and, for a JPEG file, its bytes.
Loaded = tuple[np.ndarray | None, bytes | None]

__all__ = [
    "CapturedFrame",
    "FileSource",
    "FpsSampler",
    "FrameDirSource",
    "ReconnectListener",
    "RtspSource",
    "SkipListener",
    "Source",
    "SourceError",
    "open_source",
]

log = logging.getLogger(__name__)

# RTSP probing: 1 s of stream is plenty to find an H.264/H.265 stream's parameters
_RTSP_ANALYZE_US = 1_000_000


# ----------------------------------------------------------------------------- frames, sampling


@dataclass(frozen=True)
class CapturedFrame:
    """A frame as a source delivers it (after sampling and resizing).

    ``seq``: index among all frames decoded from the source (monotonic, gaps from
    sampling); ``ts_ms``: capture time in epoch ms (see the module docstring for replays);
    ``image``: BGR ``uint8`` (H, W, 3); ``warmup``: one of the first frames after a
    (re)connect; ``reconnects``: reconnect attempts the source had made before this frame.

    A JPEG frame file replayed at its own size is not decoded by the source (ingest
    publishes its bytes as they are): ``decoded`` is then ``None`` and ``image`` decodes
    ``jpeg`` on first use.
    """

    seq: int
    ts_ms: int
    decoded: np.ndarray | None = field(repr=False)
    warmup: bool = False
    #: the source's own JPEG bytes of exactly this image (a JPEG frame file, not resized):
    #: published as they are, so a replay carries the very bytes an offline reader decodes
    jpeg: bytes | None = field(default=None, repr=False)
    reconnects: int = 0

    def __post_init__(self) -> None:
        if self.decoded is None and self.jpeg is None:
            raise ValueError("a captured frame needs its image or its JPEG bytes")

    @functools.cached_property
    def image(self) -> np.ndarray:
        if self.decoded is not None:
            return self.decoded
        assert self.jpeg is not None  # __post_init__
        return decode_jpeg(self.jpeg)

    @functools.cached_property
    def size(self) -> tuple[int, int]:
        """``(width, height)``, read from the JPEG header when the frame is not decoded."""
        if self.decoded is not None:
            return self.decoded.shape[1], self.decoded.shape[0]
        assert self.jpeg is not None
        return jpeg_size(self.jpeg)


class FpsSampler:
    """Keeps frames at (about) ``fps`` from a stream of timestamps in milliseconds.

    The first frame is kept; after that a frame is kept when its timestamp reaches the
    next sampling instant, which then advances by one period (or restarts from the kept
    frame after a gap). A timestamp far before the next instant (a source that restarted)
    restarts sampling. ``fps=None`` keeps every frame.
    """

    def __init__(self, fps: float | None) -> None:
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be positive, got {fps}")
        self.period_ms = None if fps is None else 1000.0 / fps
        self._next: float | None = None

    def reset(self) -> None:
        self._next = None

    def keep(self, t_ms: float) -> bool:
        period = self.period_ms
        if period is None:
            return True
        nxt = self._next
        if nxt is None or t_ms < nxt - 2 * period:
            self._next = t_ms + period
            return True
        if t_ms >= nxt - 0.5:  # timestamps are rounded to whole milliseconds
            nxt += period
            self._next = nxt if nxt > t_ms else t_ms + period
            return True
        return False


def _resize(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (image.shape[1], image.shape[0]) == size:
        return image
    shrink = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


#: ``listener(attempt, delay_s, reason)``: a source is about to reconnect (attempt = 1, 2, ...).
ReconnectListener = Callable[[int, float, str], None]


# ----------------------------------------------------------------------------- sources


class Source(ABC):
    """An iterable of :class:`CapturedFrame` for one camera; iterate it once, in one thread.

    Iteration ends when the source is exhausted (a replay without ``loop``) or ``stop`` is
    set; :class:`SourceError` is raised when a replay cannot be opened or read at all.
    """

    live: ClassVar[bool] = False

    def __init__(self, camera: CameraConfig, stop: threading.Event | None = None,
                 on_reconnect: ReconnectListener | None = None) -> None:
        self.camera = camera
        self.stop = stop if stop is not None else threading.Event()
        self.on_reconnect = on_reconnect
        #: told of every frame skipped as corrupt (see the module docstring)
        self.on_skip: SkipListener | None = None
        #: reconnect attempts so far (live sources)
        self.reconnects = 0
        #: frames decoded so far (before sampling)
        self.frames_decoded = 0
        #: frames skipped as corrupt so far (bad images, undecodable packets, corrupt frames)
        self.frames_skipped = 0

    def _skipped(self, seq: int, what: str) -> None:
        self.frames_skipped += 1
        if self.on_skip is not None:
            self.on_skip(seq, what)

    @property
    def source_type(self) -> SourceType:
        return "live" if self.live else "replay"

    @abstractmethod
    def __iter__(self) -> Iterator[CapturedFrame]: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(camera={self.camera.id!r}, url={self.camera.display_url!r})"


class _Replay(Source):
    """Shared replay logic: sampling, pacing, looping, synthetic timestamps."""

    live = False

    def __init__(self, camera: CameraConfig, stop: threading.Event | None = None,
                 on_reconnect: ReconnectListener | None = None) -> None:
        super().__init__(camera, stop, on_reconnect)
        self._check_path()

    @abstractmethod
    def _check_path(self) -> None: ...

    @abstractmethod
    def _pass(self) -> Generator[tuple[int, int, Callable[[], Loaded | None]], None, None]:
        """One pass over the media: ``(seq, media ms, loader)``; the loader returns the image
        and, for a JPEG file, its bytes; ``None`` = skip the frame."""

    def __iter__(self) -> Iterator[CapturedFrame]:
        cam = self.camera
        sampler = FpsSampler(cam.fps)
        base_ms = cam.replay_start_ms if cam.replay_start_ms is not None else int(time.time() * 1000)
        seq_offset = 0
        ms_offset = 0
        anchor: tuple[float, int] | None = None  # (monotonic s, media ms) for pacing
        passes = 0
        while not self.stop.is_set():
            last_seq = last_ms = prev_ms = -1
            with contextlib.closing(self._pass()) as media:
                for seq, media_ms, load in media:
                    if self.stop.is_set():
                        return
                    self.frames_decoded += 1
                    prev_ms, last_seq, last_ms = last_ms, seq, media_ms
                    t_ms = ms_offset + media_ms
                    if not sampler.keep(t_ms):
                        continue
                    loaded = load()
                    if loaded is None:
                        continue
                    image, jpeg = loaded
                    if cam.realtime:
                        anchor = self._pace(anchor, t_ms)
                        if self.stop.is_set():
                            return
                    if cam.resize is not None:
                        assert image is not None  # loaders decode whenever a resize is configured
                        image, jpeg = _resize(image, cam.resize), None
                    yield CapturedFrame(seq=seq_offset + seq, ts_ms=base_ms + t_ms, decoded=image,
                                        reconnects=0, jpeg=jpeg)
            passes += 1
            if not cam.loop or last_seq < 0:
                return
            period = last_ms - prev_ms if 0 <= prev_ms < last_ms else round(1000.0 / DEFAULT_DIR_FPS)
            seq_offset += last_seq + 1
            ms_offset += last_ms + period
            log.debug("camera %s: replay of %s looped (%d passes)", cam.id, cam.display_url, passes)

    def _pace(self, anchor: tuple[float, int] | None, t_ms: int) -> tuple[float, int]:
        now = time.monotonic()
        if anchor is None:
            return now, t_ms
        due = anchor[0] + (t_ms - anchor[1]) / 1000.0
        if due > now:
            self.stop.wait(due - now)
            return anchor
        if now - due > 1.0:  # held up (back-pressure): re-anchor rather than sprint to catch up
            return now, t_ms
        return anchor


class FileSource(_Replay):
    """A video file decoded with PyAV (:func:`streamer.video.iter_video_frames`); it is
    opened once when the source is made, to refuse a file that is no video at once."""

    def _check_path(self) -> None:
        cam = self.camera
        p = Path(cam.url)
        if not p.is_file():
            raise SourceError(f"camera {cam.id}: video file not found: {cam.display_url}")
        try:
            probe_video(p)
        except SourceError as exc:
            raise SourceError(f"camera {cam.id}: {exc}") from None

    def _pass(self) -> Generator[tuple[int, int, Callable[[], Loaded | None]], None, None]:
        cam = self.camera
        try:
            frames = iter_video_frames(cam.url, on_skip=self._skipped, who=f"camera {cam.id}")
            for frame in frames:
                yield frame.seq, frame.ts_ms, (lambda f=frame: (f.image, None))
        except SourceError as exc:
            raise SourceError(f"camera {cam.id}: {exc}") from None


class FrameDirSource(_Replay):
    """A folder of numbered images (STC ``000.jpg, 001.jpg, ...``): ``seq`` = the number in
    the file name, media time = ``seq / 25 fps``. An unreadable image is logged and skipped."""

    _loaded = 0  # images read in the current pass

    def _check_path(self) -> None:
        p = Path(self.camera.url)
        if not p.is_dir():
            raise SourceError(f"camera {self.camera.id}: frame folder not found: {p}")
        if not numbered_images(p):
            raise SourceError(
                f"camera {self.camera.id}: frame folder is empty: {p} "
                f"(no numbered {'/'.join(sorted(IMAGE_SUFFIXES))} files)"
            )

    def _pass(self) -> Generator[tuple[int, int, Callable[[], Loaded | None]], None, None]:
        """One pass over the folder; a pass in which every image read was unreadable is a
        :class:`SourceError` (a folder of broken files is no replay)."""
        folder = Path(self.camera.url)
        self._loaded = 0
        skipped_before = self.frames_skipped
        for index, file in numbered_images(folder):
            media_ms = int(round(index / DEFAULT_DIR_FPS * 1000.0))
            yield index, media_ms, (lambda i=index, f=file: self._load(i, f))
        skipped = self.frames_skipped - skipped_before
        if not self._loaded and skipped:
            raise SourceError(f"camera {self.camera.id}: no readable image in frame folder {folder} "
                              f"({skipped} unreadable)")

    def _load(self, index: int, file: Path) -> Loaded | None:
        """A JPEG file replayed at its own size goes on as it is: it is only checked (header
        and a decode at 1/8 scale, a quarter of the cost of a full decode); other files are
        decoded."""
        try:
            if self.camera.resize is None and file.suffix.lower() in (".jpg", ".jpeg"):
                data = read_jpeg_file(file)
                if data is not None:
                    self._loaded += 1
                    return None, data
            image, data = read_image_file(file)
        except SourceError as exc:
            log.warning("camera %s: skipping frame: %s", self.camera.id, exc)
            self._skipped(index, "unreadable image")
            return None
        self._loaded += 1
        return image, data if data.startswith(JPEG_MAGIC) else None


class _StreamLost(Exception):  # noqa: N818 - internal control flow, not an error type
    """The open stream stopped delivering frames; reconnect."""


class RtspSource(Source):
    """An RTSP camera read with PyAV; reconnects forever (until ``stop``), see the module doc."""

    live = True

    def __init__(self, camera: CameraConfig, stop: threading.Event | None = None,
                 on_reconnect: ReconnectListener | None = None) -> None:
        super().__init__(camera, stop, on_reconnect)
        self._next_seq = 0
        self._last_ts = 0
        #: why the last connection attempt failed or the last stream ended ("" if none yet)
        self.last_error = ""
        #: True while a connection is open and delivering frames
        self.connected = False

    def av_options(self) -> dict[str, str]:
        """Demuxer options for ``av.open``. ``timeout`` is the RTSP socket I/O timeout in
        microseconds (FFmpeg >= 5; the older ``stimeout`` is gone)."""
        cam = self.camera
        return {
            "rtsp_transport": cam.transport,
            "timeout": str(int(self._read_timeout() * 1_000_000)),
            "allowed_media_types": "video",
            "analyzeduration": str(_RTSP_ANALYZE_US),
        }

    def _read_timeout(self) -> float:
        return min(self.camera.read_timeout_s, self.camera.watchdog_s)

    def _open(self) -> Any:
        cam = self.camera
        container = av.open(cam.url, mode="r", options=self.av_options(),
                            timeout=(cam.open_timeout_s, self._read_timeout()))
        if not container.streams.video:
            container.close()
            raise _StreamLost("no video stream in the RTSP session")
        return container

    def __iter__(self) -> Iterator[CapturedFrame]:
        cam = self.camera
        failures = 0
        attempt = 0
        while not self.stop.is_set():
            if attempt:
                self.reconnects += 1
                delay = backoff_delay(max(failures, 1), cam.reconnect_initial_s, cam.reconnect_max_s)
                log.warning("camera %s: reconnecting to %s in %.1f s (attempt %d): %s",
                            cam.id, cam.display_url, delay, self.reconnects, self.last_error)
                if self.on_reconnect is not None:
                    self.on_reconnect(self.reconnects, delay, self.last_error)
                if self.stop.wait(delay):
                    return
            attempt += 1
            try:
                container = self._open()
            except (*AV_ERRORS, _StreamLost) as exc:
                failures += 1
                self.last_error = f"cannot open: {_describe(exc)}"
                continue
            got_frame = False
            try:
                for frame in self._read(container):
                    if not got_frame:
                        got_frame = True
                        failures = 0
                        self.connected = True
                        log.info("camera %s: streaming from %s (%s)%s", cam.id, cam.display_url,
                                 cam.transport, f" after {self.reconnects} reconnect attempt(s)"
                                 if self.reconnects else "")
                    yield frame
                if not self.stop.is_set():
                    self.last_error = "the stream ended"
            except (*AV_ERRORS, _StreamLost) as exc:
                self.last_error = f"stream lost: {_describe(exc)}"
            finally:
                self.connected = False
                container.close()
            if not got_frame:
                failures += 1

    def _read(self, container: Any) -> Iterator[CapturedFrame]:
        """Frames of one connection; :class:`_StreamLost` when the decode loop gives up (too
        many bad packets in a row, a read error, no frame for ``watchdog_s``)."""
        cam = self.camera
        stream = container.streams.video[0]
        sampler = FpsSampler(cam.fps)
        first_pts_ms: float | None = None
        loop = DecodeLoop(container, stream, max_bad_packets=LIVE_MAX_BAD_PACKETS, stall_s=cam.watchdog_s,
                          stop=self.stop, on_bad_packet=self._bad_packet,
                          on_corrupt_frame=self._corrupt_frame)
        try:
            for decoded in loop:
                vf = decoded.frame
                self.frames_decoded += 1
                seq = self._next_seq
                self._next_seq += 1
                if vf.pts is not None and vf.time_base is not None:
                    pts_ms = float(vf.pts * vf.time_base) * 1000.0
                    if first_pts_ms is None:
                        first_pts_ms = pts_ms
                    t_ms = pts_ms - first_pts_ms
                else:
                    t_ms = decoded.at_s * 1000.0
                if not sampler.keep(t_ms):
                    continue
                image = _resize(vf.to_ndarray(format="bgr24"), cam.resize)
                ts = max(int(time.time() * 1000), self._last_ts)
                self._last_ts = ts
                yield CapturedFrame(seq=seq, ts_ms=ts, decoded=np.ascontiguousarray(image),
                                    warmup=decoded.index < cam.warmup_frames, reconnects=self.reconnects)
        except DecodeLoopError as exc:
            raise _StreamLost(str(exc)) from None

    def _bad_packet(self, exc: BaseException, frames: int) -> None:
        log.debug("camera %s: undecodable packet: %s", self.camera.id, _describe(exc))
        self._skipped(self._next_seq, "undecodable packet")

    def _corrupt_frame(self, index: int) -> None:
        """A frame flagged corrupt keeps its place in the numbering (``seq`` leaves a gap)."""
        log.debug("camera %s: skipping a frame the decoder flags corrupt", self.camera.id)
        self.frames_decoded += 1
        self._skipped(self._next_seq, "corrupt frame")
        self._next_seq += 1


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _StreamLost):
        return redact_url(str(exc))
    return f"{type(exc).__name__}: {redact_url(str(exc))}"


def open_source(camera: CameraConfig, stop: threading.Event | None = None,
                on_reconnect: ReconnectListener | None = None) -> Source:
    """The :class:`Source` for ``camera``'s kind. A replay whose file or folder does not exist
    raises :class:`SourceError` here; an RTSP source only connects when iterated."""
    kinds: dict[str, type[Source]] = {"rtsp": RtspSource, "file": FileSource, "frames": FrameDirSource}
    return kinds[camera.kind](camera, stop, on_reconnect)

"""Video input: decode files, URLs and STC frame folders (writing MP4: :mod:`streamer.writer`).

Everything here works on plain BGR ``uint8`` arrays (OpenCV's convention) so the rest of
vigilflow never touches PyAV objects. Errors that concern the *source* (missing file, not
a video, empty folder, unreadable image) are raised as :class:`SourceError` with a message
naming the path; URLs in messages always have their credentials redacted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from common.messages import JPEG_MAGIC, MessageError, jpeg_size
from common.redact import redact_url
from streamer.decode import (
    AV_ERRORS,
    FILE_MAX_BAD_PACKETS,
    BadPacketsError,
    DecodeLoop,
    ReadError,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "Frame",
    "SkipListener",
    "SourceError",
    "VideoInfo",
    "iter_frame_dir",
    "numbered_images",
    "iter_frames",
    "iter_video_frames",
    "probe_video",
    "video_info",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: Image file suffixes recognised in a frame folder (compared case-insensitively).
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp"})

#: Frame rate assumed for frame folders, which carry no timing of their own.
DEFAULT_DIR_FPS = 25.0

#: ``on_skip(seq, what)``: a frame was skipped as corrupt; ``what`` is ``"undecodable
#: packet"`` (``seq``: the index the next decoded frame gets), ``"corrupt frame"`` or
#: ``"unreadable image"``.
SkipListener = Callable[[int, str], None]


class SourceError(RuntimeError):
    """A video source cannot be opened or read (the message names the path)."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    ``seq`` is the frame index within the source (decode order for videos, the number in
    the file name for frame folders); ``ts_ms`` is the presentation time in milliseconds
    from the start of the source; ``image`` is BGR ``uint8`` with shape ``(H, W, 3)``.
    """

    seq: int
    ts_ms: int
    image: np.ndarray


@dataclass(frozen=True)
class VideoInfo:
    """Basic properties of a source; ``frames`` may be an estimate (0 if unknown)."""

    width: int
    height: int
    fps: float
    frames: int


# --------------------------------------------------------------------------- helpers



def _is_url(path: PathLike) -> bool:
    return "://" in os.fspath(path)


def _show(path: PathLike) -> str:
    """Path or URL as it may appear in a message or log line."""
    return redact_url(os.fspath(path))


def _check_limits(max_frames: int | None, step: int) -> None:
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0 or None, got {max_frames}")


def _open_input(path: PathLike) -> tuple[Any, Any]:
    """Open a container for reading and return ``(container, first video stream)``."""
    shown = _show(path)
    if not _is_url(path):
        p = Path(path)
        if not p.exists():
            raise SourceError(f"video source not found: {shown}")
        if p.is_dir():
            raise SourceError(f"video source is a directory, not a video file: {shown}")
    try:
        container = av.open(os.fspath(path), mode="r")
    except AV_ERRORS as exc:
        detail = redact_url(str(exc))
        raise SourceError(
            f"cannot open video source {shown}: not a video or unreadable "
            f"({type(exc).__name__}: {detail})"
        ) from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"no video stream in {shown}")
    return container, container.streams.video[0]


def probe_video(path: PathLike) -> None:
    """Check that ``path`` opens as a video with a video stream (:class:`SourceError` naming
    it if not: missing, a directory, not a video); nothing is decoded."""
    container, _stream = _open_input(path)
    container.close()


def _stream_fps(stream: Any) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return 0.0


# --------------------------------------------------------------------------- reading


def iter_video_frames(
    path: PathLike,
    *,
    max_frames: int | None = None,
    step: int = 1,
    on_skip: SkipListener | None = None,
    who: str | None = None,
) -> Iterator[Frame]:
    """Decode a video file or URL with PyAV and yield BGR frames.

    Every decoded frame gets ``seq`` = its index in decode order; only frames with
    ``seq % step == 0`` are yielded, at most ``max_frames`` of them. A packet that fails
    to decode and a frame the decoder flags corrupt are logged and skipped (``on_skip`` is
    told of each); a file that ends well before the frame count its container declares is
    logged as ended early (truncated or damaged). A source that cannot be opened raises
    :class:`SourceError` immediately (at call time, not on first iteration), as does one
    from which not a single frame can be decoded. ``who`` (e.g. ``"camera gate"``) starts
    every log line about the file.
    """
    _check_limits(max_frames, step)
    container, stream = _open_input(path)
    return _decode(container, stream, _show(path), max_frames, step, on_skip=on_skip, who=who)


def _expected_frames(container: Any, stream: Any) -> tuple[int, bool]:
    """The frame count the container declares for ``stream`` and whether it is exact (the
    stream's own count) or an estimate (duration x frame rate); ``(0, False)`` if unknown."""
    frames = int(getattr(stream, "frames", 0) or 0)
    if frames > 0:
        return frames, True
    fps = _stream_fps(stream)
    duration = getattr(stream, "duration", None)
    time_base = getattr(stream, "time_base", None)
    seconds = 0.0
    if duration is not None and time_base is not None:
        seconds = float(duration * time_base)
    elif getattr(container, "duration", None) is not None:
        seconds = container.duration / av.time_base
    return (int(round(seconds * fps)), False) if fps > 0 else (0, False)


def _ended_early(decoded: int, expected: int, exact: bool) -> bool:
    """Whether ``decoded`` frames are clearly fewer than the ``expected`` the container
    declared (a small shortfall is allowed: edit lists, rounding of an estimate)."""
    slack = max(1, expected // 100) if exact else max(2, expected // 50)
    return expected > 0 and decoded < expected - slack


def _decode(
    container: Any,
    stream: Any,
    shown: str,
    max_frames: int | None,
    step: int,
    *,
    on_skip: SkipListener | None = None,
    who: str | None = None,
) -> Iterator[Frame]:
    """Frames of an opened file: a corrupt packet or frame is skipped, a read error ends the
    file (or is a :class:`SourceError` before the first frame), :data:`FILE_MAX_BAD_PACKETS`
    failed packets in a row or no usable frame at all is a :class:`SourceError`; a file
    that ends short of its declared frame count is logged as ended early."""
    fps = _stream_fps(stream)
    start = stream.start_time
    yielded = 0
    last_ts = -1
    prefix = f"{who}: " if who else ""

    def bad_packet(exc: BaseException, frames: int) -> None:
        log.warning(
            "%sskipping undecodable packet in %s (after frame %d): %s",
            prefix,
            shown,
            frames - 1,
            redact_url(str(exc)),
        )
        if on_skip is not None:
            on_skip(frames, "undecodable packet")

    def corrupt_frame(index: int) -> None:
        log.warning("%sskipping frame %d of %s: the decoder flags it corrupt", prefix, index, shown)
        if on_skip is not None:
            on_skip(index, "corrupt frame")

    loop = DecodeLoop(
        container,
        stream,
        max_bad_packets=FILE_MAX_BAD_PACKETS,
        on_bad_packet=bad_packet,
        on_corrupt_frame=corrupt_frame,
    )
    try:
        if max_frames == 0:
            return
        try:
            for decoded in loop:
                seq = decoded.index
                if seq % step:
                    continue
                vf = decoded.frame
                ts_ms = _timestamp_ms(vf, stream, start, seq, fps)
                ts_ms = max(ts_ms, last_ts)  # keep timestamps monotonic on broken pts
                last_ts = ts_ms
                image = vf.to_ndarray(format="bgr24")
                yield Frame(seq=seq, ts_ms=ts_ms, image=np.ascontiguousarray(image))
                yielded += 1
                if max_frames is not None and yielded >= max_frames:
                    return
        except ReadError as exc:
            # A read error in the container (e.g. a truncated file): end of usable data.
            if not loop.frames:
                raise SourceError(f"cannot read video source {shown}: {exc}") from None
            log.warning(
                "%sstopping read of %s after frame %d: %s",
                prefix,
                shown,
                loop.frames - 1,
                redact_url(str(exc.error)),
            )
        except BadPacketsError as exc:
            raise SourceError(f"video source {shown} is corrupt: {exc}") from None
        if not loop.frames and loop.bad_packets:
            raise SourceError(
                f"no decodable frames in video source {shown} "
                f"({loop.bad_packets} packets failed to decode)"
            )
        if loop.frames and loop.corrupt_frames == loop.frames:
            raise SourceError(
                f"no usable frames in video source {shown} "
                f"(all {loop.frames} decoded frames are flagged corrupt)"
            )
        expected, exact = _expected_frames(container, stream)
        if _ended_early(loop.frames, expected, exact):
            log.warning(
                "%s%s ended early at frame %d of %d%s (truncated or damaged)",
                prefix,
                shown,
                loop.frames,
                expected,
                "" if exact else " expected from its duration",
            )
    finally:
        container.close()


def _timestamp_ms(vf: Any, stream: Any, start: int | None, seq: int, fps: float) -> int:
    pts = vf.pts
    time_base = vf.time_base or stream.time_base
    if pts is not None and time_base is not None:
        if start is not None:
            pts -= start
        return int(round(float(pts * time_base) * 1000.0))
    if fps > 0:
        return int(round(seq / fps * 1000.0))
    return 0


def numbered_images(path: Path) -> list[tuple[int, Path]]:
    """Images in ``path`` with an integer stem, sorted by that number."""
    found: dict[int, Path] = {}
    skipped = 0
    for entry in path.iterdir():
        if not entry.is_file() or entry.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        stem = entry.stem
        if not stem.isdigit():
            skipped += 1
            continue
        index = int(stem)
        if index in found:
            keep, drop = sorted([found[index], entry])
            log.warning(
                "frame folder %s: %s and %s have the same number; using %s",
                path,
                keep.name,
                drop.name,
                keep.name,
            )
            found[index] = keep
            continue
        found[index] = entry
    if skipped:
        log.warning("frame folder %s: ignoring %d image(s) without a numeric name", path, skipped)
    return sorted(found.items())


def iter_frame_dir(
    path: PathLike,
    *,
    max_frames: int | None = None,
    step: int = 1,
    fps: float = DEFAULT_DIR_FPS,
    on_skip: SkipListener | None = None,
) -> Iterator[Frame]:
    """Yield frames from a folder of numbered images (STC layout ``000.jpg, 001.jpg, ...``).

    Images are ordered by the number in their stem, which is also their ``seq``;
    ``ts_ms = seq / fps * 1000``. With ``step`` > 1 only images whose number is a
    multiple of ``step`` are read. A missing or empty folder raises :class:`SourceError`
    at call time. An image that cannot be decoded raises :class:`SourceError` naming the
    file when it is reached -- unless ``on_skip`` is given: then it is logged, skipped and
    ``on_skip`` is told.
    """
    _check_limits(max_frames, step)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    p = Path(path)
    if not p.exists():
        raise SourceError(f"frame folder not found: {p}")
    if not p.is_dir():
        raise SourceError(f"not a frame folder: {p}")
    images = numbered_images(p)
    if not images:
        raise SourceError(
            f"frame folder is empty: {p} (no numbered {'/'.join(sorted(IMAGE_SUFFIXES))} files)"
        )
    return _read_images(images, max_frames, step, fps, on_skip)


def _read_images(
    images: list[tuple[int, Path]],
    max_frames: int | None,
    step: int,
    fps: float,
    on_skip: SkipListener | None = None,
) -> Iterator[Frame]:
    yielded = 0
    for index, file in images:
        if max_frames is not None and yielded >= max_frames:
            return
        if index % step:
            continue
        try:
            image = _read_image(file)
        except SourceError as exc:
            if on_skip is None:
                raise
            log.warning("skipping frame %d: %s", index, exc)
            on_skip(index, "unreadable image")
            continue
        yield Frame(seq=index, ts_ms=int(round(index / fps * 1000.0)), image=image)
        yielded += 1


def _image_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read image {file}: {exc}") from None


def read_image_file(file: Path) -> tuple[np.ndarray, bytes]:
    """Decode an image file; returns the BGR image and the file's bytes (SourceError if unreadable)."""
    data = _image_bytes(file)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise SourceError(f"unreadable image {file}: not a valid image or truncated")
    return image, data


def read_jpeg_file(file: Path) -> bytes | None:
    """A JPEG file's bytes, checked without a full decode: a readable frame header and an
    entropy-coded image that decodes at 1/8 scale. ``None`` if the file is not a JPEG
    (the caller decodes it as any image); SourceError if it is unreadable."""
    data = _image_bytes(file)
    if not data.startswith(JPEG_MAGIC):
        return None
    try:
        jpeg_size(data)
    except MessageError as exc:
        raise SourceError(f"unreadable image {file}: {exc}") from None
    if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8) is None:
        raise SourceError(f"unreadable image {file}: not a valid image or truncated")
    return data


def _read_image(file: Path) -> np.ndarray:
    return read_image_file(file)[0]


def iter_frames(path: PathLike, **kw: Any) -> Iterator[Frame]:
    """Frames from a frame folder (if ``path`` is a directory) or a video file / URL.

    Keyword arguments go to :func:`iter_frame_dir` or :func:`iter_video_frames`.
    """
    if not _is_url(path) and Path(path).is_dir():
        return iter_frame_dir(path, **kw)
    return iter_video_frames(path, **kw)


def video_info(path: PathLike) -> VideoInfo:
    """Size, frame rate and (possibly estimated) frame count of a video or frame folder.

    For a frame folder the size comes from the first readable image (unreadable ones are
    passed over: reading skips them too), ``fps`` is :data:`DEFAULT_DIR_FPS` and
    ``frames`` is the number of numbered images.
    """
    if not _is_url(path) and Path(path).is_dir():
        p = Path(path)
        images = numbered_images(p)
        if not images:
            raise SourceError(f"frame folder is empty: {p}")
        for _index, file in images:
            try:
                h, w = _read_image(file).shape[:2]
            except SourceError:
                continue
            return VideoInfo(width=w, height=h, fps=DEFAULT_DIR_FPS, frames=len(images))
        raise SourceError(f"no readable image in frame folder {p} ({len(images)} unreadable)")
    container, stream = _open_input(path)
    try:
        fps = _stream_fps(stream)
        frames, _exact = _expected_frames(container, stream)
        cc = stream.codec_context
        return VideoInfo(width=int(cc.width), height=int(cc.height), fps=fps, frames=frames)
    finally:
        container.close()

"""Video output: write BGR frames as H.264 MP4 clips (``mpeg4`` where x264 is missing)."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

from streamer.decode import AV_ERRORS
from streamer.video import SourceError

__all__ = ["VideoWriter"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


@functools.cache
def _pick_codec() -> str:
    """``libx264`` if this PyAV build can encode with it, else ``mpeg4`` (decided, and
    warned about, once per process)."""
    if "libx264" in av.codecs_available:
        try:
            av.codec.Codec("libx264", "w")
            return "libx264"
        except (av.FFmpegError, ValueError):  # listed but not usable
            pass
    log.warning("PyAV has no libx264 encoder; writing MP4 with mpeg4 instead")
    return "mpeg4"


class VideoWriter:
    """Write BGR frames to an MP4 file (H.264 ``yuv420p``; ``mpeg4`` if x264 is missing).

    ``width``/``height`` are the size of the frames passed to :meth:`write`. H.264 with
    4:2:0 chroma needs even dimensions, so an odd width or height is padded by one pixel
    (edge-replicated) in the file. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        path: PathLike,
        fps: float,
        width: int,
        height: int,
        *,
        crf: int = 23,
        gop: int | None = None,
    ) -> None:
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be a positive number, got {fps}")
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        self.path = Path(path)
        self.width = int(width)
        self.height = int(height)
        self._out_w = self.width + self.width % 2
        self._out_h = self.height + self.height % 2
        self.codec = _pick_codec()
        self.frames_written = 0
        self._closed = False
        rate = Fraction(fps).limit_denominator(1001)
        try:
            self._container = av.open(
                os.fspath(self.path), mode="w", format="mp4", options={"movflags": "+faststart"}
            )
        except AV_ERRORS as exc:
            raise SourceError(f"cannot create video file {self.path}: {exc}") from None
        try:
            stream = self._container.add_stream(self.codec, rate=rate)
            stream.width = self._out_w
            stream.height = self._out_h
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = 1 / rate
            if gop is not None:
                stream.codec_context.gop_size = int(gop)
            if self.codec == "libx264":
                stream.options = {"crf": str(int(crf)), "preset": "veryfast"}
            else:
                # mpeg4 has no CRF; qscale 2..31 roughly tracks it (lower = better).
                stream.codec_context.qscale = max(2, min(31, int(crf) // 5))
                stream.codec_context.bit_rate = 0
        except Exception:
            self._container.close()
            raise
        self._stream = stream

    def write(self, bgr: np.ndarray) -> None:
        """Append one frame: BGR ``uint8`` ``(height, width, 3)`` (grayscale HxW accepted)."""
        if self._closed:
            raise ValueError(f"write to closed VideoWriter ({self.path})")
        image = np.asarray(bgr)
        if image.dtype != np.uint8:
            raise ValueError(f"frame dtype must be uint8, got {image.dtype}")
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if image.shape != (self.height, self.width, 3):
            raise ValueError(
                f"frame shape {image.shape} does not match the writer's "
                f"{(self.height, self.width, 3)}"
            )
        if (self._out_w, self._out_h) != (self.width, self.height):
            image = cv2.copyMakeBorder(
                image,
                0,
                self._out_h - self.height,
                0,
                self._out_w - self.width,
                cv2.BORDER_REPLICATE,
            )
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        vf = vf.reformat(format="yuv420p")
        vf.pts = self.frames_written
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:  # best effort: do not leave an encoder open
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.close()

"""The one decode loop behind video files and RTSP streams: demux a container's video stream
packet by packet, decode each packet and yield the decoded PyAV frames.

The loop's policy is the same for every source; what differs between a file and a live
stream is passed in explicitly:

* a packet that fails to decode is skipped (``on_bad_packet`` is told), but
  ``max_bad_packets`` failures *in a row* raise :class:`BadPacketsError` -- that is a
  broken source, not a corrupt frame (files: :data:`FILE_MAX_BAD_PACKETS`, live streams:
  :data:`LIVE_MAX_BAD_PACKETS`); a packet that decodes, even to no frame, resets the count;
* a frame the decoder flags corrupt (PyAV's ``is_corrupt``: decoded with errors, e.g.
  concealed after lost data) is skipped too (``on_corrupt_frame`` is told): it keeps its
  index (``seq`` leaves a gap), so the frames after it keep theirs;
* an error reading the container raises :class:`ReadError` (the caller decides whether
  that ends a file or loses a stream);
* ``stall_s``: a packet arriving more than this long after the last decoded frame raises
  :class:`StallError` (the RTSP watchdog; ``None`` for files);
* ``stop``: checked before each packet is decoded; when set the loop ends quietly.

:data:`AV_ERRORS` are the exceptions that mean "PyAV could not do it"; ``EOFError`` is one
of them everywhere (PyAV's own ``av.EOFError`` is also an ``av.FFmpegError``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import av

from common.redact import redact_url

__all__ = [
    "AV_ERRORS",
    "FILE_MAX_BAD_PACKETS",
    "LIVE_MAX_BAD_PACKETS",
    "BadPacketListener",
    "BadPacketsError",
    "CorruptFrameListener",
    "DecodeLoop",
    "DecodeLoopError",
    "Decoded",
    "ReadError",
    "StallError",
]

#: What PyAV raises when it cannot open, read or decode something.
AV_ERRORS: tuple[type[BaseException], ...] = (av.FFmpegError, OSError, ValueError, EOFError)

#: A file whose decoder fails this many packets in a row is corrupt: give up on it.
FILE_MAX_BAD_PACKETS = 100
#: A live stream whose decoder fails this many packets in a row is broken: reconnect.
LIVE_MAX_BAD_PACKETS = 50

#: ``on_bad_packet(error, frames)``: a packet failed to decode after ``frames`` decoded frames.
BadPacketListener = Callable[[BaseException, int], None]
#: ``on_corrupt_frame(index)``: the frame with this index was flagged corrupt and skipped.
CorruptFrameListener = Callable[[int], None]


class DecodeLoopError(Exception):
    """The decode loop gave up; the message says why (credentials redacted)."""


class ReadError(DecodeLoopError):
    """Reading the next packet from the container failed; ``error`` is PyAV's exception."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {redact_url(str(error))}")
        self.error = error


class BadPacketsError(DecodeLoopError):
    """``count`` packets in a row failed to decode."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} packets in a row failed to decode")
        self.count = count


class StallError(DecodeLoopError):
    """No frame was decoded for ``idle_s`` seconds, more than the allowed ``limit_s``."""

    def __init__(self, idle_s: float, limit_s: float) -> None:
        super().__init__(f"no frame for {idle_s:.1f} s (watchdog {limit_s:g} s)")
        self.idle_s = idle_s
        self.limit_s = limit_s


@dataclass(frozen=True)
class Decoded:
    """One decoded frame: ``frame`` (a PyAV ``VideoFrame``), ``index`` (0-based, among the
    frames this loop decoded) and ``at_s`` (``time.monotonic()`` when its packet arrived)."""

    frame: Any
    index: int
    at_s: float


class DecodeLoop:
    """Decode ``stream`` of ``container`` once, with the policy described in the module doc.

    Iterate it once. ``frames``, ``bad_packets`` and ``corrupt_frames`` count the frames
    decoded (the skipped corrupt ones included), the packets that failed to decode and the
    corrupt frames skipped so far. The caller opens and closes the container.
    """

    def __init__(
        self,
        container: Any,
        stream: Any,
        *,
        max_bad_packets: int,
        stall_s: float | None = None,
        stop: threading.Event | None = None,
        on_bad_packet: BadPacketListener | None = None,
        on_corrupt_frame: CorruptFrameListener | None = None,
    ) -> None:
        if max_bad_packets < 1:
            raise ValueError(f"max_bad_packets must be >= 1, got {max_bad_packets}")
        self._container = container
        self._stream = stream
        self._max_bad_packets = max_bad_packets
        self._stall_s = stall_s
        self._stop = stop
        self._on_bad_packet = on_bad_packet
        self._on_corrupt_frame = on_corrupt_frame
        #: frames decoded so far (corrupt ones included)
        self.frames = 0
        #: packets that failed to decode so far (in all, not only in a row)
        self.bad_packets = 0
        #: frames flagged corrupt by the decoder and skipped so far
        self.corrupt_frames = 0

    def __iter__(self) -> Iterator[Decoded]:
        packets = self._container.demux(self._stream)
        last_frame = time.monotonic()
        in_a_row = 0
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except AV_ERRORS as exc:
                raise ReadError(exc) from None
            if self._stop is not None and self._stop.is_set():
                return
            now = time.monotonic()
            if self._stall_s is not None and now - last_frame > self._stall_s:
                raise StallError(now - last_frame, self._stall_s)
            try:
                frames = packet.decode()
            except AV_ERRORS as exc:
                self.bad_packets += 1
                in_a_row += 1
                if self._on_bad_packet is not None:
                    self._on_bad_packet(exc, self.frames)
                if in_a_row >= self._max_bad_packets:
                    raise BadPacketsError(in_a_row) from None
                continue
            in_a_row = 0
            for vf in frames:
                index = self.frames
                self.frames += 1
                last_frame = now  # a corrupt frame is still a stream that delivers
                if getattr(vf, "is_corrupt", False):
                    self.corrupt_frames += 1
                    if self._on_corrupt_frame is not None:
                        self._on_corrupt_frame(index)
                    continue
                yield Decoded(frame=vf, index=index, at_s=now)

"""The one decode loop (streamer.decode) and its policy as files and RTSP see it, on fake
PyAV containers: bad packets, read errors (EOFError included), stalls and stop."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest

from streamer import decode, sources, video
from streamer.camera import CameraConfig
from streamer.decode import (
    FILE_MAX_BAD_PACKETS,
    LIVE_MAX_BAD_PACKETS,
    BadPacketsError,
    DecodeLoop,
    ReadError,
    StallError,
)
from streamer.sources import CapturedFrame, RtspSource
from streamer.video import Frame, SourceError

SHOWN = "fake.mp4"
TIME_BASE = Fraction(1, 10)  # one pts step = 100 ms


# ----------------------------------------------------------------------------- fakes


class FakeFrame:
    """A decoded PyAV frame: ``pts`` in 1/10 s, a 4x4 picture whose pixels are ``pts``;
    ``is_corrupt`` as PyAV flags a frame decoded with errors."""

    def __init__(self, pts: int | None, is_corrupt: bool = False) -> None:
        self.pts = pts
        self.time_base = TIME_BASE if pts is not None else None
        self.is_corrupt = is_corrupt

    def to_ndarray(self, format: str) -> np.ndarray:
        assert format == "bgr24"
        return np.full((4, 4, 3), (self.pts or 0) % 256, np.uint8)


class FakePacket:
    """Decodes to ``frames``, or raises ``error``; ``delay`` s pass before it arrives."""

    def __init__(self, frames: tuple[FakeFrame, ...] = (), error: BaseException | None = None,
                 delay: float = 0.0) -> None:
        self.frames, self.error, self.delay = frames, error, delay
        self.decoded = False

    def decode(self) -> list[FakeFrame]:
        self.decoded = True
        if self.error is not None:
            raise self.error
        return list(self.frames)


class FakeContainer:
    """Demuxes ``items`` in order: a :class:`FakePacket` is yielded, an exception is raised.
    ``frames``: the frame count the stream declares (0: unknown)."""

    def __init__(self, items: list[FakePacket | BaseException], frames: int = 0) -> None:
        self.items = items
        self.stream = SimpleNamespace(start_time=0, time_base=TIME_BASE, average_rate=Fraction(10),
                                      guessed_rate=None, base_rate=None, frames=frames, duration=None)
        self.duration = None
        self.streams = SimpleNamespace(video=[self.stream])
        self.closed = False

    def demux(self, stream: Any) -> Iterator[FakePacket]:
        assert stream is self.stream
        for item in self.items:
            if isinstance(item, BaseException):
                raise item
            if item.delay:
                time.sleep(item.delay)
            yield item

    def close(self) -> None:
        self.closed = True


def good(*pts: int) -> list[FakePacket | BaseException]:
    """One packet per frame, with these pts."""
    return [FakePacket((FakeFrame(p),)) for p in pts]


def bad(n: int, error: BaseException | None = None) -> list[FakePacket | BaseException]:
    """``n`` packets that fail to decode."""
    return [FakePacket(error=error or av.InvalidDataError(1094995529, "Invalid data")) for _ in range(n)]


def corrupt(*pts: int) -> list[FakePacket | BaseException]:
    """One packet per frame, with these pts, each frame flagged corrupt by the decoder."""
    return [FakePacket((FakeFrame(p, is_corrupt=True),)) for p in pts]


def read_file(items: list[FakePacket | BaseException], max_frames: int | None = None,
              step: int = 1, declared: int = 0, skipped: list[tuple[int, str]] | None = None,
              who: str | None = None) -> tuple[list[Frame], BaseException | None, FakeContainer]:
    """What :func:`streamer.video.iter_video_frames` yields for a file with these packets
    (and ``declared`` frames in its header); skipped frames are added to ``skipped``."""
    container = FakeContainer(items, declared)
    frames: list[Frame] = []
    on_skip = None if skipped is None else (lambda seq, what: skipped.append((seq, what)))
    try:
        for frame in video._decode(container, container.stream, SHOWN, max_frames, step, on_skip=on_skip,
                                   who=who):
            frames.append(frame)
    except SourceError as exc:
        return frames, exc, container
    return frames, None, container


def rtsp_camera(**kw: Any) -> CameraConfig:
    return CameraConfig(id="gate", url="rtsp://viewer:s3cret@10.0.0.5/cam", scene="01", warmup_frames=2,
                        reconnect_initial_s=0.01, reconnect_max_s=0.01, **kw)


def read_rtsp(items: list[FakePacket | BaseException], source: RtspSource | None = None,
              ) -> tuple[list[CapturedFrame], BaseException | None]:
    """What one RTSP connection (:meth:`RtspSource._read`) yields for these packets."""
    source = source or RtspSource(rtsp_camera())
    frames: list[CapturedFrame] = []
    try:
        for frame in source._read(FakeContainer(items)):
            frames.append(frame)
    except sources._StreamLost as exc:
        return frames, exc
    return frames, None


# ----------------------------------------------------------------------------- the loop itself


def test_limits_are_todays() -> None:
    assert (FILE_MAX_BAD_PACKETS, LIVE_MAX_BAD_PACKETS) == (100, 50)
    assert EOFError in decode.AV_ERRORS and issubclass(av.EOFError, av.FFmpegError)
    assert video.AV_ERRORS is sources.AV_ERRORS is decode.AV_ERRORS  # one set for files and RTSP


def test_loop_yields_frames_with_index_and_counts_bad_packets() -> None:
    seen: list[tuple[str, int]] = []
    container = FakeContainer(good(0) + bad(2) + [FakePacket((FakeFrame(1), FakeFrame(2)))] + bad(1))
    loop = DecodeLoop(container, container.stream, max_bad_packets=3,
                      on_bad_packet=lambda exc, frames: seen.append((type(exc).__name__, frames)))
    decoded = list(loop)
    assert [d.index for d in decoded] == [0, 1, 2] and [d.frame.pts for d in decoded] == [0, 1, 2]
    assert decoded[1].at_s == decoded[2].at_s  # frames of one packet share its arrival time
    assert (loop.frames, loop.bad_packets) == (3, 3)
    assert seen == [("InvalidDataError", 1), ("InvalidDataError", 1), ("InvalidDataError", 3)]
    assert not container.closed  # the caller closes


@pytest.mark.parametrize("limit", [1, 3, 50])
def test_loop_gives_up_after_limit_bad_packets_in_a_row(limit: int) -> None:
    container = FakeContainer(good(0) + bad(limit - 1) + good(1) + bad(limit) + good(2))
    loop = DecodeLoop(container, container.stream, max_bad_packets=limit)
    got: list[int] = []
    with pytest.raises(BadPacketsError, match=f"^{limit} packets in a row failed to decode$") as info:
        got.extend(d.frame.pts for d in loop)
    assert got == [0, 1] and info.value.count == limit and loop.bad_packets == 2 * limit - 1
    assert not container.items[-1].decoded  # nothing after the limit is decoded


def test_a_packet_that_decodes_to_no_frame_resets_the_count() -> None:
    container = FakeContainer(bad(2) + [FakePacket(())] + bad(2) + good(7))
    loop = DecodeLoop(container, container.stream, max_bad_packets=3)
    assert [d.frame.pts for d in loop] == [7] and loop.bad_packets == 4


@pytest.mark.parametrize("error", [EOFError("eof"), av.EOFError(541478725, "End of file"),
                                   ValueError("bad"), OSError("io")])
def test_every_av_error_from_decode_is_a_bad_packet(error: BaseException) -> None:
    container = FakeContainer(bad(1, error) + good(3))
    loop = DecodeLoop(container, container.stream, max_bad_packets=2)
    assert [d.frame.pts for d in loop] == [3] and loop.bad_packets == 1


def test_other_errors_from_decode_propagate() -> None:
    container = FakeContainer(bad(1, KeyError("bug")) + good(3))
    with pytest.raises(KeyError):
        list(DecodeLoop(container, container.stream, max_bad_packets=5))


@pytest.mark.parametrize("error", [EOFError("eof"), av.EOFError(541478725, "End of file"),
                                   OSError("reset by peer")])
def test_read_error_is_wrapped_with_the_cause(error: BaseException) -> None:
    container = FakeContainer([*good(0), error, *good(1)])
    loop = DecodeLoop(container, container.stream, max_bad_packets=5)
    got: list[int] = []
    with pytest.raises(ReadError) as info:
        got.extend(d.frame.pts for d in loop)
    assert got == [0] and info.value.error is error
    assert str(info.value) == f"{type(error).__name__}: {error}"


def test_read_error_message_redacts_credentials() -> None:
    container = FakeContainer([OSError("cannot reach rtsp://admin:hunter2@10.0.0.5/s")])
    with pytest.raises(ReadError) as info:
        list(DecodeLoop(container, container.stream, max_bad_packets=5))
    assert "hunter2" not in str(info.value) and "rtsp://***@10.0.0.5/s" in str(info.value)


def test_stall_is_measured_from_the_last_frame() -> None:
    slow = [FakePacket((FakeFrame(1),), delay=0.15)]
    container = FakeContainer(good(0) + slow)
    with pytest.raises(StallError, match=r"^no frame for 0\.\d s \(watchdog 0\.1 s\)$") as info:
        list(DecodeLoop(container, container.stream, max_bad_packets=5, stall_s=0.1))
    assert info.value.idle_s >= 0.15 and info.value.limit_s == 0.1
    assert not slow[0].decoded
    container = FakeContainer(good(0) + [FakePacket((FakeFrame(1),), delay=0.15)])
    assert len(list(DecodeLoop(container, container.stream, max_bad_packets=5))) == 2  # no stall_s


def test_stop_ends_the_loop_before_the_next_packet_is_decoded() -> None:
    stop = threading.Event()
    container = FakeContainer(good(0, 1, 2))
    got = []
    for d in DecodeLoop(container, container.stream, max_bad_packets=5, stop=stop):
        got.append(d.frame.pts)
        stop.set()
    assert got == [0] and not container.items[1].decoded


def test_loop_skips_frames_flagged_corrupt_keeping_their_index() -> None:
    seen: list[int] = []
    container = FakeContainer(good(0) + corrupt(1, 2) + good(3))
    loop = DecodeLoop(container, container.stream, max_bad_packets=3, on_corrupt_frame=seen.append)
    decoded = list(loop)
    assert [(d.index, d.frame.pts) for d in decoded] == [(0, 0), (3, 3)]
    assert seen == [1, 2] and (loop.frames, loop.corrupt_frames, loop.bad_packets) == (4, 2, 0)


def test_max_bad_packets_must_be_positive() -> None:
    container = FakeContainer([])
    with pytest.raises(ValueError, match="max_bad_packets"):
        DecodeLoop(container, container.stream, max_bad_packets=0)


# ----------------------------------------------------------------------------- files


def test_file_skips_up_to_99_bad_packets_in_a_row(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streamer.video"):
        frames, error, container = read_file(good(0) + bad(FILE_MAX_BAD_PACKETS - 1) + good(1, 2))
    assert error is None and container.closed
    assert [(f.seq, f.ts_ms) for f in frames] == [(0, 0), (1, 100), (2, 200)]
    skipped = [r for r in caplog.records if "skipping undecodable packet" in r.getMessage()]
    assert len(skipped) == FILE_MAX_BAD_PACKETS - 1
    assert skipped[0].getMessage() == f"skipping undecodable packet in {SHOWN} (after frame 0): " \
                                      "[Errno 1094995529] Invalid data"


def test_file_with_100_bad_packets_in_a_row_is_corrupt() -> None:
    frames, error, container = read_file(good(0) + bad(FILE_MAX_BAD_PACKETS) + good(1))
    assert [f.seq for f in frames] == [0] and container.closed
    assert str(error) == f"video source {SHOWN} is corrupt: 100 packets in a row failed to decode"


def test_file_with_only_bad_packets_has_no_decodable_frames() -> None:
    frames, error, container = read_file(bad(3) + [FakePacket(())])
    assert not frames and container.closed
    assert str(error) == f"no decodable frames in video source {SHOWN} (3 packets failed to decode)"


@pytest.mark.parametrize("cause", [EOFError("truncated"), OSError("truncated")])
def test_file_read_error_after_a_frame_ends_the_file(cause: BaseException,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streamer.video"):
        frames, error, container = read_file([*good(0, 1), cause, *good(2)])
    assert error is None and [f.seq for f in frames] == [0, 1] and container.closed
    assert f"stopping read of {SHOWN} after frame 1: truncated" in caplog.text


@pytest.mark.parametrize("cause", [EOFError("truncated"), av.InvalidDataError(1094995529, "Invalid data")])
def test_file_read_error_before_any_frame_is_a_source_error(cause: BaseException) -> None:
    frames, error, container = read_file([*bad(2), cause])
    assert not frames and container.closed
    assert str(error) == f"cannot read video source {SHOWN}: {type(cause).__name__}: {cause}"


def test_file_eof_from_the_decoder_is_a_skipped_packet() -> None:
    frames, error, _ = read_file(good(0) + bad(1, EOFError("decoder flushed")) + good(1))
    assert error is None and [f.seq for f in frames] == [0, 1]


def test_file_seq_step_max_frames_and_monotonic_ts() -> None:
    items = good(0, 1, 2) + bad(1) + good(3, 2, 5, 6)  # pts 2 after 3: broken timing
    frames, error, _ = read_file(items)
    assert error is None and [f.seq for f in frames] == list(range(7))
    assert [f.ts_ms for f in frames] == [0, 100, 200, 300, 300, 500, 600]
    frames, _, _ = read_file(items, step=2)  # only yielded frames hold the timestamps back
    assert [(f.seq, f.ts_ms) for f in frames] == [(0, 0), (2, 200), (4, 200), (6, 600)]
    frames, _, container = read_file(items, max_frames=2)
    assert [f.seq for f in frames] == [0, 1] and container.closed
    frames, _, container = read_file(items, max_frames=0)
    assert frames == [] and container.closed


def test_file_skips_and_reports_bad_packets_and_corrupt_frames(caplog: pytest.LogCaptureFixture) -> None:
    skipped: list[tuple[int, str]] = []
    with caplog.at_level(logging.WARNING, logger="streamer.video"):
        frames, error, _ = read_file(good(0) + bad(1) + corrupt(1) + good(2), skipped=skipped,
                                     who="camera gate")
    assert error is None and [f.seq for f in frames] == [0, 2]  # the corrupt frame keeps seq 1
    assert skipped == [(1, "undecodable packet"), (1, "corrupt frame")]
    assert f"camera gate: skipping frame 1 of {SHOWN}: the decoder flags it corrupt" in caplog.text
    assert f"camera gate: skipping undecodable packet in {SHOWN} (after frame 0)" in caplog.text


def test_file_of_corrupt_frames_only_has_no_usable_frames() -> None:
    frames, error, _ = read_file(corrupt(0, 1, 2))
    assert not frames
    assert str(error) == (f"no usable frames in video source {SHOWN} "
                          "(all 3 decoded frames are flagged corrupt)")


def test_file_that_ends_before_its_declared_frames_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streamer.video"):
        frames, error, _ = read_file(good(*range(25)), declared=120, who="camera gate")
    assert error is None and len(frames) == 25
    assert [r.getMessage() for r in caplog.records] == [
        f"camera gate: {SHOWN} ended early at frame 25 of 120 (truncated or damaged)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamer.video"):
        read_file([*good(0, 1), EOFError("truncated")], declared=10)  # a read error, too
        read_file(good(*range(119)), declared=120)  # within the slack (edit lists)
        read_file(good(*range(5)), declared=120, max_frames=5)  # asked for 5: not early
        read_file(good(*range(5)), declared=0)  # nothing declared
    early = [r.getMessage() for r in caplog.records if "ended early" in r.getMessage()]
    assert early == [f"{SHOWN} ended early at frame 2 of 10 (truncated or damaged)"]


def test_file_without_pts_times_frames_by_rate() -> None:
    frames, _, _ = read_file([FakePacket((FakeFrame(None), FakeFrame(None)))])
    assert [f.ts_ms for f in frames] == [0, 100]


# ----------------------------------------------------------------------------- RTSP


def test_rtsp_skips_up_to_49_bad_packets_in_a_row(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="streamer.sources"):
        frames, lost = read_rtsp(good(0) + bad(LIVE_MAX_BAD_PACKETS - 1) + good(1, 2))
    assert lost is None and [f.seq for f in frames] == [0, 1, 2]
    skipped = [r for r in caplog.records if "undecodable packet" in r.getMessage()]
    assert len(skipped) == LIVE_MAX_BAD_PACKETS - 1 and {r.levelno for r in skipped} == {logging.DEBUG}
    assert skipped[0].getMessage() == "camera gate: undecodable packet: InvalidDataError: " \
                                      "[Errno 1094995529] Invalid data"


def test_rtsp_50_bad_packets_in_a_row_lose_the_stream() -> None:
    frames, lost = read_rtsp(good(0) + bad(LIVE_MAX_BAD_PACKETS) + good(1))
    assert [f.seq for f in frames] == [0]
    assert str(lost) == "50 packets in a row failed to decode"


def test_rtsp_eof_from_the_decoder_is_a_skipped_packet() -> None:
    frames, lost = read_rtsp(good(0) + bad(1, EOFError("decoder flushed")) + good(1))
    assert lost is None and [f.seq for f in frames] == [0, 1]


@pytest.mark.parametrize("frames_first", [0, 2])
def test_rtsp_read_error_loses_the_stream(frames_first: int) -> None:
    frames, lost = read_rtsp([*good(*range(frames_first)), EOFError("connection closed")])
    assert len(frames) == frames_first and str(lost) == "EOFError: connection closed"


def test_rtsp_only_bad_packets_end_the_stream_without_loss() -> None:
    frames, lost = read_rtsp(bad(3))
    assert frames == [] and lost is None


def test_rtsp_watchdog_loses_the_stream() -> None:
    source = RtspSource(rtsp_camera(watchdog_s=0.1))
    frames, lost = read_rtsp(good(0) + [FakePacket((FakeFrame(1),), delay=0.2)], source)
    assert [f.seq for f in frames] == [0]
    assert isinstance(lost, sources._StreamLost) and str(lost).startswith("no frame for 0.")
    assert str(lost).endswith(" s (watchdog 0.1 s)")


def test_rtsp_seq_warmup_and_time_across_connections() -> None:
    source = RtspSource(rtsp_camera(fps=5))  # 10 fps of pts sampled to 5 fps
    first, _ = read_rtsp(good(10, 11, 12, 13), source)
    second, _ = read_rtsp(bad(1) + good(50, 51, 52), source)
    assert [f.seq for f in first] == [0, 2] and [f.seq for f in second] == [4, 6]
    assert [f.warmup for f in first] == [True, False] and [f.warmup for f in second] == [True, False]
    assert source.frames_decoded == 7
    assert all(a.ts_ms <= b.ts_ms for a, b in itertools.pairwise(first + second))
    assert float(second[0].image.mean()) == 50.0


def test_rtsp_skips_and_counts_corrupt_frames_and_bad_packets() -> None:
    source = RtspSource(rtsp_camera())
    skipped: list[tuple[int, str]] = []
    source.on_skip = lambda seq, what: skipped.append((seq, what))
    frames, lost = read_rtsp(good(0) + corrupt(1) + bad(1) + good(2), source)
    assert lost is None and [f.seq for f in frames] == [0, 2]  # the corrupt frame's seq 1 is a gap
    assert skipped == [(1, "corrupt frame"), (2, "undecodable packet")]
    assert source.frames_skipped == 2 and source.frames_decoded == 3


def test_rtsp_stop_ends_the_connection_quietly() -> None:
    stop = threading.Event()
    source = RtspSource(rtsp_camera(), stop)
    container = FakeContainer(good(0, 1, 2))
    got = []
    for frame in source._read(container):
        got.append(frame.seq)
        stop.set()
    assert got == [0] and not container.items[1].decoded


@pytest.mark.parametrize(("items", "reason"), [
    ([*good(0), EOFError("connection closed")], "stream lost: EOFError: connection closed"),
    ([*good(0), OSError("reset by rtsp://viewer:s3cret@10.0.0.5/cam")],
     "stream lost: OSError: reset by rtsp://***@10.0.0.5/cam"),
    (good(0) + bad(LIVE_MAX_BAD_PACKETS), "stream lost: 50 packets in a row failed to decode"),
    (good(0), "the stream ended"),
])
def test_rtsp_reconnect_reason(items: list[FakePacket | BaseException], reason: str) -> None:
    stop = threading.Event()
    reasons: list[str] = []

    def reconnecting(attempt: int, delay: float, why: str) -> None:
        reasons.append(why)
        stop.set()

    source = RtspSource(rtsp_camera(), stop, on_reconnect=reconnecting)
    container = FakeContainer(items)
    source._open = lambda: container  # type: ignore[method-assign]
    frames = list(source)
    assert [f.seq for f in frames] == [0] and container.closed and not source.connected
    assert reasons == [reason] and source.last_error == reason

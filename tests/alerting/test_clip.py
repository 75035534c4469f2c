"""The clip recorder: pre-roll, then only frames not fed yet, and nothing past the post-roll cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alerting.clip import ClipRecorder
from alerting.config import ClipSettings
from alerting.ring import FrameRing, RingEntry
from common.messages import encode_jpeg
from streamer.video import iter_frames

T0 = 1_700_000_000_000
STEP_MS = 100  # 10 fps


def frame(seq: int) -> RingEntry:
    image = np.full((48, 64, 3), (seq * 8) % 256, np.uint8)
    return RingEntry(seq, T0 + seq * STEP_MS, 64, 48, encode_jpeg(image))


def ring_upto(last: int, first: int = 0) -> FrameRing:
    ring = FrameRing(max_frames=1000, max_bytes=2**26)
    for seq in range(first, last + 1):
        ring.add(frame(seq))
    return ring


def settings(tmp_path: Path, **over) -> ClipSettings:
    return ClipSettings(**{"pre_roll_s": 0.5, "post_roll_s": 0.3, "overlay": False,
                           "tmp_dir": tmp_path / "clips", **over})


def decoded_frames(data: bytes, tmp_path: Path) -> int:
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    return sum(1 for _ in iter_frames(path))


def test_pre_roll_then_only_frames_not_fed_yet(tmp_path) -> None:
    ring = ring_upto(10)
    rec = ClipRecorder("cam", 10, settings(tmp_path))
    rec.start(ring, 10, T0 + 10 * STEP_MS)
    assert rec.clip is not None and rec.clip.seqs == [5, 6, 7, 8, 9, 10]  # 0.5 s of pre-roll
    assert rec.first_seq == 5 and rec.last_written_seq == 10 and rec.frames == 6
    for seq in range(11, 16):
        ring.add(frame(seq))
    rec.feed(ring, 12)
    assert rec.unfed(ring, 15) == [ring.get(13), ring.get(14), ring.get(15)]
    rec.feed(ring, 12)  # fed already: nothing
    rec.feed(ring, 11)
    rec.feed(ring, 15)
    assert rec.clip.seqs == list(range(5, 16)) and rec.unfed(ring, 15) == []
    # a gap in the ring (a frame that never came) is skipped, not waited for
    ring.add(frame(17))
    rec.feed(ring, 17)
    assert rec.clip.seqs == [*range(5, 16), 17] and rec.last_written_seq == 17
    assert not rec.post_roll_done(T0 + 10**6)  # the alert runs: no cut
    data = rec.finish()
    assert data is not None and decoded_frames(data, tmp_path) == rec.frames == 12
    assert not rec.clip.path.exists()


def test_post_roll_cut(tmp_path) -> None:
    ring = ring_upto(20)
    rec = ClipRecorder("cam", 10, settings(tmp_path, pre_roll_s=0.0))
    rec.start(ring, 10, T0 + 10 * STEP_MS)
    rec.feed(ring, 15)
    rec.end(T0 + 15 * STEP_MS)  # ended at frame 15: 0.3 s of post-roll, frames 16-18
    assert rec.cut_ts == T0 + 18 * STEP_MS
    rec.feed(ring, 17)
    assert rec.clip is not None and rec.clip.seqs == list(range(10, 18))
    assert not rec.post_roll_done(T0 + 17 * STEP_MS)
    rec.feed(ring, 20)  # frames past the cut are not taken
    assert rec.clip.seqs == list(range(10, 19)) and rec.last_written_seq == 18
    assert rec.post_roll_done(T0 + 18 * STEP_MS) and rec.post_roll_done(T0 + 20 * STEP_MS)
    data = rec.finish()
    assert data is not None and decoded_frames(data, tmp_path) == rec.frames == 9


def test_without_pre_roll_the_first_frame_fed_opens_the_clip_from_the_start(tmp_path) -> None:
    ring = ring_upto(9, first=8)  # frames before the start; the start frame (10) never came
    rec = ClipRecorder("cam", 10, settings(tmp_path, pre_roll_s=0.0))
    rec.start(ring, 10, T0 + 10 * STEP_MS)
    assert rec.clip is None and rec.frames == 0 and rec.first_seq is None and rec.last_written_seq is None
    assert rec.finish() is None
    for seq in (11, 12):
        ring.add(frame(seq))
    rec.feed(ring, 12)  # from the start seq on: frames 8 and 9 are not the alert's
    assert rec.clip is not None and rec.clip.seqs == [11, 12] and rec.first_seq == 11
    assert rec.last_written_seq == 12


def test_a_clip_that_cannot_be_opened_leaves_the_alert_without_one(tmp_path, caplog) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    ring = ring_upto(12)
    rec = ClipRecorder("cam", 10, settings(tmp_path, tmp_dir=blocker))
    rec.start(ring, 10, T0 + 10 * STEP_MS)
    rec.feed(ring, 12)
    assert rec.clip is None and rec.frames == 0 and rec.finish() is None
    assert "camera cam: cannot start a clip" in caplog.text
    rec.discard()  # nothing to drop: no error


@pytest.mark.parametrize("ended", [False, True])
def test_discard_removes_the_temporary_file(tmp_path, ended: bool) -> None:
    ring = ring_upto(12)
    rec = ClipRecorder("cam", 10, settings(tmp_path))
    rec.start(ring, 10, T0 + 10 * STEP_MS)
    if ended:
        rec.end(T0 + 12 * STEP_MS)
    rec.feed(ring, 12)
    assert rec.clip is not None and rec.clip.path.exists()
    rec.discard()
    assert not rec.clip.path.exists()

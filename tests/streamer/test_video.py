"""Tests for streamer.video: decoding files and frame folders, errors, writing MP4."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from streamer.video import (
    Frame,
    SourceError,
    iter_frame_dir,
    iter_frames,
    iter_video_frames,
    video_info,
)
from streamer.writer import VideoWriter

CLIP = Path(__file__).resolve().parents[2] / "vigil" / "data" / "campus_clip.mp4"
CLIP_FRAMES, CLIP_H, CLIP_W, CLIP_FPS = 120, 192, 256, 10.0


@pytest.fixture(scope="module")
def clip_frames() -> list[Frame]:
    return list(iter_video_frames(CLIP))


# --------------------------------------------------------------------------- shipped clip


def test_clip_is_small_and_present() -> None:
    assert CLIP.is_file()
    assert CLIP.stat().st_size < 1_000_000


def test_clip_frames_shape_and_order(clip_frames: list[Frame]) -> None:
    assert len(clip_frames) == CLIP_FRAMES
    for f in clip_frames:
        assert f.image.shape == (CLIP_H, CLIP_W, 3)
        assert f.image.dtype == np.uint8
    assert [f.seq for f in clip_frames] == list(range(CLIP_FRAMES))
    ts = [f.ts_ms for f in clip_frames]
    assert ts[0] == 0
    assert all(b > a for a, b in zip(ts, ts[1:], strict=False))
    assert ts[10] == pytest.approx(1000, abs=2)  # 10 fps


def test_clip_is_not_blank(clip_frames: list[Frame]) -> None:
    img = clip_frames[0].image
    assert 20 < float(img.mean()) < 235
    assert float(img.std()) > 10


def test_video_info() -> None:
    info = video_info(CLIP)
    assert (info.width, info.height) == (CLIP_W, CLIP_H)
    assert info.fps == pytest.approx(CLIP_FPS)
    assert info.frames == CLIP_FRAMES


def test_step_and_max_frames(clip_frames: list[Frame]) -> None:
    stepped = list(iter_video_frames(CLIP, step=7))
    assert [f.seq for f in stepped] == list(range(0, CLIP_FRAMES, 7))
    np.testing.assert_array_equal(stepped[2].image, clip_frames[14].image)

    first = list(iter_video_frames(CLIP, max_frames=5))
    assert [f.seq for f in first] == [0, 1, 2, 3, 4]

    both = list(iter_video_frames(CLIP, max_frames=3, step=10))
    assert [f.seq for f in both] == [0, 10, 20]
    assert [f.ts_ms for f in both] == [0, 1000, 2000]

    assert list(iter_video_frames(CLIP, max_frames=0)) == []


def test_bad_limits_rejected() -> None:
    with pytest.raises(ValueError):
        iter_video_frames(CLIP, step=0)
    with pytest.raises(ValueError):
        iter_video_frames(CLIP, max_frames=-1)


def test_iter_frames_dispatches(tmp_path: Path) -> None:
    assert [f.seq for f in iter_frames(CLIP, max_frames=2)] == [0, 1]
    cv2.imwrite(str(tmp_path / "0.png"), np.zeros((4, 6, 3), np.uint8))
    frames = list(iter_frames(tmp_path))
    assert len(frames) == 1 and frames[0].image.shape == (4, 6, 3)


# --------------------------------------------------------------------------- frame folders


def _write_numbered(folder: Path, names: list[str], h: int = 24, w: int = 32) -> None:
    for name in names:
        value = int(Path(name).stem)
        img = np.full((h, w, 3), value * 10, np.uint8)
        assert cv2.imwrite(str(folder / name), img)


def test_frame_dir_numeric_order(tmp_path: Path) -> None:
    _write_numbered(tmp_path, ["10.jpg", "2.jpg", "1.png", "000.jpg", "003.jpg"])
    (tmp_path / "notes.txt").write_text("not an image")
    frames = list(iter_frame_dir(tmp_path))
    assert [f.seq for f in frames] == [0, 1, 2, 3, 10]
    for f in frames:
        assert f.image.shape == (24, 32, 3)
        assert abs(float(f.image.mean()) - f.seq * 10) < 4  # right file, JPEG noise aside
    ts = [f.ts_ms for f in frames]
    assert ts == sorted(ts) and ts[0] == 0

    assert [f.seq for f in iter_frame_dir(tmp_path, max_frames=2)] == [0, 1]
    assert [f.seq for f in iter_frame_dir(tmp_path, step=2)] == [0, 2, 10]
    info = video_info(tmp_path)
    assert (info.width, info.height, info.frames) == (32, 24, 5)


def test_frame_dir_unreadable_image_names_file(tmp_path: Path) -> None:
    _write_numbered(tmp_path, ["000.jpg", "002.jpg"])
    bad = tmp_path / "001.jpg"
    bad.write_bytes(b"this is not a jpeg")
    frames = iter_frame_dir(tmp_path)
    assert next(frames).seq == 0
    with pytest.raises(SourceError, match="001.jpg"):
        next(frames)


def test_empty_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="empty") as info:
        iter_frame_dir(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(SourceError, match=str(tmp_path)):
        list(iter_frames(tmp_path))


# --------------------------------------------------------------------------- bad sources


def test_missing_path_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError) as info:
        list(iter_frames(missing))
    assert str(missing) in str(info.value)
    with pytest.raises(SourceError, match="nope.mp4"):
        video_info(missing)
    with pytest.raises(SourceError, match="not found"):
        iter_frame_dir(tmp_path / "no_dir")


def test_text_file_renamed_avi_raises(tmp_path: Path) -> None:
    fake = tmp_path / "fake.avi"
    fake.write_text("definitely not a video\n" * 50)
    with pytest.raises(SourceError) as info:
        list(iter_video_frames(fake))
    assert str(fake) in str(info.value)


def _collect_or_source_error(path: Path) -> list[Frame] | None:
    """Frames read from ``path``, or None if it raised SourceError (anything else fails)."""
    try:
        return list(iter_video_frames(path))
    except SourceError as exc:
        assert str(path) in str(exc)
        return None


def test_truncated_clip_does_not_crash(tmp_path: Path) -> None:
    data = CLIP.read_bytes()
    cut = tmp_path / "truncated.mp4"
    cut.write_bytes(data[: len(data) // 2])
    frames = _collect_or_source_error(cut)
    if frames is not None:
        assert 0 < len(frames) < CLIP_FRAMES
        assert all(f.image.shape == (CLIP_H, CLIP_W, 3) for f in frames)
        seqs = [f.seq for f in frames]
        assert seqs == sorted(set(seqs))


def test_corrupt_middle_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = bytearray(CLIP.read_bytes())
    rng = random.Random(0)
    mid = len(data) // 2
    for i in range(mid, mid + 3000):
        data[i] = rng.randrange(256)
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="streamer.video"):
        frames = _collect_or_source_error(bad)
    if frames is not None:
        assert len(frames) > CLIP_FRAMES // 2
        ts = [f.ts_ms for f in frames]
        assert ts == sorted(ts)


def test_libx264_used_when_available(tmp_path: Path) -> None:
    if "libx264" not in av.codecs_available:
        pytest.skip("this PyAV build has no libx264")
    with VideoWriter(tmp_path / "x.mp4", 10.0, 16, 16) as writer:
        writer.write(np.zeros((16, 16, 3), np.uint8))
    assert writer.codec == "libx264"


# --------------------------------------------------------------------------- redaction


def test_url_error_does_not_leak_credentials() -> None:
    url = "bogusproto://admin:s3cretPW@camera.invalid/live"  # fails fast, no network
    with pytest.raises(SourceError) as info:
        iter_frames(url)
    assert "s3cretPW" not in str(info.value)
    assert "camera.invalid" in str(info.value)

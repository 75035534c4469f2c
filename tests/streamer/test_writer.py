"""streamer.writer: H.264 MP4 clips (mpeg4 where x264 is missing) that read back as written."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import pytest

from streamer import writer as writer_mod
from streamer.video import iter_video_frames, video_info
from streamer.writer import VideoWriter


def _pattern(i: int, h: int, w: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = 40 + 15 * i  # blue ramps with the frame index
    img[: h // 2, :, 2] = 200  # red top half
    return img


def test_video_writer_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 10.0, 64, 48) as writer:
        for i in range(10):
            writer.write(_pattern(i, 48, 64))
    assert writer.frames_written == 10
    frames = list(iter_video_frames(out))
    assert len(frames) == 10
    assert all(f.image.shape == (48, 64, 3) for f in frames)
    assert [f.ts_ms for f in frames] == [i * 100 for i in range(10)]
    # colours survive the lossy round trip approximately
    assert abs(float(frames[9].image[..., 0].mean()) - (40 + 15 * 9)) < 12
    assert float(frames[0].image[:10, :, 2].mean()) > 150
    assert float(frames[0].image[-10:, :, 2].mean()) < 60
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name in {"h264", "mpeg4"}
    info = video_info(out)
    assert (info.width, info.height, info.frames) == (64, 48, 10)


def test_video_writer_odd_size_is_padded(tmp_path: Path) -> None:
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, 5.0, 33, 21) as writer:
        for i in range(3):
            writer.write(_pattern(i, 21, 33))
        with pytest.raises(ValueError):
            writer.write(np.zeros((20, 33, 3), np.uint8))
    frames = list(iter_video_frames(out))
    assert len(frames) == 3
    h, w = frames[0].image.shape[:2]
    assert (h % 2, w % 2) == (0, 0) and (h, w) in {(22, 34), (21, 33)}
    with pytest.raises(ValueError):
        writer.write(_pattern(0, 21, 33))  # closed


def test_video_writer_mpeg4_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(writer_mod.av, "codecs_available", {"mpeg4", "h264"})
    writer_mod._pick_codec.cache_clear()
    with caplog.at_level(logging.WARNING, logger="streamer.writer"):
        for name in ("a.mp4", "b.mp4"):
            with VideoWriter(tmp_path / name, 10.0, 32, 32) as writer:
                assert writer.codec == "mpeg4"
                for i in range(4):
                    writer.write(_pattern(i, 32, 32))
    assert sum("libx264" in r.getMessage() for r in caplog.records) == 1
    frames = list(iter_video_frames(tmp_path / "a.mp4"))
    assert len(frames) == 4 and frames[0].image.shape == (32, 32, 3)
    writer_mod._pick_codec.cache_clear()  # the next test sees this PyAV build's real codecs

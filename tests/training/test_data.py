"""Training footage: reading, resizing, holding out, and clear source errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.video import SourceError
from tests.conftest import CLIP
from training.data import load_scene_frames, stc_training_videos


def test_single_video_holds_out_its_tail() -> None:
    data = load_scene_frames([CLIP], 48, holdout_fraction=0.25, max_frames_per_video=20)
    assert (len(data.train), len(data.holdout)) == (15, 5)
    assert all(f.shape == (48, 48, 3) for f in data.train + data.holdout)
    assert data.summary["holdout"] == [f"{CLIP.name}[15:]"]
    assert data.summary["train_frames"] == 15 and data.summary["holdout_frames"] == 5


def test_three_videos_hold_out_whole_videos(tmp_path: Path) -> None:
    videos = []
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / name).symlink_to(CLIP)
        videos.append(tmp_path / name)
    data = load_scene_frames(videos, 32, holdout_fraction=0.34, frame_stride=10,
                             max_frames_per_video=4)
    assert data.summary["holdout"] == ["c.mp4"]
    assert (len(data.train), len(data.holdout)) == (8, 4)


def test_unreadable_video(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(SourceError, match="notes.mp4"):
        load_scene_frames([text], 32)


def test_missing_video(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="missing.mp4"):
        load_scene_frames([tmp_path / "missing.mp4"], 32)


def test_no_videos_and_bad_fraction() -> None:
    with pytest.raises(SourceError, match="no training videos"):
        load_scene_frames([], 32)
    with pytest.raises(ValueError, match="holdout_fraction"):
        load_scene_frames([CLIP], 32, holdout_fraction=1.0)


def test_video_too_short_to_hold_out() -> None:
    with pytest.raises(SourceError, match="too few frames"):
        load_scene_frames([CLIP], 32, holdout_fraction=0.1, max_frames_per_video=2)


def test_stc_layout(tmp_path: Path) -> None:
    folder = tmp_path / "training" / "videos"
    folder.mkdir(parents=True)
    for name in ("01_002.avi", "01_001.avi", "02_001.avi", "01_notes.txt"):
        (folder / name).touch()
    assert [p.name for p in stc_training_videos(tmp_path, "01")] == ["01_001.avi", "01_002.avi"]
    with pytest.raises(SourceError, match="no training videos for scene '03'"):
        stc_training_videos(tmp_path, "03")
    with pytest.raises(SourceError, match="not an STC dataset root"):
        stc_training_videos(tmp_path / "nope", "01")

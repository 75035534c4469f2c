"""STC-layout test sets: clips, masks and their checks raise EvaluationError (not a video
source's SourceError); frames are counted as the decoder reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamer.video import SourceError
from training.testset import EvaluationError, discover_scenes, frame_count, load_masks, stc_test_clips


def _clip(root: Path, name: str, frames: int, pixel: bool = True) -> None:
    folder = root / "testing" / "frames" / name
    folder.mkdir(parents=True)
    for i in range(frames):
        (folder / f"{i:03d}.jpg").write_bytes(b"")
    masks = root / "testing" / "test_frame_mask"
    masks.mkdir(parents=True, exist_ok=True)
    np.save(masks / f"{name}.npy", np.zeros(frames, np.uint8))
    if pixel:
        (root / "testing" / "test_pixel_mask").mkdir(parents=True, exist_ok=True)
        np.save(root / "testing" / "test_pixel_mask" / f"{name}.npy", np.zeros((frames, 4, 6), np.uint8))


def test_clips_masks_and_scenes(tmp_path: Path) -> None:
    _clip(tmp_path, "01_0001", 3)
    _clip(tmp_path, "01_0002", 2, pixel=False)
    _clip(tmp_path, "02_0001", 1)
    clips = stc_test_clips(tmp_path, "01")
    assert [c.name for c in clips] == ["01_0001", "01_0002"]
    assert clips[0].pixel_mask is not None and clips[1].pixel_mask is None
    assert discover_scenes(tmp_path) == ["01", "02"]
    labels, pixels = load_masks(clips[0], 3)
    assert labels.dtype == bool and labels.shape == (3,) and pixels is not None and pixels.shape == (3, 4, 6)
    assert load_masks(clips[1], 2)[1] is None


def test_frames_are_counted_as_the_decoder_reads_them(tmp_path: Path) -> None:
    _clip(tmp_path, "01_0001", 3)
    folder = tmp_path / "testing" / "frames" / "01_0001"
    (folder / "notes.txt").write_text("x")
    (folder / "cover.jpg").write_bytes(b"")  # not numbered: not a frame
    (folder / "1.jpg").write_bytes(b"")  # the same number as 001.jpg: one frame
    (folder / "007.png").mkdir()  # a folder, not an image
    assert frame_count(stc_test_clips(tmp_path, "01")[0]) == 3


def test_evaluation_failures_are_evaluation_errors(tmp_path: Path) -> None:
    assert not issubclass(EvaluationError, SourceError)
    with pytest.raises(EvaluationError, match="not an STC dataset root"):
        stc_test_clips(tmp_path, "01")
    with pytest.raises(EvaluationError, match="not an STC dataset root"):
        discover_scenes(tmp_path)
    _clip(tmp_path, "01_0001", 3)
    with pytest.raises(EvaluationError, match="no test clips for scene '02'"):
        stc_test_clips(tmp_path, "02")
    clip = stc_test_clips(tmp_path, "01")[0]
    with pytest.raises(EvaluationError, match="frame mask has shape"):
        load_masks(clip, 4)
    np.save(tmp_path / "testing" / "test_pixel_mask" / "01_0001.npy", np.zeros((2, 4, 6), np.uint8))
    with pytest.raises(EvaluationError, match="pixel mask has 2 frames"):
        load_masks(clip, 3)
    (tmp_path / "testing" / "test_frame_mask" / "01_0001.npy").unlink()
    with pytest.raises(EvaluationError, match="frame mask .* is missing"):
        stc_test_clips(tmp_path, "01")

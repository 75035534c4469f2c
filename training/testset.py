"""STC-layout test sets: a scene's test clips, their ground-truth masks, the scenes present.

The layout (ShanghaiTech Campus; see docs/architecture.md)::

    ROOT/testing/frames/{scene}_NNNN/000.jpg ...
    ROOT/testing/test_frame_mask/{scene}_NNNN.npy   (T,)
    ROOT/testing/test_pixel_mask/{scene}_NNNN.npy   (T, H, W), optional
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.video import numbered_images


class EvaluationError(RuntimeError):
    """A test set cannot be evaluated: missing, or inconsistent with its masks (the message
    names the clip or folder)."""


@dataclass(frozen=True)
class TestClip:
    """One STC test video: its frame folder and ground-truth masks."""

    name: str
    frames: Path
    frame_mask: Path
    pixel_mask: Path | None


def _frames_dir(root: str | Path) -> Path:
    frames = Path(root) / "testing" / "frames"
    if not frames.is_dir():
        raise EvaluationError(f"not an STC dataset root: {frames} does not exist")
    return frames


def stc_test_clips(root: str | Path, scene: str) -> list[TestClip]:
    """The scene's test clips in an STC-layout root (``testing/frames/{scene}_NNNN``).

    Args:
        root: the dataset root.
        scene: the scene id (the folders' prefix).

    Returns:
        The clips, sorted by name; :class:`EvaluationError` if there are none or a frame
        mask is missing.
    """
    frames_dir = _frames_dir(root)
    testing = frames_dir.parent
    clips = []
    for folder in sorted(p for p in frames_dir.iterdir() if p.is_dir() and p.name.startswith(f"{scene}_")):
        frame_mask = testing / "test_frame_mask" / f"{folder.name}.npy"
        if not frame_mask.is_file():
            raise EvaluationError(f"test clip {folder.name}: frame mask {frame_mask} is missing")
        pixel_mask = testing / "test_pixel_mask" / f"{folder.name}.npy"
        clips.append(TestClip(folder.name, folder, frame_mask, pixel_mask if pixel_mask.is_file() else None))
    if not clips:
        raise EvaluationError(f"no test clips for scene {scene!r} in {frames_dir}")
    return clips


def discover_scenes(root: str | Path) -> list[str]:
    """Scene ids present in an STC test set (the prefix of ``testing/frames/<scene>_<clip>``).

    Args:
        root: the dataset root.

    Returns:
        The sorted scene ids.
    """
    frames = _frames_dir(root)
    return sorted({p.name.split("_")[0] for p in frames.iterdir() if p.is_dir() and "_" in p.name})


def frame_count(clip: TestClip) -> int:
    """How many frames the clip's folder holds (its numbered images, as the decoder reads them).

    Args:
        clip: the test clip.

    Returns:
        The number of frames.
    """
    return len(numbered_images(clip.frames))


def load_masks(clip: TestClip, n_frames: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A clip's frame labels and pixel masks (memory-mapped), checked against its length.

    Args:
        clip: the test clip.
        n_frames: the clip's number of frames.

    Returns:
        (frame labels (T,) bool, pixel masks (T, H, W) or None); :class:`EvaluationError`
        if a mask's length differs from ``n_frames``.
    """
    frame_mask = np.load(clip.frame_mask)
    if frame_mask.shape != (n_frames,):
        raise EvaluationError(
            f"test clip {clip.name}: frame mask has shape {frame_mask.shape}, "
            f"but the clip has {n_frames} frames"
        )
    pixel_mask = None
    if clip.pixel_mask is not None:
        pixel_mask = np.load(clip.pixel_mask, mmap_mode="r")
        if pixel_mask.shape[0] != n_frames:
            raise EvaluationError(
                f"test clip {clip.name}: pixel mask has {pixel_mask.shape[0]} frames, "
                f"the clip has {n_frames}"
            )
    return frame_mask.astype(bool), pixel_mask

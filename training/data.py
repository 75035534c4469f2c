"""Training data: normal frames of one scene from videos or the STC layout, split into
frames the flow trains on and held-out frames that calibrate it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from streamer.video import SourceError, iter_frames

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg")


@dataclass
class SceneFrames:
    """Normal frames of a scene (BGR uint8, already resized to the model input)."""

    train: list[np.ndarray]
    holdout: list[np.ndarray]
    summary: dict = field(default_factory=dict)
    # Lengths of the runs of consecutive frames (``frame_stride`` source frames apart) that
    # ``train`` and ``holdout`` are made of, in order: motion pairs never cross a run.
    train_runs: list[int] = field(default_factory=list)
    holdout_runs: list[int] = field(default_factory=list)


def stc_training_videos(root: str | Path, scene: str) -> list[Path]:
    """The scene's normal training videos in an STC-layout dataset root."""
    folder = Path(root) / "training" / "videos"
    if not folder.is_dir():
        raise SourceError(f"not an STC dataset root: {folder} does not exist")
    videos = sorted(p for p in folder.iterdir() if p.name.startswith(f"{scene}_")
                    and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise SourceError(f"no training videos for scene {scene!r} in {folder} (expected {scene}_NNN.avi)")
    return videos


def read_run(path: str | Path, size: int, stride: int = 1, limit: int | None = None) -> list[np.ndarray]:
    """A video's frames, every ``stride``-th, resized to ``size`` x ``size``: one run of
    consecutive frames (as training and calibration read footage)."""
    return _read(Path(path), size, stride, limit)


def _read(path: Path, size: int, stride: int, limit: int | None) -> list[np.ndarray]:
    frames = []
    for frame in iter_frames(path, step=stride, max_frames=limit):
        frames.append(cv2.resize(frame.image, (size, size), interpolation=cv2.INTER_AREA))
    if not frames:
        raise SourceError(f"no frames could be decoded from {path}")
    return frames


def load_scene_frames(
    sources: Sequence[str | Path],
    size: int,
    holdout_fraction: float = 0.25,
    frame_stride: int = 1,
    max_frames_per_video: int | None = None,
) -> SceneFrames:
    """Read normal footage and hold part of it out for calibration.

    With three or more videos, whole videos are held out (every k-th one), so held-out
    frames are not near-duplicates of training frames; with fewer, the last
    ``holdout_fraction`` of each video is held out.
    """
    paths = [Path(s) for s in sources]
    if not paths:
        raise SourceError("no training videos given")
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    videos = [_read(p, size, frame_stride, max_frames_per_video) for p in paths]
    train: list[np.ndarray] = []
    holdout: list[np.ndarray] = []
    train_runs: list[int] = []
    holdout_runs: list[int] = []
    held_names: list[str] = []
    if len(videos) >= 3:
        k = max(2, round(1 / holdout_fraction))
        for i, (path, frames) in enumerate(zip(paths, videos, strict=True)):
            if i % k == k - 1:
                holdout.extend(frames)
                holdout_runs.append(len(frames))
                held_names.append(path.name)
            else:
                train.extend(frames)
                train_runs.append(len(frames))
    else:
        for path, frames in zip(paths, videos, strict=True):
            cut = max(1, int(round(len(frames) * (1 - holdout_fraction))))
            if cut >= len(frames):
                raise SourceError(f"{path} has too few frames ({len(frames)}) to hold any out")
            train.extend(frames[:cut])
            holdout.extend(frames[cut:])
            train_runs.append(cut)
            holdout_runs.append(len(frames) - cut)
            held_names.append(f"{path.name}[{cut}:]")
    summary = {
        "videos": [p.name for p in paths],
        "frame_stride": frame_stride,
        "train_frames": len(train),
        "holdout_frames": len(holdout),
        "holdout": held_names,
    }
    log.info("scene footage: %d training frames, %d held-out frames", len(train), len(holdout))
    return SceneFrames(train, holdout, summary, train_runs, holdout_runs)

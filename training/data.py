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
    return read_footage(sources, size, frame_stride, max_frames_per_video).split(holdout_fraction)


@dataclass
class SceneFootage:
    """Every normal video of a scene, read once; :meth:`split` cuts it into train/held-out."""

    paths: list[Path]
    videos: list[list[np.ndarray]]
    frame_stride: int = 1

    def folds(self, holdout_fraction: float) -> int:
        """How many disjoint held-out sets :meth:`split` can cut (``round(1 / fraction)``)."""
        _check_fraction(holdout_fraction)
        return max(2, round(1 / holdout_fraction))

    def split(self, holdout_fraction: float = 0.25, fold: int = 0) -> SceneFrames:
        """Training and held-out frames; ``fold`` picks which part is held out.

        Fold 0 is the default split: with three or more videos every k-th video from the
        (k-1)-th on (k = :meth:`folds`); with fewer, the last ``holdout_fraction`` of each
        video. Fold f holds out the videos (or the segment) f places earlier, so the folds
        ``0 .. k-1`` hold out disjoint parts that together cover all the footage (cross-fitting).

        >>> clip = SceneFootage([Path("a.avi")], [[np.zeros((1, 1, 3), np.uint8)] * 8])
        >>> [(len(clip.split(0.25, f).train), clip.split(0.25, f).summary["holdout"]) for f in (0, 3)]
        [(6, ['a.avi[6:]']), (6, ['a.avi[0:2]'])]
        """
        k = self.folds(holdout_fraction)
        if not 0 <= fold < k:
            raise ValueError(f"fold must be in 0..{k - 1} for holdout_fraction {holdout_fraction}, "
                             f"got {fold}")
        train: list[np.ndarray] = []
        holdout: list[np.ndarray] = []
        train_runs: list[int] = []
        holdout_runs: list[int] = []
        held_names: list[str] = []
        if len(self.videos) >= 3:
            for i, (path, frames) in enumerate(zip(self.paths, self.videos, strict=True)):
                if i % k == (k - 1 - fold) % k:
                    holdout.extend(frames)
                    holdout_runs.append(len(frames))
                    held_names.append(path.name)
                else:
                    train.extend(frames)
                    train_runs.append(len(frames))
        else:
            for path, frames in zip(self.paths, self.videos, strict=True):
                n = len(frames)
                hi = n if fold == 0 else int(round(n * (1 - fold * holdout_fraction)))
                lo = max(0, int(round(n * (1 - (fold + 1) * holdout_fraction)))) if fold < k - 1 else 0
                if fold == 0:
                    lo = max(1, int(round(n * (1 - holdout_fraction))))
                if lo >= hi or hi - lo >= n:
                    raise SourceError(f"{path} has too few frames ({n}) to hold any out")
                for run in (frames[:lo], frames[hi:]):
                    if run:
                        train.extend(run)
                        train_runs.append(len(run))
                holdout.extend(frames[lo:hi])
                holdout_runs.append(hi - lo)
                held_names.append(f"{path.name}[{lo}:]" if fold == 0 else f"{path.name}[{lo}:{hi}]")
        if not holdout or not train:
            missing = "held-out" if not holdout else "training"
            raise SourceError(f"fold {fold} of {k} leaves no {missing} frames")
        summary = {
            "videos": [p.name for p in self.paths],
            "frame_stride": self.frame_stride,
            "train_frames": len(train),
            "holdout_frames": len(holdout),
            "holdout": held_names,
        }
        if fold:
            summary["fold"] = fold
        log.info("scene footage%s: %d training frames, %d held-out frames",
                 f" (fold {fold})" if fold else "", len(train), len(holdout))
        return SceneFrames(train, holdout, summary, train_runs, holdout_runs)


def _check_fraction(holdout_fraction: float) -> None:
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")


def read_footage(
    sources: Sequence[str | Path],
    size: int,
    frame_stride: int = 1,
    max_frames_per_video: int | None = None,
) -> SceneFootage:
    """Every video of ``sources`` read and resized once (see :meth:`SceneFootage.split`)."""
    paths = [Path(s) for s in sources]
    if not paths:
        raise SourceError("no training videos given")
    videos = [_read(p, size, frame_stride, max_frames_per_video) for p in paths]
    return SceneFootage(paths, videos, frame_stride)

"""Offline scoring of a video file or frame folder: per-frame CSV, overlay video, timeline.

The outputs appear whole or not at all. They are written to a hidden staging folder next
to the output folder (``.NAME.partial-*``) and moved into place at the end; a failure (or
Ctrl-C) removes the staging folder and leaves nothing that looks like a result. Into an
output folder that already exists the files move one by one, the old ``scores.csv``
removed first and the new one moved last: a ``scores.csv`` is always of a finished run.

Corrupt frames (an unreadable image in a frame folder, an undecodable packet, a frame the
decoder flags corrupt) are skipped and counted, as in streaming: one bad JPEG does not
stop a run, and the summary says how many were skipped.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from detector.overlay import heat_overlay
from detector.scorer import FrameScorer
from streamer.video import iter_frames, video_info
from streamer.writer import VideoWriter

log = logging.getLogger(__name__)

CSV_FILE, VIDEO_FILE, TIMELINE_FILE = "scores.csv", "overlay.mp4", "timeline.png"


class OutputError(RuntimeError):
    """The output folder cannot be used (e.g. it is a file)."""


@dataclass
class ScoreSummary:
    """What a scoring run wrote (final paths) and found; ``skipped``: corrupt frames skipped."""

    frames: int
    above_threshold: int
    max_score: float
    csv: Path
    video: Path | None
    timeline: Path | None
    skipped: int = 0


def _publish(staging: Path, out: Path) -> None:
    """Move the finished outputs from ``staging`` to ``out`` (see the module docstring)."""
    if not out.exists():
        staging.replace(out)  # one rename: the whole folder appears at once
        return
    (out / CSV_FILE).unlink(missing_ok=True)  # from here until the end: no scores.csv
    for name in (VIDEO_FILE, TIMELINE_FILE, CSV_FILE):
        if (staging / name).exists():
            os.replace(staging / name, out / name)
        else:
            (out / name).unlink(missing_ok=True)  # an older run's, not this one's
    staging.rmdir()


def plot_timeline(seqs: list[int], scores: list[float], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3), dpi=100)
    ax.plot(seqs, scores, lw=1.2, label="calibrated score")
    ax.axhline(1.0, color="red", ls="--", lw=1, label="threshold (1.0)")
    ax.set_xlabel("frame")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def score_source(
    scorer: FrameScorer,
    source: str | Path,
    out_dir: str | Path,
    batch_size: int = 8,
    write_video: bool = True,
    progress: bool = True,
) -> ScoreSummary:
    """Score every frame of ``source`` into ``out_dir``: scores.csv (seq, score, raw),
    overlay.mp4 (frames with the heat map) and timeline.png -- all of them or none (see
    the module docstring). Corrupt frames are skipped and counted (``skipped``)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output folder {out} is a file")
    info = video_info(source)  # before anything is written: an unreadable source writes nothing
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        frames, scores, skipped = _score_into(scorer, source, staging, info.fps, info.width, info.height,
                                              info.frames, batch_size, write_video, progress)
        if frames:
            plot_timeline(frames, scores, staging / TIMELINE_FILE, f"{Path(source).name}")
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if skipped:
        log.warning("%s: skipped %d corrupt frame(s) (see the warnings above); scored %d", source, skipped,
                    len(frames))
    arr = np.asarray(scores)
    return ScoreSummary(
        frames=len(scores),
        above_threshold=int((arr >= 1.0).sum()),
        max_score=float(arr.max()) if len(arr) else float("nan"),
        csv=out / CSV_FILE,
        video=out / VIDEO_FILE if write_video else None,
        timeline=out / TIMELINE_FILE if frames else None,
        skipped=skipped,
    )


def _score_into(scorer: FrameScorer, source: str | Path, folder: Path, fps: float, width: int, height: int,
                total: int, batch_size: int, write_video: bool, progress: bool,
                ) -> tuple[list[int], list[float], int]:
    """Score ``source`` into ``folder``: its seqs, scores and the number of frames skipped."""
    skipped = 0

    def skip(_seq: int, _what: str) -> None:
        nonlocal skipped
        skipped += 1

    writer = VideoWriter(folder / VIDEO_FILE, fps or 10.0, width, height) if write_video else None
    seqs: list[int] = []
    scores: list[float] = []
    bar = tqdm(total=total or None, desc="scoring", unit="frame", disable=not progress)
    try:
        with (folder / CSV_FILE).open("w", newline="") as fh:
            rows = csv.writer(fh)
            rows.writerow(["seq", "score", "raw"])
            batch = []
            for frame in chain(iter_frames(source, on_skip=skip), [None]):  # None flushes the last batch
                if frame is not None:
                    batch.append(frame)
                if batch and (frame is None or len(batch) == batch_size):
                    results = scorer.score_batch([f.image for f in batch], [f.seq for f in batch])
                    for f, r in zip(batch, results, strict=True):
                        rows.writerow([f.seq, f"{r.score:.6f}", f"{r.raw:.6f}"])
                        seqs.append(f.seq)
                        scores.append(r.score)
                        if writer is not None:
                            writer.write(heat_overlay(f.image, r.anomaly_map, r.score))
                    bar.update(len(batch))
                    batch = []
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return seqs, scores, skipped

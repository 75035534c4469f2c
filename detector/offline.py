"""Offline scoring of a video file or frame folder: per-frame CSV, overlay video, timeline."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from detector.overlay import heat_overlay
from detector.scorer import FrameScorer
from streamer.video import iter_frames, video_info
from streamer.writer import VideoWriter


@dataclass
class ScoreSummary:
    frames: int
    above_threshold: int
    max_score: float
    csv: Path
    video: Path | None
    timeline: Path | None


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
    overlay.mp4 (frames with the heat map) and timeline.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = video_info(source)
    csv_path = out / "scores.csv"
    video_path = out / "overlay.mp4" if write_video else None
    writer = VideoWriter(video_path, info.fps or 10.0, info.width, info.height) if video_path else None
    seqs: list[int] = []
    scores: list[float] = []
    bar = tqdm(total=info.frames or None, desc="scoring", unit="frame", disable=not progress)
    try:
        with csv_path.open("w", newline="") as fh:
            rows = csv.writer(fh)
            rows.writerow(["seq", "score", "raw"])
            batch = []
            for frame in chain(iter_frames(source), [None]):  # None flushes the last batch
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
    timeline = plot_timeline(seqs, scores, out / "timeline.png", f"{Path(source).name}") if seqs else None
    arr = np.asarray(scores)
    return ScoreSummary(
        frames=len(scores),
        above_threshold=int((arr >= 1.0).sum()),
        max_score=float(arr.max()) if len(arr) else float("nan"),
        csv=csv_path,
        video=video_path,
        timeline=timeline,
    )

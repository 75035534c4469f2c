"""Temporal evidence for a frame score: the causal mean of a camera's last calibrated scores.

A single frame's score is noisy: a pedestrian's leg, a flicker of compression, one frame
in which the flow head sees something odd. Anomalies last (a cart crosses the walkway in
seconds, a sprinter in a second or two), and a normal spike does not. A scene whose score
settings have ``window`` > 1 publishes, for each frame, the mean of the calibrated scores of
that frame and of up to ``window - 1`` frames before it **of the same camera's run**: no
look-ahead, so it is usable live, and never another camera's frames or the batch.

A run ends at a gap: the previous frame more than ``max_step`` source frames back, more
than ``max_gap_ms`` earlier (when capture times are known), or not before this one (a
redelivery or a restart). The first frames of a run average what the run has.

The per-frame calibration stays the threshold's meaning: a smoothed score of 1.0 is a run
of frames whose scores average the per-frame threshold. The false-alarm rate at 1.0 on
normal footage is measured, not assumed (README "Temporal smoothing").

>>> causal_mean(np.array([0.0, 3.0, 0.0, 3.0]), 2).tolist()
[0.0, 1.5, 1.5, 1.5]
>>> h = ScoreHistory(window=2)
>>> [h.smooth("cam", q, s) for q, s in [(0, 1.0), (1, 3.0), (9, 5.0)]]
[1.0, 2.0, 5.0]
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np


def causal_mean(scores: np.ndarray, window: int) -> np.ndarray:
    """Mean of the current and up to ``window - 1`` previous scores (no look-ahead).

    Args:
        scores: (T,) one run's frame scores, in order.
        window: frames averaged (1: the scores as they are).

    Returns:
        (T,) the smoothed scores, float64.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 frame, got {window}")
    scores = np.asarray(scores, dtype=np.float64)
    c = np.cumsum(np.concatenate([[0.0], scores]))
    idx = np.arange(1, len(scores) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def follows(prev_seq: int, prev_ts_ms: int | None, seq: int, ts_ms: int | None, max_step: int,
            max_gap_ms: int) -> bool:
    """Whether a camera's frame continues the run of the frame before it: at most
    ``max_step`` source frames and (when both capture times are known) at most
    ``max_gap_ms`` after it. The one gap rule of the motion channel and of smoothing.

    >>> follows(10, None, 11, None, 3, 2000), follows(10, None, 14, None, 3, 2000)
    (True, False)
    >>> follows(10, 0, 11, 5000, 3, 2000), follows(10, None, 10, None, 3, 2000)
    (False, False)
    """
    if not 1 <= seq - prev_seq <= max_step:
        return False
    return ts_ms is None or prev_ts_ms is None or 0 <= ts_ms - prev_ts_ms <= max_gap_ms


@dataclass
class _Run:
    seq: int
    ts_ms: int | None
    scores: deque = field(default_factory=deque)


class ScoreHistory:
    """Per-camera streaming state: the calibrated scores of each camera's current run.

    :meth:`smooth` is called for a camera's frames in order (they are, within a partition,
    and a micro-batch keeps the order of its records). State is keyed by camera, so cameras
    sharing a batch never see each other's scores, and it survives micro-batches. At most
    ``max_cameras`` cameras are remembered (least recently seen dropped; a dropped camera's
    next frame starts a new run).

    >>> h = ScoreHistory(window=3, max_gap_ms=1000)
    >>> [h.smooth("a", q, 3.0 * q, ts_ms=100 * q) for q in range(4)]
    [0.0, 1.5, 3.0, 6.0]
    >>> h.smooth("b", 3, 1.0), h.smooth("a", 4, 0.0, ts_ms=60_000)
    (1.0, 0.0)
    """

    def __init__(self, window: int, max_step: int = 3, max_gap_ms: int = 2000,
                 max_cameras: int = 1024) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 frame, got {window}")
        self.window = window
        self.max_step = max_step
        self.max_gap_ms = max_gap_ms
        self.max_cameras = max_cameras
        self._runs: OrderedDict[str, _Run] = OrderedDict()

    def smooth(self, camera: str, seq: int, score: float, ts_ms: int | None = None) -> float:
        """This frame's smoothed score; the frame joins its camera's run (or starts one).

        Args:
            camera: the stream the frame belongs to.
            seq: its frame number in the source.
            score: its calibrated per-frame score.
            ts_ms: its capture time, when known.

        Returns:
            The mean of the run's last ``window`` scores, this one included.
        """
        if not np.isfinite(score):
            raise ValueError(f"camera {camera!r} frame {seq}: non-finite score {score!r}")
        run = self._runs.pop(camera, None)
        if run is None or not follows(run.seq, run.ts_ms, seq, ts_ms, self.max_step, self.max_gap_ms):
            run = _Run(seq, ts_ms, deque(maxlen=self.window))
        run.seq, run.ts_ms = seq, ts_ms
        run.scores.append(float(score))
        self._runs[camera] = run
        while len(self._runs) > self.max_cameras:
            self._runs.popitem(last=False)
        return float(sum(run.scores) / len(run.scores))

    def forget(self, camera: str) -> None:
        """Drop a camera's state (its next frame starts a new run)."""
        self._runs.pop(camera, None)

"""Calibrated frame scores: 1.0 is the scene's threshold at a chosen false-alarm rate.

The threshold is the (1 - false_alarm_rate) quantile of raw frame scores on held-out
normal footage of the scene. Held-out footage is often too short for the tail quantile
(0.1 % of 100 frames is a tenth of a frame); then the quantile is extrapolated from a
Gumbel fit, the natural law for a maximum over many pixels, and the method is recorded.
The calibrated score maps the normal median to 0 and the threshold to 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

EULER_GAMMA = 0.5772156649015329
# The empirical quantile is used only when it is backed by at least this many exceedances.
MIN_EXCEEDANCES = 5
# The threshold's uncertainty: a circular block bootstrap of the normal scores in footage
# order (blocks keep neighbouring frames' correlation), this many draws, a fixed seed.
BOOTSTRAP_BLOCK = 10
BOOTSTRAP_DRAWS = 200
INTERVAL_LEVEL = 0.9


def _threshold(scores: np.ndarray, false_alarm_rate: float) -> tuple[float, str]:
    """The (1 - false_alarm_rate) quantile of sorted ``scores``: empirical, or Gumbel-extrapolated."""
    q = 1.0 - false_alarm_rate
    if scores.size * false_alarm_rate >= MIN_EXCEEDANCES:
        return float(np.quantile(scores, q)), "empirical"
    beta = max(float(scores.std(ddof=1)) * math.sqrt(6) / math.pi, 1e-9)
    mu = float(scores.mean()) - EULER_GAMMA * beta
    # An extrapolated tail quantile is never below the largest normal score seen.
    return max(mu - beta * math.log(-math.log(q)), float(scores[-1])), "gumbel"


def threshold_interval(ordered: np.ndarray | Sequence[np.ndarray], false_alarm_rate: float,
                       level: float = INTERVAL_LEVEL, block: int = BOOTSTRAP_BLOCK,
                       draws: int = BOOTSTRAP_DRAWS,
                       statistic: Callable[[list[np.ndarray]], float] | None = None) -> tuple[float, float]:
    """A ``level`` confidence interval of the threshold, by circular block bootstrap.

    Args:
        ordered: normal raw scores in footage order, or several such runs (a cross-fit's
            folds: other footage, other models), each resampled on its own.
        false_alarm_rate: the nominal rate.
        level: the interval's coverage.
        block: frames per bootstrap block.
        draws: bootstrap resamples (the seed is fixed: the interval is reproducible).
        statistic: the threshold of one resample (its runs, in order); by default the one
            :meth:`Calibration.fit` gives on all of them pooled. Pass the rule that made the
            threshold, so that the interval is the threshold's own.

    Returns:
        The interval's ends.

    >>> lo, hi = threshold_interval(np.random.default_rng(0).normal(size=500), 0.01)
    >>> bool(lo < 2.33 < hi)
    True
    """
    several = not isinstance(ordered, np.ndarray) and len(ordered) > 0 and np.ndim(ordered[0]) >= 1
    runs = ([np.asarray(r, dtype=np.float64).ravel() for r in ordered] if several
            else [np.asarray(ordered, dtype=np.float64).ravel()])
    if statistic is None:
        def statistic(parts: list[np.ndarray]) -> float:
            return _threshold(np.sort(np.concatenate(parts)), false_alarm_rate)[0]
    rng = np.random.default_rng(0)
    resampled = [_block_resamples(x, rng, block, draws) for x in runs]
    values = [statistic([x[idx[d]] for x, idx in zip(runs, resampled, strict=True)]) for d in range(draws)]
    a = (1.0 - level) / 2
    return float(np.quantile(values, a)), float(np.quantile(values, 1 - a))


def _block_resamples(x: np.ndarray, rng: np.random.Generator, block: int, draws: int) -> np.ndarray:
    """``draws`` circular block-bootstrap index sets of ``x`` (one row each)."""
    n = x.size
    block = max(1, min(block, n // 4))  # at least 4 blocks, or a resample is the same set rotated
    starts = rng.integers(0, n, size=(draws, -(-n // block)))
    return (starts[:, :, None] + np.arange(block)).reshape(draws, -1)[:, :n] % n


@dataclass(frozen=True)
class Calibration:
    """Threshold and reference distribution of raw frame scores on normal footage."""

    false_alarm_rate: float
    threshold: float
    center: float
    method: Literal["empirical", "gumbel"]
    normal_scores: tuple[float, ...]

    @classmethod
    def fit(cls, normal_scores: np.ndarray, false_alarm_rate: float = 0.001) -> Calibration:
        scores = np.sort(np.asarray(normal_scores, dtype=np.float64).ravel())
        if scores.size < 2:
            raise ValueError(
                f"calibration needs at least 2 held-out normal frames, got {scores.size}"
            )
        if not 0.0 < false_alarm_rate < 1.0:
            raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
        center = float(np.median(scores))
        threshold, method = _threshold(scores, false_alarm_rate)
        # A threshold at or below the median would make the scale meaningless.
        if threshold <= center:
            threshold = center + max(float(scores.std()), 1e-6)
        return cls(false_alarm_rate, threshold, center, method, tuple(float(s) for s in scores))

    def calibrate(self, raw: np.ndarray | float) -> np.ndarray | float:
        """Calibrated score: 0 at the normal median, 1.0 at the threshold."""
        return (np.asarray(raw, dtype=np.float64) - self.center) / (self.threshold - self.center)

    def normal_exceedance(self) -> float:
        """Fraction of the held-out normal frames at or above the threshold."""
        scores = np.asarray(self.normal_scores)
        return float((scores >= self.threshold).mean())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["normal_scores"] = list(self.normal_scores)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(
            float(d["false_alarm_rate"]),
            float(d["threshold"]),
            float(d["center"]),
            d["method"],
            tuple(float(s) for s in d["normal_scores"]),
        )

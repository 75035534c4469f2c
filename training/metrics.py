"""Detection metrics: frame-level AUROC and alarm rates, and streaming, memory-bounded pixel
AUROC and AUPRO.

Pixel AUROC over a whole test set does not fit in memory at STC scale (42,883 frames of
480x856 pixels), so :class:`BinnedROC` accumulates counts of positive and negative pixels
per score bin and integrates the ROC exactly over the binned scores. Binning merges
scores that fall in the same bin into ties; the AUROC error is at most half the fraction
of (positive, negative) pairs that share a bin, which :meth:`BinnedROC.tie_bound` reports.
:class:`PixelMetrics` is the one accumulator the evaluations use: maps in, merged across
scenes, summarised.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve with ties counted as one half (Mann-Whitney U)."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs both classes (positives {n_pos}, negatives {n_neg})")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def alarm_rates(labels: np.ndarray, scores: np.ndarray) -> dict:
    """At the calibrated threshold (score >= 1): false alarms on normal test frames and
    detections of anomalous ones -- how well the calibration carried over to new footage.

    Args:
        labels: (N,) frame labels, true = anomalous.
        scores: (N,) calibrated frame scores.

    Returns:
        ``normal_frames_above_threshold`` and ``anomalous_frames_above_threshold`` (NaN for
        a class with no frames).
    """
    def above(x: np.ndarray) -> float:
        return float((x >= 1.0).mean()) if x.size else float("nan")

    labels = labels.astype(bool)
    return {
        "normal_frames_above_threshold": above(scores[~labels]),
        "anomalous_frames_above_threshold": above(scores[labels]),
    }


class BinnedROC:
    """ROC over scores in [low, high] quantised to ``bins`` equal bins (clipped at the ends)."""

    def __init__(self, low: float, high: float, bins: int) -> None:
        if not high > low:
            raise ValueError(f"BinnedROC needs high > low, got [{low}, {high}]")
        self.low, self.high, self.bins = float(low), float(high), int(bins)
        self.pos = np.zeros(self.bins, dtype=np.int64)
        self.neg = np.zeros(self.bins, dtype=np.int64)

    def _index(self, scores: np.ndarray) -> np.ndarray:
        scaled = (np.asarray(scores, dtype=np.float32) - self.low) * (self.bins / (self.high - self.low))
        return np.clip(scaled, 0, self.bins - 1).astype(np.int64)

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        idx = self._index(scores).ravel()
        lab = np.asarray(labels).astype(bool).ravel()
        if idx.shape != lab.shape:
            raise ValueError(f"scores {idx.shape} and labels {lab.shape} differ in size")
        self.pos += np.bincount(idx[lab], minlength=self.bins)
        self.neg += np.bincount(idx[~lab], minlength=self.bins)

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, tpr) from the highest threshold down, starting at (0, 0)."""
        tp = np.concatenate([[0], np.cumsum(self.pos[::-1])])
        fp = np.concatenate([[0], np.cumsum(self.neg[::-1])])
        return fp / max(fp[-1], 1), tp / max(tp[-1], 1)

    def auroc(self) -> float:
        if self.pos.sum() == 0 or self.neg.sum() == 0:
            raise ValueError("pixel AUROC needs both anomalous and normal pixels")
        fpr, tpr = self.curve()
        return float(np.trapezoid(tpr, fpr))

    def tie_bound(self) -> float:
        """Upper bound on |binned AUROC - exact AUROC| caused by the quantisation."""
        pairs = float(self.pos.sum()) * float(self.neg.sum())
        return float((self.pos.astype(np.float64) * self.neg).sum() / pairs / 2.0)


class BinnedPRO:
    """Per-region overlap (PRO) curve over binned scores, accumulated frame by frame.

    For each connected component of a frame's ground truth, the fraction of its pixels at
    or above each bin's lower edge is added to a running sum; normal pixels go into a
    histogram that gives the false-positive rate at the same thresholds. AUPRO is the area
    under PRO(FPR) up to ``max_fpr``, divided by ``max_fpr`` (as in the MVTec protocol).
    Memory is two vectors of ``bins`` entries, whatever the test set's size.
    """

    def __init__(self, low: float, high: float, bins: int) -> None:
        self.roc = BinnedROC(low, high, bins)  # only its binning and negative histogram are used
        self.overlap_sum = np.zeros(bins, dtype=np.float64)  # sum over regions, per threshold bin
        self.regions = 0

    def update(self, scores: np.ndarray, mask: np.ndarray) -> None:
        truth = np.asarray(mask).astype(np.uint8)
        idx = self.roc._index(scores).reshape(truth.shape)
        self.roc.neg += np.bincount(idx[truth == 0], minlength=self.roc.bins)
        if not truth.any():
            return
        count, labels = cv2.connectedComponents(truth, connectivity=8)
        for region in range(1, count):
            hist = np.bincount(idx[labels == region], minlength=self.roc.bins)
            # Fraction of the region at or above each threshold bin (thresholds high -> low).
            self.overlap_sum += np.cumsum(hist[::-1])[::-1] / hist.sum()
            self.regions += 1

    def aupro(self, max_fpr: float = 0.3) -> float:
        if self.regions == 0 or self.roc.neg.sum() == 0:
            raise ValueError("AUPRO needs at least one anomalous region and some normal pixels")
        # Thresholds from high to low: FPR and PRO rise together.
        fpr = np.concatenate([[0.0], np.cumsum(self.roc.neg[::-1]) / self.roc.neg.sum()])
        pro = np.concatenate([[0.0], (self.overlap_sum / self.regions)[::-1]])
        if fpr[-1] < max_fpr:  # cannot happen (fpr ends at 1), kept for clarity
            max_fpr = float(fpr[-1])
        cut = int(np.searchsorted(fpr, max_fpr, side="right"))
        x, y = fpr[:cut], pro[:cut]
        if cut < len(fpr):  # interpolate the curve at exactly max_fpr
            x0, x1, y0, y1 = fpr[cut - 1], fpr[cut], pro[cut - 1], pro[cut]
            y_end = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0) if x1 > x0 else y1
            x, y = np.append(x, max_fpr), np.append(y, y_end)
        return float(np.trapezoid(y, x) / max_fpr)


class PixelMetrics:
    """Pixel AUROC, and with ``aupro`` AUPRO, of anomaly maps against ground-truth masks,
    accumulated frame by frame in score histograms over [low, high] in ``bins`` bins.

    Accumulators of the same binning merge: the pooled metrics of several scenes are those
    of one accumulator that saw all their frames.
    """

    def __init__(self, low: float, high: float, bins: int, aupro: bool = False) -> None:
        self.roc = BinnedROC(low, high, bins)
        self.pro = BinnedPRO(low, high, bins) if aupro else None

    @classmethod
    def pooled(cls, parts: Sequence[PixelMetrics]) -> PixelMetrics:
        """One accumulator holding the counts of all ``parts`` (at least one, same binning).

        Args:
            parts: the accumulators to pool.

        Returns:
            A new accumulator; the parts are unchanged.
        """
        first = parts[0].roc
        out = cls(first.low, first.high, first.bins, parts[0].pro is not None)
        for part in parts:
            out.merge(part)
        return out

    def update(self, amap: np.ndarray, truth: np.ndarray) -> None:
        """Add one frame: its map (h, w), bilinearly resized to the mask, and its mask (H, W).

        Args:
            amap: the frame's anomaly map.
            truth: the frame's ground-truth mask, true (or 1) = anomalous.
        """
        up = cv2.resize(amap.astype(np.float32), (truth.shape[1], truth.shape[0]),
                        interpolation=cv2.INTER_LINEAR)
        self.roc.update(up, truth)
        if self.pro is not None:
            self.pro.update(up, truth)

    def merge(self, other: PixelMetrics) -> None:
        """Add ``other``'s counts (same range, bins and metrics) to these.

        Args:
            other: the accumulator to add.
        """
        mine, theirs = self.roc, other.roc
        if (mine.low, mine.high, mine.bins, self.pro is None) != (
                theirs.low, theirs.high, theirs.bins, other.pro is None):
            raise ValueError("pixel accumulators of different binning or metrics do not merge")
        pairs = [(mine, theirs)]
        if self.pro is not None and other.pro is not None:
            pairs.append((self.pro.roc, other.pro.roc))
            self.pro.overlap_sum += other.pro.overlap_sum
            self.pro.regions += other.pro.regions
        for a, b in pairs:
            a.pos += b.pos
            a.neg += b.neg

    def summary(self) -> dict:
        """``pixel_auroc`` and ``pixel_auroc_error_bound``, and with AUPRO ``aupro_0.3``
        (None without anomalous regions).

        Returns:
            The metrics.
        """
        out = {"pixel_auroc": self.roc.auroc(), "pixel_auroc_error_bound": self.roc.tie_bound()}
        if self.pro is not None:
            try:
                out["aupro_0.3"] = self.pro.aupro(0.3)
            except ValueError:
                out["aupro_0.3"] = None
        return out

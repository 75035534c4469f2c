"""Detection metrics: frame-level AUROC and a streaming, memory-bounded pixel AUROC.

Pixel AUROC over a whole test set does not fit in memory at STC scale (42,883 frames of
480x856 pixels), so :class:`BinnedROC` accumulates counts of positive and negative pixels
per score bin and integrates the ROC exactly over the binned scores. Binning merges
scores that fall in the same bin into ties; the AUROC error is at most half the fraction
of (positive, negative) pairs that share a bin, which :meth:`BinnedROC.tie_bound` reports.
"""

from __future__ import annotations

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


class BinnedROC:
    """ROC over scores in [low, high] quantised to ``bins`` equal bins (clipped at the ends)."""

    def __init__(self, low: float, high: float, bins: int = 16384) -> None:
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

    def __init__(self, low: float, high: float, bins: int = 16384) -> None:
        self.roc = BinnedROC(low, high, bins)  # only its binning and negative histogram are used
        self.overlap_sum = np.zeros(bins, dtype=np.float64)  # sum over regions, per threshold bin
        self.regions = 0

    def update(self, scores: np.ndarray, mask: np.ndarray) -> None:
        import cv2

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

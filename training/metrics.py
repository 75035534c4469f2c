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

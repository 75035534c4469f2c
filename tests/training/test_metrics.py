"""Metrics: exact AUROC against scikit-learn, binned AUROC within its error bound, AUPRO on
known answers, and the pixel accumulator: merged parts == one pass."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from training.metrics import BinnedPRO, BinnedROC, PixelMetrics, alarm_rates, auroc


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 6)), min_size=2, max_size=80))
def test_auroc_matches_sklearn_with_ties(pairs: list[tuple[bool, int]]) -> None:
    labels = np.array([p[0] for p in pairs])
    scores = np.array([p[1] for p in pairs], dtype=np.float64) / 3.0
    assume(labels.any() and not labels.all())
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_auroc_matches_sklearn_on_continuous_scores(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.random(500) < 0.2
    scores = rng.normal(size=500) + labels
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auroc_extremes() -> None:
    labels = np.array([0, 0, 1, 1])
    assert auroc(labels, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auroc(labels, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert auroc(labels, np.ones(4)) == 0.5


@pytest.mark.parametrize(("seed", "bins"), [(0, 16), (1, 64), (2, 1024), (3, 1 << 16)])
def test_binned_auroc_within_tie_bound(seed: int, bins: int) -> None:
    rng = np.random.default_rng(seed)
    roc = BinnedROC(-2.0, 4.0, bins)
    labels_all, scores_all = [], []
    for _ in range(3):  # streamed in chunks, like frames
        labels = rng.random(3000) < 0.1
        scores = rng.normal(size=3000) + 1.5 * labels  # some fall outside [low, high]
        roc.update(scores, labels)
        labels_all.append(labels)
        scores_all.append(scores)
    exact = auroc(np.concatenate(labels_all), np.concatenate(scores_all))
    assert abs(roc.auroc() - exact) <= roc.tie_bound() + 1e-9
    assert roc.tie_bound() < 0.5
    if bins >= 1024:
        assert roc.auroc() == pytest.approx(exact, abs=2e-3)
    fpr, tpr = roc.curve()
    assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_binned_auroc_with_2d_maps() -> None:
    roc = BinnedROC(0.0, 1.0, 256)
    truth = np.zeros((8, 8), dtype=bool)
    truth[2:4, 2:4] = True
    roc.update(np.where(truth, 0.9, 0.1), truth)
    assert roc.auroc() == 1.0 and roc.tie_bound() == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        roc.update(np.zeros(3), np.zeros(4, dtype=bool))


def test_one_class_only_raises() -> None:
    with pytest.raises(ValueError, match="both classes"):
        auroc(np.ones(5), np.arange(5.0))
    with pytest.raises(ValueError, match="both classes"):
        auroc(np.zeros(5), np.arange(5.0))
    roc = BinnedROC(0.0, 1.0, 8)
    roc.update(np.linspace(0, 1, 10), np.zeros(10, dtype=bool))
    with pytest.raises(ValueError, match="both"):
        roc.auroc()
    with pytest.raises(ValueError, match="high > low"):
        BinnedROC(1.0, 1.0, 8)


def test_aupro_of_a_perfect_map_is_one() -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[2:5, 2:5] = 1
    mask[10:15, 10:12] = 1
    pro = BinnedPRO(0, 1, 1000)
    pro.update(mask.astype(float), mask)
    assert pro.aupro(0.3) == pytest.approx(1.0)


def test_aupro_known_answer() -> None:
    # Two regions: A entirely at 0.9, B entirely at 0.5; normal pixels: 10 % at 0.7, the rest 0.
    # Thresholds above 0.9: nothing. In (0.7, 0.9]: PRO 0.5 at FPR 0. In (0.5, 0.7]: FPR 0.1,
    # PRO 0.5. In (0, 0.5]: PRO 1 at FPR 0.1. Below: FPR 1. PRO(FPR) on [0, 0.3] is 0.5 at 0,
    # rises to 1 at FPR 0.1 along the vertical, then from (0.1, 1) linearly to (1, 1): area
    # = 0.1 * 0.5 (trapezoid from (0,0.5) to (0.1,0.5)) + 0.2 * 1.0 = 0.25, / 0.3.
    scores = np.zeros((10, 100))
    mask = np.zeros((10, 100), np.uint8)
    mask[0, 0:10] = 1
    scores[0, 0:10] = 0.9
    mask[5, 50:60] = 1
    scores[5, 50:60] = 0.5
    normal = np.flatnonzero(mask.ravel() == 0)
    scores.ravel()[normal[: len(normal) // 10]] = 0.7
    pro = BinnedPRO(0, 1, 1000)
    pro.update(scores, mask)
    assert pro.aupro(0.3) == pytest.approx(0.25 / 0.3, abs=2e-3)


def _frames(seed: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random (map at 1/4 of the mask's resolution, mask with a square region) pairs."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        truth = np.zeros((24, 32), np.uint8)
        if rng.random() < 0.7:
            y, x = rng.integers(0, 16), rng.integers(0, 24)
            truth[y : y + 8, x : x + 8] = 1
        amap = rng.normal(size=(6, 8)) + 2.0 * truth[::4, ::4]
        frames.append((amap.astype(np.float32), truth))
    return frames


@pytest.mark.parametrize("aupro", [False, True])
def test_merged_accumulators_equal_one_pass(aupro: bool) -> None:
    frames = _frames(0, 30)
    single = PixelMetrics(-3.0, 5.0, 512, aupro)
    parts = [PixelMetrics(-3.0, 5.0, 512, aupro) for _ in range(3)]
    for i, (amap, truth) in enumerate(frames):
        single.update(amap, truth)
        parts[i % 3].update(amap, truth)
    pooled = PixelMetrics.pooled(parts)
    assert np.array_equal(pooled.roc.pos, single.roc.pos) and np.array_equal(pooled.roc.neg, single.roc.neg)
    assert pooled.summary() == single.summary()
    assert set(single.summary()) == ({"pixel_auroc", "pixel_auroc_error_bound", "aupro_0.3"} if aupro
                                     else {"pixel_auroc", "pixel_auroc_error_bound"})
    if aupro:
        assert pooled.pro is not None and single.pro is not None
        assert pooled.pro.regions == single.pro.regions > 0
        assert np.array_equal(pooled.pro.overlap_sum, single.pro.overlap_sum)
        assert np.array_equal(pooled.pro.roc.neg, single.pro.roc.neg)
    # Pooling copies: the parts keep their own counts.
    assert sum(int(p.roc.pos.sum()) for p in parts) == int(single.roc.pos.sum())
    parts[0].merge(parts[1])
    assert int(parts[0].roc.neg.sum()) < int(single.roc.neg.sum())


def test_accumulator_upsamples_maps_to_the_mask() -> None:
    truth = np.zeros((40, 40), np.uint8)
    truth[:, 20:] = 1
    amap = np.zeros((4, 4), np.float32)
    amap[:, 2:] = 1.0
    metrics = PixelMetrics(0.0, 1.0, 64)
    metrics.update(amap, truth)
    assert int(metrics.roc.pos.sum()) == 800 and int(metrics.roc.neg.sum()) == 800
    assert metrics.summary()["pixel_auroc"] > 0.95


def test_accumulators_of_other_binning_do_not_merge() -> None:
    with pytest.raises(ValueError, match="do not merge"):
        PixelMetrics(0.0, 1.0, 64).merge(PixelMetrics(0.0, 1.0, 128))
    with pytest.raises(ValueError, match="do not merge"):
        PixelMetrics(0.0, 1.0, 64).merge(PixelMetrics(0.0, 1.0, 64, aupro=True))


def test_aupro_without_regions_is_none() -> None:
    metrics = PixelMetrics(0.0, 1.0, 64, aupro=True)
    truth = np.zeros((8, 8), np.uint8)
    truth[0, 0] = 1
    metrics.update(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.uint8))
    metrics.roc.update(np.ones((8, 8)), truth)  # a positive pixel for the ROC alone
    assert metrics.summary()["aupro_0.3"] is None


def test_alarm_rates() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1], dtype=bool)
    scores = np.array([0.2, 1.0, 0.5, 3.0, 0.9, 1.5])
    assert alarm_rates(labels, scores) == {"normal_frames_above_threshold": 0.5,
                                           "anomalous_frames_above_threshold": 0.5}
    rates = alarm_rates(np.zeros(3, dtype=bool), np.ones(3))
    assert rates["normal_frames_above_threshold"] == 1.0
    assert np.isnan(rates["anomalous_frames_above_threshold"])

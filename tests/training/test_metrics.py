"""Metrics: exact AUROC against scikit-learn, binned AUROC within its error bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from training.metrics import BinnedROC, auroc


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
        BinnedROC(1.0, 1.0)

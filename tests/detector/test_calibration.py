"""Score calibration: threshold at a false-alarm rate, empirical or Gumbel-extrapolated."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detector.calibration import MIN_EXCEEDANCES, Calibration


def test_many_samples_use_the_empirical_quantile() -> None:
    scores = np.random.default_rng(0).normal(size=10_000)
    far = 0.01
    cal = Calibration.fit(scores, far)
    assert cal.method == "empirical"
    assert cal.threshold == pytest.approx(np.quantile(scores, 1 - far))
    exceed = int((scores > cal.threshold).sum())
    assert abs(exceed - far * scores.size) <= 2
    assert cal.normal_exceedance() == pytest.approx(far, abs=2 / scores.size)
    assert cal.center == pytest.approx(np.median(scores))


def test_few_samples_extrapolate_with_gumbel_above_the_maximum() -> None:
    scores = np.random.default_rng(1).normal(size=50)
    assert scores.size * 0.001 < MIN_EXCEEDANCES
    cal = Calibration.fit(scores, 0.001)
    assert cal.method == "gumbel"
    assert cal.threshold > scores.max()
    assert cal.normal_exceedance() == 0.0


def test_gumbel_threshold_is_at_least_the_maximum_on_constant_like_scores() -> None:
    # Nearly no spread: the extrapolated quantile would sit at the maximum.
    scores = np.array([1.0, 1.0, 1.0, 1.0 + 1e-12])
    cal = Calibration.fit(scores, 0.001)
    assert cal.threshold > cal.center
    assert cal.threshold >= scores.max()


def test_calibrate_maps_center_to_zero_and_threshold_to_one() -> None:
    cal = Calibration.fit(np.random.default_rng(2).gamma(2.0, size=200), 0.01)
    assert float(cal.calibrate(cal.center)) == pytest.approx(0.0, abs=1e-12)
    assert float(cal.calibrate(cal.threshold)) == pytest.approx(1.0, abs=1e-12)
    raw = np.array([cal.center, cal.threshold, 2 * cal.threshold - cal.center])
    np.testing.assert_allclose(cal.calibrate(raw), [0.0, 1.0, 2.0], atol=1e-12)


def test_dict_round_trip_through_json() -> None:
    cal = Calibration.fit(np.random.default_rng(3).normal(size=30), 0.001)
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal
    assert isinstance(back.normal_scores, tuple)


@pytest.mark.parametrize(("scores", "far", "match"), [
    ([1.0], 0.01, "at least 2"),
    ([1.0, 2.0, 3.0], 0.0, "false_alarm_rate"),
    ([1.0, 2.0, 3.0], 1.0, "false_alarm_rate"),
])
def test_fit_rejects_bad_input(scores: list[float], far: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Calibration.fit(np.array(scores), far)


def test_threshold_interval_brackets_the_true_quantile_and_is_reproducible() -> None:
    import numpy as np

    from detector.calibration import threshold_interval

    rng = np.random.default_rng(1)
    scores = rng.gumbel(size=400)
    lo, hi = threshold_interval(scores, 0.01)
    true = -np.log(-np.log(0.99))  # the Gumbel(0, 1) 99 % quantile
    assert lo < true < hi
    assert (lo, hi) == threshold_interval(scores, 0.01)
    few_lo, few_hi = threshold_interval(scores[:8], 0.001)
    assert few_lo < few_hi  # short footage: a wide interval, never a point

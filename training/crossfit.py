"""Cross-fitted calibration: every normal training frame helps set the threshold.

A scene's threshold is a 1-in-1000 tail of its normal frame scores. The default split
holds out a quarter of the footage (one video in four) to measure it, so the tail rests on
80-110 frames of a few situations, and later footage, with people in places the held-out
seconds did not show, exceeds it far more often than promised. Cross-fitting uses all of
the footage without scoring any frame with a model that trained on it: the footage is cut
into K disjoint held-out parts (``SceneFootage.split(fraction, fold)``, K = 1/fraction);
fold 0 is the deployed model's own held-out part, and for each other fold a model of the
same settings and seed trains on the rest and scores that part. Every model's scores are
in its own units -- the map is standardised by the model's own held-out NLL statistics, so
a score reads "how unlike normal footage, in this model's normal spread" -- and the
deployed model's threshold is fitted on the pooled scores of all K parts.

Only the threshold moves: the deployed model, its map statistics and its ranking of
frames stay exactly as trained, so AUROC within a scene is unchanged; the pooled score
across scenes and the false-alarm rate at the threshold are what it is for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from detector.calibration import Calibration, threshold_interval
from detector.model import SceneModel

Rule = Literal["pooled", "max"]


@dataclass(frozen=True)
class CrossFit:
    """What cross-fitting changed: parts pooled, frames, and the threshold before/after."""

    folds: int
    frames: int
    before: Calibration
    after: Calibration
    ordered: tuple[tuple[float, ...], ...] = ()  # each fold's scores in footage order
    rule: Rule = "pooled"

    def interval(self) -> tuple[float, float]:
        """The 90 % interval of the cross-fitted threshold: each fold's scores resampled by
        blocks in footage order (:func:`detector.calibration.threshold_interval`) and the
        threshold re-made from them by this cross-fit's rule, so the interval is that of
        the threshold the rule gave. Without the folds' order (:func:`with_order`), the
        pooled scores, sorted, stand in as one run."""
        parts = [np.asarray(o) for o in self.ordered] or [np.asarray(self.after.normal_scores)]
        far = self.after.false_alarm_rate
        return threshold_interval(parts, far,
                                  statistic=lambda ps: rule_threshold(ps, far, self.rule).threshold)

    def summary(self) -> dict:
        """For the checkpoint's meta and the CLI's report."""
        return {"folds": self.folds, "normal_frames": self.frames, "rule": self.rule,
                "threshold_before": self.before.threshold, "threshold_after": self.after.threshold,
                "method": self.after.method, "fold0_calibration": self.before.to_dict()}


def cross_fit(model: SceneModel, fold_models: Sequence[SceneModel], rule: Rule = "pooled") -> CrossFit:
    """Re-fit ``model``'s appearance calibration (in place) on the held-out scores of itself
    and of its fold models.

    Args:
        model: the deployed scene model, calibrated on its own held-out part (fold 0).
        fold_models: one calibrated model per other fold, each trained without its fold's
            footage and calibrated on it (their ``calibration.normal_scores``).
        rule: ``pooled``: the threshold fitted on all folds' scores together; ``max``: the
            highest of the folds' own thresholds (each fold is other seconds of footage;
            the threshold must hold for the busiest of them), centred on the pooled median.

    Returns:
        What changed.

    Cross-fitting covers the appearance score (what a scene without a motion channel, or
    a camera's first frame, gets). A motion channel that joins the maps by ``max`` reads
    the appearance map in units of this calibration, so call this before the channel is
    calibrated (a model that has one is refused, :class:`ValueError`, not half re-fitted),
    and re-fit the joint calibration with :func:`cross_fit_motion`.

    >>> import numpy as np
    >>> from detector.model import SceneModel
    >>> def fitted(scores):
    ...     m = SceneModel.__new__(SceneModel)
    ...     m.calibration = Calibration.fit(np.asarray(scores), 0.01)
    ...     return m
    >>> m = fitted(np.linspace(0, 1, 100))
    >>> result = cross_fit(m, [fitted(np.linspace(0, 2, 100))])
    >>> (result.folds, result.frames, len(m.calibration.normal_scores))
    (2, 200, 200)
    >>> bool(m.calibration.threshold > result.before.threshold)
    True
    """
    before = model.calibration
    if model.motion is not None and model.motion.combine == "max":
        raise ValueError("cross-fitting a scene with a motion channel (combine: max) is not supported: "
                         "its joint calibration reads the appearance calibration")
    if before is None:
        raise ValueError("the scene model is not calibrated (not trained?)")
    parts = _fold_parts(before, [f.calibration for f in fold_models], "is not calibrated")
    model.calibration = rule_threshold(parts, before.false_alarm_rate, rule)
    return CrossFit(len(parts), sum(p.size for p in parts), before, model.calibration, rule=rule)


def cross_fit_motion(model: SceneModel, fold_models: Sequence[SceneModel], rule: Rule = "pooled") -> CrossFit:
    """Re-fit the joint (appearance + motion) calibration of ``model``'s motion channel (in
    place) on the joint held-out scores of itself and of its fold models, each of which has
    a motion channel of its own, trained without its fold's footage.

    Call it after the motion channel is calibrated on fold 0 (with the cross-fitted
    appearance calibration, which its joint map reads). Each fold's joint scores are in its
    own model's units, as for :func:`cross_fit`; ``rule`` likewise.

    Args:
        model: the deployed scene model, its motion channel calibrated on fold 0.
        fold_models: one model per other fold, with a calibrated motion channel.
        rule: ``pooled`` or ``max`` (see :func:`cross_fit`).

    Returns:
        What changed (the joint calibration before and after).
    """
    if model.motion is None or model.motion.calibration is None:
        raise ValueError("the scene model has no calibrated motion channel")
    before = model.motion.calibration
    parts = _fold_parts(before, [f.motion.calibration if f.motion is not None else None for f in fold_models],
                        "has no calibrated motion channel")
    model.motion.calibration = rule_threshold(parts, before.false_alarm_rate, rule)
    return CrossFit(len(parts), sum(p.size for p in parts), before, model.motion.calibration, rule=rule)


def _fold_parts(before: Calibration, folds: Sequence[Calibration | None], missing: str) -> list[np.ndarray]:
    """Fold 0's normal scores, then each fold model's (``missing`` ends the error for a fold
    without a calibration)."""
    parts = [np.asarray(before.normal_scores)]
    for i, cal in enumerate(folds, start=1):
        if cal is None:
            raise ValueError(f"fold model {i} {missing}")
        parts.append(np.asarray(cal.normal_scores))
    return parts


def rule_threshold(parts: Sequence[np.ndarray], false_alarm_rate: float, rule: Rule) -> Calibration:
    """The calibration ``rule`` makes of the folds' normal scores ``parts`` (see :func:`cross_fit`)
    at ``false_alarm_rate``.

    >>> cal = rule_threshold([np.linspace(0, 1, 50), np.linspace(0, 3, 50)], 0.01, "max")
    >>> bool(cal.threshold == Calibration.fit(np.linspace(0, 3, 50), 0.01).threshold)
    True
    """
    fitted = Calibration.fit(np.concatenate(parts), false_alarm_rate)
    if rule == "max":
        busiest = max((Calibration.fit(p, false_alarm_rate) for p in parts), key=lambda c: c.threshold)
        threshold = max(busiest.threshold, fitted.center + 1e-6)
        return replace(fitted, threshold=threshold, method=busiest.method)
    if rule != "pooled":
        raise ValueError(f"unknown cross-fit rule {rule!r} (pooled or max)")
    return fitted


def with_order(result: CrossFit, ordered: Sequence[np.ndarray]) -> CrossFit:
    """``result`` with each fold's scores in footage order (fold 0 first), for
    :func:`detector.calibration.threshold_interval`."""
    parts = tuple(tuple(float(v) for v in np.asarray(o, dtype=np.float64).ravel()) for o in ordered)
    if sum(map(len, parts)) != result.frames:
        raise ValueError(f"{sum(map(len, parts))} ordered scores for {result.frames} pooled ones")
    return replace(result, ordered=parts)


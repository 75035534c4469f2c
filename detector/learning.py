"""A camera's learning period: its threshold refined from its own footage, its scores
provisional meanwhile.

A scene's threshold is fitted on normal footage the checkpoint saw at training time, which
may be quieter than what a deployed camera sends (measured on the campus benchmark: one
scene's held-out quarter let 7 % of later normal frames past a threshold meant for 0.1 %).
With ``detector.learning.seconds > 0`` each camera, the first time the detector sees it
with a checkpoint, spends that much footage (capture time, and at least ``min_frames``
frames) learning:

* its scores are published as they are, marked ``provisional`` (:class:`~common.messages.ScoreMessage`),
  and the alert role marks alerts raised on them provisional;
* its calibrated frame scores are collected; at the end of the period the threshold they
  imply at the scene's false-alarm rate is fitted (:meth:`detector.calibration.Calibration.fit`,
  with its block-bootstrap interval);
* **the rule is raise-only**: the camera's scale becomes ``max(1, fitted threshold)``, and
  from then on its scores and maps are divided by it. A busier camera gets a higher
  threshold; a quieter one keeps the checkpoint's. Lowering was measured to hurt: footage
  right after installation is often quieter than later footage (README, "Cross-fitted
  thresholds": a refit on a scene's first 27 s let 8.9 % of later normal frames past).

The state is per ``(camera, checkpoint id)``: a new checkpoint of the scene learns again,
in its own units. A redelivered frame (a seq not above the last one seen) is scaled but
not counted twice. :class:`LearningPeriod` is pure apart from the optional
:class:`SiteStore`, which keeps each finished period's result in a JSON file, so a restarted
detector does not learn again (an unfinished period starts again after a restart).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from common.files import replace_file
from detector.calibration import Calibration, threshold_interval
from detector.settings import LearningSettings

log = logging.getLogger(__name__)

__all__ = ["LearnedThreshold", "LearningPeriod", "SiteStore"]


@dataclass(frozen=True)
class LearnedThreshold:
    """The result of one camera's learning period, in the checkpoint's calibrated units."""

    camera: str
    model: str
    scale: float  # scores and maps are divided by this (>= 1: raise-only)
    fitted: float  # the threshold the camera's own footage implies
    interval: tuple[float, float]  # its 90 % block-bootstrap interval
    method: str  # "empirical" or "gumbel" (Calibration.method)
    frames: int
    seconds: float

    def to_json(self) -> dict:
        d = asdict(self)
        d["interval"] = list(self.interval)
        return d

    @classmethod
    def from_json(cls, d: dict) -> LearnedThreshold:
        lo, hi = d["interval"]
        return cls(str(d["camera"]), str(d["model"]), float(d["scale"]), float(d["fitted"]),
                   (float(lo), float(hi)), str(d["method"]), int(d["frames"]), float(d["seconds"]))


def learn_threshold(camera: str, model: str, scores: np.ndarray, seconds: float,
                    false_alarm_rate: float) -> LearnedThreshold:
    """The raise-only threshold of a camera from its calibrated frame scores, in footage order.

    Args:
        camera: the camera id.
        model: the checkpoint id the scores were calibrated with.
        scores: the camera's calibrated frame scores (1.0 = the checkpoint's threshold).
        seconds: the footage time they cover.
        false_alarm_rate: the scene's nominal rate.

    Returns:
        The learned threshold; ``scale`` is never below 1.

    >>> quiet = np.linspace(-1.0, 0.0, 400)
    >>> learn_threshold("cam", "01:cflow:x", quiet, 40.0, 0.001).scale
    1.0
    >>> busy = learn_threshold("cam", "01:cflow:x", np.linspace(0.0, 3.0, 400), 40.0, 0.001)
    >>> busy.scale > 2.9
    True
    """
    ordered = np.asarray(scores, dtype=np.float64).ravel()
    cal = Calibration.fit(ordered, false_alarm_rate)
    interval = threshold_interval(ordered, false_alarm_rate)
    return LearnedThreshold(camera, model, max(1.0, cal.threshold), cal.threshold, interval, cal.method,
                            int(ordered.size), float(seconds))


class SiteStore:
    """Finished learning periods on disk: ``ROOT/<camera>/<checkpoint id>.json`` (the id's
    ``:`` written as ``_``). Camera ids and checkpoint ids are file-name safe by their rules
    (:mod:`common.ids`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, camera: str, model: str) -> Path:
        return self.root / camera / f"{model.replace(':', '_')}.json"

    def load(self, camera: str, model: str) -> LearnedThreshold | None:
        """The stored result, or None (none yet; an unreadable file is logged and ignored)."""
        path = self.path(camera, model)
        try:
            data = json.loads(path.read_text())
            learned = LearnedThreshold.from_json(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("detector: ignoring the unreadable learned threshold %s (%s); camera %s learns again",
                      path, exc, camera)
            return None
        if (learned.camera, learned.model) != (camera, model) or not learned.scale >= 1.0:
            log.error("detector: ignoring %s: it is not camera %s's result for %s", path, camera, model)
            return None
        return learned

    def save(self, learned: LearnedThreshold) -> None:
        """Write atomically (:func:`common.files.replace_file`); OSError propagates."""
        path = self.path(learned.camera, learned.model)
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, json.dumps(learned.to_json(), indent=1).encode())


@dataclass
class _Learning:
    first_ts: int
    last_seq: int
    scores: list[float] = field(default_factory=list)
    last_ts: int = 0


class LearningPeriod:
    """Every camera's learning period (see the module docstring). Not thread-safe: the
    detector's scoring thread owns it.

    >>> lp = LearningPeriod(LearningSettings(seconds=1.0, min_frames=2))
    >>> [lp.observe("cam", "01:cflow:x", seq, seq * 500, 0.2, 0.001) for seq in range(4)]
    [(1.0, True), (1.0, True), (1.0, False), (1.0, False)]
    """

    def __init__(self, settings: LearningSettings, store: SiteStore | None = None,
                 max_cameras: int = 4096) -> None:
        self.settings, self.store, self.max_cameras = settings, store, max_cameras
        self.learned: OrderedDict[tuple[str, str], LearnedThreshold] = OrderedDict()
        self._learning: dict[tuple[str, str], _Learning] = {}
        self.save_failures = 0

    @property
    def enabled(self) -> bool:
        return self.settings.seconds > 0

    def observe(self, camera: str, model: str, seq: int, ts: int, score: float,
                false_alarm_rate: float) -> tuple[float, bool]:
        """One scored frame of ``camera`` (scores of a camera in seq order, as a partition
        delivers them). Returns ``(scale, provisional)``: divide the frame's score and map
        by ``scale``; ``provisional`` while the camera's period runs."""
        if not self.enabled:
            return 1.0, False
        key = (camera, model)
        done = self.learned.get(key)
        if done is None and key not in self._learning and self.store is not None:
            done = self.store.load(camera, model)
            if done is not None:
                self._remember(done)
        if done is not None:
            self.learned.move_to_end(key)
            return done.scale, False
        state = self._learning.get(key)
        if state is None:
            if len(self._learning) >= self.max_cameras:
                self._learning.pop(next(iter(self._learning)))  # the oldest unfinished period restarts
            state = self._learning[key] = _Learning(first_ts=ts, last_seq=seq - 1)
            log.info("detector: camera %s starts its learning period for %s (%.0f s, at least %d frames): "
                     "its alerts are provisional until it ends", camera, model, self.settings.seconds,
                     self.settings.min_frames)
        if seq <= state.last_seq:
            return 1.0, True  # redelivered: scored again, not counted again
        state.last_seq, state.last_ts = seq, max(state.last_ts, ts)
        state.scores.append(float(score))
        seconds = (state.last_ts - state.first_ts) / 1000.0
        n = len(state.scores)
        if n < self.settings.max_frames and (n < self.settings.min_frames or seconds < self.settings.seconds):
            return 1.0, True
        del self._learning[key]
        learned = learn_threshold(camera, model, np.asarray(state.scores), seconds, false_alarm_rate)
        self._remember(learned)
        log.info("detector: camera %s learned its threshold for %s from %d frames (%.0f s): its footage "
                 "puts it at %.3f (90 %% interval %.3f-%.3f, %s); scores are divided by %.3f from now on",
                 camera, model, learned.frames, learned.seconds, learned.fitted, *learned.interval,
                 learned.method, learned.scale)
        if self.store is not None:
            try:
                self.store.save(learned)
            except OSError as exc:
                self.save_failures += 1
                log.error("detector: cannot keep camera %s's learned threshold in %s (%s): it holds until "
                          "the detector restarts, then the camera learns again", camera,
                          self.store.path(camera, model), exc)
        return learned.scale, False

    def _remember(self, learned: LearnedThreshold) -> None:
        self.learned[(learned.camera, learned.model)] = learned
        while len(self.learned) > self.max_cameras:
            self.learned.popitem(last=False)  # reloaded from the store when it comes back

"""The per-camera alert state machine: calibrated scores in, start / update / end out.

Pure and deterministic: it sees only ``(seq, ts, score, model)`` of each scored frame, in
order, and decides with capture times (``ts``), never the wall clock -- so replaying the same
scores gives the same alerts with the same ids (:func:`alert_id`), which is what makes the
alert role idempotent under redelivery and replays.

* **start** -- at least ``k`` of the last ``n`` scores are ``>= enter`` and no cool-down is
  running. The alert's ``start_seq``/``start_ts`` are those of the frame that completed the
  condition (the moment the alert is raised); ``onset_seq`` is the first hit in that window.
* **update** -- while open, the peak score rose by ``update_min_rise`` (relative) over the
  last published peak, and ``update_min_interval_s`` passed since the last event.
* **end** -- ``m`` consecutive scores ``< exit`` (hysteresis: ``exit <= enter``), and the alert
  is at least ``min_duration_s`` old; ``end_seq``/``end_ts`` are the deciding frame. Then no
  alert starts for ``cooldown_s``.

The peak (score, seq, ts) covers the frames from ``onset_seq`` on.

**Provisional** -- an alert is provisional when any score it was decided on (the window
that started it, and every frame while it is open) was provisional: scored during the
camera's learning period, while its threshold was still being learned (``detector.learning``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Literal

from alerting.config import LifecycleSettings

__all__ = ["AlertLifecycle", "AlertState", "Transition", "TransitionKind", "alert_id"]

TransitionKind = Literal["start", "update", "end"]


def alert_id(camera: str, start_seq: int, start_ts: int, source: str = "replay") -> str:
    """Deterministic alert id: camera + start seq (``cam-000000123``).

    A live source's seq restarts at 0 when its ingest process restarts, so live alerts also
    carry the start time (``cam-000000123-1700000000000``); a redelivered record has the same
    ``ts`` and so the same id.
    """
    base = f"{camera}-{start_seq:09d}"
    return f"{base}-{start_ts}" if source == "live" else base


@dataclass(frozen=True)
class AlertState:
    """An alert as of one transition."""

    alert_id: str
    camera: str
    scene: str
    source: str
    model: str
    threshold: float  # the enter threshold it was decided with (calibrated)
    exit_threshold: float
    onset_seq: int
    start_seq: int
    start_ts: int
    peak_score: float
    peak_seq: int
    peak_ts: int
    end_seq: int | None = None
    end_ts: int | None = None
    #: decided on scores of the camera's learning period (see the module docstring)
    provisional: bool = False
    #: low-water seq: replaying scores from here reproduces this alert (window before the start)
    anchor_seq: int = 0


@dataclass(frozen=True)
class Transition:
    kind: TransitionKind
    seq: int  # the frame that caused it
    ts: int
    alert: AlertState


@dataclass
class _Scored:
    seq: int
    ts: int
    score: float
    hit: bool
    provisional: bool = False


class AlertLifecycle:
    """One camera's state machine (see the module docstring). Not thread-safe."""

    def __init__(self, camera: str, scene: str, settings: LifecycleSettings, source: str = "replay") -> None:
        self.camera, self.scene, self.source = camera, scene, source
        self.settings = settings
        self.window: deque[_Scored] = deque(maxlen=settings.n)
        self.active: AlertState | None = None
        self.last: AlertState | None = None  # the last ended alert (cool-down)
        self._quiet = 0
        self._published_peak = 0.0
        self._last_event_ts = 0
        self.last_seq: int | None = None
        self.last_ts: int | None = None

    # ------------------------------------------------------------------ queries
    def in_cooldown(self, ts: int | None = None) -> bool:
        ts = self.last_ts if ts is None else ts
        if self.last is None or self.last.end_ts is None or ts is None:
            return False
        return ts < self.last.end_ts + self.settings.cooldown_s * 1000

    def low_water(self) -> int | None:
        """The oldest seq whose score this state still depends on (None: nothing seen yet).
        Re-reading scores from here after a restart reproduces the current state's alerts."""
        marks = [self.window[0].seq] if self.window else []
        if self.active is not None:
            marks.append(self.active.anchor_seq)
        if self.last is not None and self.in_cooldown():
            marks.append(self.last.anchor_seq)
        return min(marks) if marks else None

    # ------------------------------------------------------------------ the machine
    def observe(self, seq: int, ts: int, score: float, model: str, provisional: bool = False
                ) -> list[Transition]:
        """Feed one scored frame (seqs increasing); returns the transitions it caused."""
        s = self.settings
        self.last_seq, self.last_ts = seq, ts
        self.window.append(_Scored(seq, ts, score, score >= s.enter, provisional))
        a = self.active
        if a is None:
            if self.in_cooldown(ts) or sum(x.hit for x in self.window) < s.k:
                return []
            return [self._start(seq, ts, model)]
        if provisional and not a.provisional:
            a = self.active = replace(a, provisional=True)
        if score > a.peak_score:
            a = self.active = replace(a, peak_score=score, peak_seq=seq, peak_ts=ts)
        self._quiet = self._quiet + 1 if score < s.exit else 0
        if self._quiet >= s.m and ts - a.start_ts >= s.min_duration_s * 1000:
            ended = replace(a, end_seq=seq, end_ts=ts)
            self.active, self.last = None, ended
            return [Transition("end", seq, ts, ended)]
        if (a.peak_score > self._published_peak * (1 + s.update_min_rise)
                and ts - self._last_event_ts >= s.update_min_interval_s * 1000):
            self._published_peak, self._last_event_ts = a.peak_score, ts
            return [Transition("update", seq, ts, a)]
        return []

    def _start(self, seq: int, ts: int, model: str) -> Transition:
        s = self.settings
        hits = [x for x in self.window if x.hit]
        peak = max(hits, key=lambda x: (x.score, -x.seq))
        self.active = AlertState(
            alert_id=alert_id(self.camera, seq, ts, self.source), camera=self.camera, scene=self.scene,
            source=self.source, model=model, threshold=s.enter, exit_threshold=s.exit,
            onset_seq=hits[0].seq, start_seq=seq, start_ts=ts, peak_score=peak.score, peak_seq=peak.seq,
            peak_ts=peak.ts, anchor_seq=self.window[0].seq,
            provisional=any(x.provisional for x in self.window),
        )
        self._quiet = 0
        self._published_peak, self._last_event_ts = peak.score, ts
        return Transition("start", seq, ts, self.active)

    def force_end(self) -> Transition | None:
        """End the open alert at the last frame seen (the stream ended or went silent)."""
        a = self.active
        if a is None or self.last_seq is None or self.last_ts is None:
            return None
        ended = replace(a, end_seq=self.last_seq, end_ts=self.last_ts)
        self.active, self.last = None, ended
        return Transition("end", self.last_seq, self.last_ts, ended)

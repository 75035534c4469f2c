"""The alert record (what a store keeps) and the alert event (what ``vigil.alerts`` carries).

``vigil.alerts`` -- key: the camera id (UTF-8); value: one JSON object per event::

    {"schema": 1, "camera": "gate", "scene": "01", "seq": 57, "ts": 1700000005700,
     "source": "replay",                      # the envelope: the frame that caused the event
     "event_id": "gate-000000057:start:57",   # unique per event: subscribers may dedupe on it
     "alert_id": "gate-000000057",            # deterministic: camera + start seq
     "state": "start" | "update" | "end",
     "start_seq": 57, "start_ts": ..., "end_seq": null, "end_ts": null, "onset_seq": 55,
     "peak_score": 1.84, "peak_seq": 57, "peak_ts": ...,
     "threshold": 1.0, "exit_threshold": 0.8, "model": "01:cflow:4be0c1a2e9f1",
     "region": {"x0": 310, "y0": 200, "x1": 352, "y1": 260, "width": 768, "height": 576},
     "clip_key": "vigil:clip:gate-000000057", "snapshot_key": "vigil:snap:gate-000000057",
     "clip_ready": false, "clip_frames": 0, "provisional": false}

``region`` is the box of the hottest area of the peak frame's map in frame pixels
(``x0 <= x < x1``), or null; the clip exists once ``clip_ready`` is true (the ``end`` event,
after the post-roll); the snapshot (the peak frame so far) exists from the ``start`` event on
unless ``snapshot_key`` is null. ``provisional`` is true for an alert decided on scores of
the camera's learning period (its threshold was still being learned); events of older
writers lack it, read as false.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from alerting.lifecycle import AlertState
from alerting.region import Region

__all__ = ["ALERTS_TOPIC", "EVENT_SCHEMA", "AlertRecord", "EventError", "check_event", "encode_event",
           "event_id", "parse_event"]

ALERTS_TOPIC = "vigil.alerts"
EVENT_SCHEMA = 1

Status = Literal["open", "closed"]
EventState = Literal["start", "update", "end"]
_ENVELOPE = ("schema", "camera", "scene", "seq", "ts", "source")
_REQUIRED = (*_ENVELOPE, "alert_id", "state", "start_ts", "end_ts", "peak_score", "threshold", "model",
             "region", "clip_key", "snapshot_key")


class EventError(ValueError):
    """An alert event that cannot be parsed."""


def event_id(alert_id: str, state: str, seq: int) -> str:
    return f"{alert_id}:{state}:{seq}"


@dataclass(frozen=True)
class AlertRecord:
    """An alert's current state, as stored (Redis hash ``alert:{id}`` / ``alerts/{id}.json``).

    ``status``: ``open`` (running, or ended with its post-roll still being recorded),
    ``closed`` (ended, clip stored). ``version`` grows with every write of the alert (the
    seq of the frame that caused it): a store never replaces a record with an older version,
    so redelivered or spooled writes cannot roll an alert back.
    """

    alert_id: str
    camera: str
    scene: str
    source: str
    model: str
    threshold: float
    exit_threshold: float
    onset_seq: int
    start_seq: int
    start_ts: int
    peak_score: float
    peak_seq: int
    peak_ts: int
    status: Status
    version: int
    clip_key: str
    snapshot_key: str | None
    end_seq: int | None = None
    end_ts: int | None = None
    region: Region | None = None
    clip_ready: bool = False
    clip_frames: int = 0
    clip_first_seq: int | None = None
    clip_last_seq: int | None = None
    written_ms: int = 0  # wall clock of the write (retention of the local store)
    provisional: bool = False  # decided during the camera's learning period
    #: ``[seq, ts, score]`` of the clip's frames (pre-roll to post-roll): the score timeline
    #: the review page draws against the threshold
    timeline: list = field(default_factory=list)

    @classmethod
    def from_state(cls, state: AlertState, *, status: Status, version: int, clip_key: str,
                   snapshot_key: str | None, region: Region | None, **extra: Any) -> AlertRecord:
        # The record carries every field of the state it shares a name with (not the
        # lifecycle's internal anchor), so a field added to both needs no copy here.
        shared = {f.name for f in fields(cls)}
        carried = {k: v for k, v in asdict(state).items() if k in shared}
        return cls(**carried, status=status, version=version, clip_key=clip_key,
                   snapshot_key=snapshot_key, region=region, written_ms=int(time.time() * 1000),
                   **extra)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["region"] = self.region.to_json() if self.region is not None else None
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AlertRecord:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        kw["region"] = Region.from_json(data.get("region"))
        return cls(**kw)

    def to_fields(self) -> dict[str, str]:
        """Redis hash fields: every value JSON-encoded."""
        return {k: json.dumps(v, separators=(",", ":")) for k, v in self.to_json().items()}

    @classmethod
    def from_fields(cls, raw: dict[bytes | str, bytes | str]) -> AlertRecord:
        data = {}
        for k, v in raw.items():
            key = k.decode() if isinstance(k, bytes) else k
            if key.startswith("evt:"):
                continue
            data[key] = json.loads(v)
        return cls.from_json(data)

    def event(self, state: EventState, seq: int, ts: int) -> dict[str, Any]:
        """The ``vigil.alerts`` event of this record, caused by frame ``seq`` at ``ts``."""
        return {
            "schema": EVENT_SCHEMA, "camera": self.camera, "scene": self.scene, "seq": seq, "ts": ts,
            "source": self.source, "event_id": event_id(self.alert_id, state, seq),
            "alert_id": self.alert_id, "state": state,
            "start_seq": self.start_seq, "start_ts": self.start_ts, "end_seq": self.end_seq,
            "end_ts": self.end_ts, "onset_seq": self.onset_seq, "peak_score": round(self.peak_score, 6),
            "peak_seq": self.peak_seq, "peak_ts": self.peak_ts, "threshold": self.threshold,
            "exit_threshold": self.exit_threshold, "model": self.model,
            "region": self.region.to_json() if self.region is not None else None,
            "clip_key": self.clip_key, "snapshot_key": self.snapshot_key, "clip_ready": self.clip_ready,
            "clip_frames": self.clip_frames, "provisional": self.provisional,
        }


def encode_event(event: dict[str, Any]) -> tuple[bytes, bytes]:
    """``(key, value)`` of a ``vigil.alerts`` record."""
    return event["camera"].encode("utf-8"), json.dumps(event, separators=(",", ":")).encode("utf-8")


def parse_event(value: bytes | str | None) -> dict[str, Any]:
    """Parse and check an alert event (:class:`EventError` names what is wrong)."""
    if not isinstance(value, bytes | bytearray | str):
        raise EventError(f"alert event must be JSON bytes or text, got {type(value).__name__}")
    try:
        event = json.loads(value)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EventError(f"alert event is not JSON: {str(exc)[:200]}") from None
    return check_event(event)


def check_event(event: Any) -> dict[str, Any]:
    """Check a decoded alert event: a JSON object with the contract's fields (:class:`EventError`
    names what is wrong)."""
    if not isinstance(event, dict):
        raise EventError(f"alert event must be a JSON object, got {type(event).__name__}")
    missing = [k for k in _REQUIRED if k not in event]
    if missing:
        raise EventError(f"alert event lacks {', '.join(missing)}")
    if event["state"] not in ("start", "update", "end"):
        raise EventError(f"alert event state must be start/update/end, got {str(event['state'])[:40]!r}")
    for name in ("camera", "alert_id"):
        if not isinstance(event[name], str):
            raise EventError(f"alert event {name} must be a string, got {type(event[name]).__name__}")
    return event

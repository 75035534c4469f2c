"""Alert records and writes for the store tests."""

from __future__ import annotations

import time

from alerting.events import AlertRecord
from alerting.region import Region
from alerting.store import AlertWrite

T0 = 1_700_000_000_000


def record(alert_id: str = "cam-000000010", version: int = 10, status: str = "open", camera: str = "cam",
           start_seq: int = 10, **kw) -> AlertRecord:
    base = dict(alert_id=alert_id, camera=camera, scene="01", source="replay", model="01:cflow:abc",
                threshold=1.0, exit_threshold=0.8, onset_seq=start_seq - 2, start_seq=start_seq,
                start_ts=T0 + start_seq * 100, peak_score=1.5, peak_seq=start_seq,
                peak_ts=T0 + start_seq * 100,
                status=status, version=version, clip_key=f"clip:{alert_id}", snapshot_key=f"snap:{alert_id}",
                region=Region(1, 2, 30, 40, 256, 192), written_ms=int(time.time() * 1000))
    base.update(kw)
    return AlertRecord(**base)


def write(rec: AlertRecord, state: str = "start", seq: int | None = None, **kw) -> AlertWrite:
    return AlertWrite(rec, rec.event(state, rec.version if seq is None else seq, T0), **kw)

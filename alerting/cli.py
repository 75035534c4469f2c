"""``vigil alerts tail | list | get``: follow alert events, list stored alerts, fetch a clip.

``tail`` follows ``vigil.alerts`` on Kafka when the config's bus is Kafka, otherwise the
store's event log (the Redis stream ``alerts`` or the local store's ``events.jsonl``), and
prints one JSON event per line. ``list`` and ``get`` read the store the config names (Redis
or the local folder of the embedded mode).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from alerting.config import RedisStoreConfig
from alerting.events import ALERTS_TOPIC, EventError, parse_event
from alerting.store import AlertStore, RedisStore, StoreError, open_store

__all__ = ["AlertNotFoundError", "alerts_get", "alerts_list", "alerts_tail", "follow_store", "follow_topic",
           "open_reader"]


class AlertNotFoundError(LookupError):
    """No alert with that id in the store (never stored, or past its retention)."""


def _emit(event: dict[str, Any], out: IO[str] | None) -> None:
    out = sys.stdout if out is None else out
    out.write(json.dumps(event, separators=(",", ":")) + "\n")
    out.flush()


def follow_store(store: AlertStore, from_beginning: bool, poll_ms: int = 1000) -> Iterator[dict | None]:
    """Events from the store's log; yields ``None`` after each empty wait (for timeouts)."""
    cursor = None if from_beginning else store.latest_cursor()
    while True:
        batch = store.events(cursor, block_ms=poll_ms)
        if not batch:
            yield None
        for position, event in batch:
            cursor = position
            yield event


def follow_topic(kafka: Any, from_beginning: bool, topic: str = ALERTS_TOPIC,
                 poll_ms: int = 1000) -> Iterator[dict | None]:
    """Events from ``vigil.alerts`` (a group-less Kafka consumer: nothing is committed)."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from common.bus import BusError

    try:
        consumer = KafkaConsumer(topic, group_id=None, enable_auto_commit=False,
                                 auto_offset_reset="earliest" if from_beginning else "latest",
                                 **kafka.client_kwargs())
    except KafkaError as exc:
        raise BusError(f"cannot reach Kafka at {','.join(kafka.bootstrap_servers)}: {exc!r}") from exc
    try:
        while True:
            batches = consumer.poll(timeout_ms=poll_ms)
            records = [r for recs in batches.values() for r in recs]
            if not records:
                yield None
            for r in sorted(records, key=lambda r: (r.timestamp, r.partition, r.offset)):
                try:
                    yield parse_event(r.value)
                except EventError as exc:
                    print(f"vigil: skipping unparseable alert event at {r.topic}[{r.partition}]@{r.offset}: "
                          f"{exc}", file=sys.stderr)
    finally:
        consumer.close()


def alerts_tail(events: Iterator[dict | None], camera: str | None = None, count: int | None = None,
                idle_timeout_s: float | None = None, out: IO[str] | None = None) -> int:
    """Print events (JSON lines) of ``camera`` (or all) until ``count`` were printed or nothing
    came for ``idle_timeout_s``; returns how many were printed."""
    printed = 0
    last = time.monotonic()
    for event in events:
        now = time.monotonic()
        if event is None:
            if idle_timeout_s is not None and now - last >= idle_timeout_s:
                break
            continue
        last = now
        if camera is not None and event.get("camera") != camera:
            continue
        _emit(event, out)
        printed += 1
        if count is not None and printed >= count:
            break
    return printed


def alerts_list(store: AlertStore, camera: str | None, limit: int, out: IO[str] | None = None) -> int:
    records = store.list(camera, limit)
    for rec in records:
        _emit(rec.to_json(), out)
    return len(records)


def alerts_get(store: AlertStore, alert_id: str, clip_out: Path | None, snapshot_out: Path | None,
               out: IO[str] | None = None) -> dict[str, Any]:
    rec = store.get(alert_id)
    if rec is None:
        raise AlertNotFoundError(f"no alert {alert_id!r} in the store (unknown id, or past its retention)")
    if clip_out is not None:
        clip = store.clip(alert_id)
        if clip is None:
            raise StoreError(f"alert {alert_id} has no clip yet (status {rec.status}: the clip is stored "
                             "when the alert ends and its post-roll is recorded)")
        Path(clip_out).write_bytes(clip)
    if snapshot_out is not None:
        snap = store.snapshot(alert_id)
        if snap is None:
            raise StoreError(f"alert {alert_id} has no snapshot "
                             "(its peak frame never reached the alert role)")
        Path(snapshot_out).write_bytes(snap)
    data = rec.to_json()
    _emit(data, out)
    return data


def open_reader(cfg: Any) -> AlertStore:
    """The store of a :class:`~vigil.config.VigilConfig`, for reading (Redis without a spool)."""
    store_cfg = cfg.alerting.store
    if isinstance(store_cfg, RedisStoreConfig):
        return RedisStore(store_cfg)
    return open_store(store_cfg)

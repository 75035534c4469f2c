"""``vigil alerts tail | list | get``: follow alert events, list stored alerts, fetch a clip.

``tail`` follows ``vigil.alerts`` on Kafka when the config's bus is Kafka, otherwise the
store's event log (the Redis stream ``alerts`` or the local store's ``events.jsonl``), and
prints one JSON event per line. ``list`` and ``get`` read the store the config names (Redis
or the local folder of the embedded mode).

No single record stops ``tail``: a record that is not an alert event is skipped with one line
on stderr naming topic, partition and offset (the store's readers log a damaged log entry
themselves), and counted by reason in ``skipped`` when the caller passes a counter.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from alerting.config import RedisStoreConfig
from alerting.events import ALERTS_TOPIC, EventError, parse_event
from alerting.store import AlertStore, RedisStore, StoreError, open_store

__all__ = ["AlertNotFoundError", "alerts_get", "alerts_list", "alerts_tail", "follow_records", "follow_store",
           "follow_topic", "open_reader", "skip_record"]


class AlertNotFoundError(LookupError):
    """No alert with that id in the store (never stored, or past its retention)."""


def _emit(event: dict[str, Any], out: IO[str] | None) -> None:
    out = sys.stdout if out is None else out
    out.write(json.dumps(event, separators=(",", ":")) + "\n")
    out.flush()


def follow_store(store: AlertStore, from_beginning: bool, poll_ms: int = 1000,
                 skipped: Counter[str] | None = None) -> Iterator[dict | None]:
    """Events from the store's log; yields ``None`` after each empty wait (for timeouts).
    Entries that are no valid event are passed over (counted in ``skipped``)."""
    cursor = None if from_beginning else store.latest_cursor()
    while True:
        batch = store.events(cursor, block_ms=poll_ms)
        if not batch:
            yield None
        for position, event in batch:
            cursor = position
            if event is None:
                if skipped is not None:
                    skipped["bad_event"] += 1
                continue
            yield event


def skip_record(topic: str, partition: int, offset: int, exc: BaseException,
                skipped: Counter[str] | None = None) -> str:
    """Report a record ``tail`` cannot use: one line on stderr, counted by reason; returns the reason."""
    reason = "bad_event" if isinstance(exc, EventError) else f"error:{type(exc).__name__}"
    if skipped is not None:
        skipped[reason] += 1
    print(f"vigil: skipping unparseable alert event at {topic}[{partition}]@{offset}: {reason}: "
          f"{str(exc)[:300]}", file=sys.stderr)
    return reason


def follow_records(records: Iterator[Any], skipped: Counter[str] | None = None) -> Iterator[dict]:
    """The events of consumed ``vigil.alerts`` records (objects with ``topic``, ``partition``,
    ``offset``, ``value``); a record that is no event is reported (:func:`skip_record`) and
    passed over."""
    for r in records:
        try:
            event = parse_event(r.value)
        except Exception as exc:  # noqa: BLE001 - the per-record guard: counted, reported, skipped
            skip_record(r.topic, r.partition, r.offset, exc, skipped)
            continue
        yield event


def follow_topic(kafka: Any, from_beginning: bool, topic: str = ALERTS_TOPIC,
                 poll_ms: int = 1000, skipped: Counter[str] | None = None) -> Iterator[dict | None]:
    """Events from ``vigil.alerts`` (a group-less Kafka consumer: nothing is committed);
    records that are no valid event are reported and passed over (counted in ``skipped``)."""
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
            yield from follow_records(iter(sorted(records, key=lambda r: (r.timestamp, r.partition,
                                                                        r.offset))), skipped)
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
        if not isinstance(event, dict) or (camera is not None and event.get("camera") != camera):
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

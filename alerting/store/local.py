"""The alert store in a local folder (embedded mode): :class:`LocalStore`, with its retention.

Layout (``alerting.store.dir``): ``alerts/{id}.json`` · ``clips/{id}.mp4`` ·
``snaps/{id}.jpg`` · ``reviews/{id}.json`` (an operator's mark, :func:`~alerting.store.base.make_review`)
· ``index/{camera}.json`` ({id: start_ts}) · ``events.jsonl`` (capped at ``events_max`` lines).
A review is a file of its own, so the review page (another process, perhaps) never races the
alert role's writes of the record. Files are replaced atomically; alerts older than the retention
(by write time) are deleted, and beyond ``max_alerts`` the oldest written go first.

A write that fails (disk full, unwritable) raises :class:`~alerting.store.base.StoreWriteError`
naming the path, and leaves every file as it was: files are written to a temporary name,
fsynced and renamed over the old one; an event line that could not be appended whole is cut
off again. Repeating the write later (the alert worker does) is idempotent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alerting.config import LocalStoreConfig
from alerting.events import AlertRecord, EventError, check_event
from alerting.store.base import (
    AlertWrite,
    PutResult,
    StoreError,
    StoreWriteError,
    make_review,
    page_filter,
    write_atomic,
)
from common.ids import is_alert_id, is_camera_id

__all__ = ["LocalStore"]

log = logging.getLogger(__name__)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, RecursionError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None


def _record_file(path: Path) -> dict[str, Any] | None:
    """An ``alerts/{id}.json`` as ``{"record": {...}, "events": {...}}``; None if missing or not of
    that shape (logged: such a file is replaced by the next write)."""
    data = _read_json(path)
    if data is None:
        return None
    if (isinstance(data, dict) and isinstance(data.get("record"), dict)
            and isinstance(data.get("events", {}), dict)
            and isinstance(data["record"].get("version"), int)):
        data.setdefault("events", {})
        return data
    log.warning("ignoring %s: not an alert record file", path)
    return None


def _name(kind: str, value: str, valid: Callable[[object], bool]) -> str:
    """``value`` if it can name a file here (``valid``: an alert id, or a camera id of :mod:`common.ids`)."""
    if not valid(value):
        raise StoreError(f"refused: {kind} {str(value)[:40]!r} cannot name a file")
    return value


class LocalStore:
    """:class:`AlertStore` in a local folder (embedded mode). Thread-safe within a process;
    readers in other processes (``vigil alerts ...``) see only complete files."""

    PURGE_EVERY_S = 60.0

    def __init__(self, cfg: LocalStoreConfig) -> None:
        self.cfg = cfg
        self.root = Path(cfg.dir)
        for sub in ("alerts", "clips", "snaps", "index", "reviews"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.events_path = self.root / "events.jsonl"
        self._lock = threading.RLock()
        self._bad_lines_logged = 0
        self._bad_events_logged: OrderedDict[int, None] = OrderedDict()
        self._next_event = self._last_event_number() + 1
        self._event_lines = self._count_event_lines()
        self._last_purge = 0.0
        self._alerts = sum(1 for _ in (self.root / "alerts").glob("*.json"))
        # events appended whose record (with the event's marker) was not written: a retried
        # write must not append them twice
        self._unrecorded: OrderedDict[str, None] = OrderedDict()
        self._purge_quietly()

    # -- keys / paths
    def clip_key(self, alert_id: str) -> str:
        return f"clips/{alert_id}.mp4"

    def snapshot_key(self, alert_id: str) -> str:
        return f"snaps/{alert_id}.jpg"

    def _record_path(self, alert_id: str) -> Path:
        return self.root / "alerts" / f"{_name('alert id', alert_id, is_alert_id)}.json"

    def _review_path(self, alert_id: str) -> Path:
        return self.root / "reviews" / f"{_name('alert id', alert_id, is_alert_id)}.json"

    def _index_path(self, camera: str) -> Path:
        return self.root / "index" / f"{_name('camera id', camera, is_camera_id)}.json"

    # -- writes
    def put(self, write: AlertWrite) -> PutResult:
        rec = write.record
        with self._lock:
            path = self._record_path(rec.alert_id)
            index_path = self._index_path(rec.camera)
            current = _record_file(path)
            markers: dict[str, int] = dict((current or {}).get("events", {}))
            stored = current is None or int(current["record"]["version"]) <= rec.version
            if stored:
                if write.clip:
                    write_atomic(self.root / self.clip_key(rec.alert_id), write.clip)
                if write.snapshot:
                    write_atomic(self.root / self.snapshot_key(rec.alert_id), write.snapshot)
                record_json = rec.to_json()
            else:
                assert current is not None
                record_json = current["record"]
            publish = False
            event_id = write.event_id
            if write.event is not None and event_id is not None:
                mark = markers.get(event_id)
                if mark is None:
                    markers[event_id] = 0
                    if event_id not in self._unrecorded:
                        self._append_event(write.event)
                        self._unrecorded[event_id] = None
                        while len(self._unrecorded) > 1024:
                            self._unrecorded.popitem(last=False)
                    publish = True
                else:
                    publish = mark == 0
            write_atomic(path, json.dumps({"record": record_json, "events": markers}).encode())
            if event_id is not None:
                self._unrecorded.pop(event_id, None)
            if current is None:
                self._alerts += 1
            index = _read_json(index_path)
            index = index if isinstance(index, dict) else {}
            if index.get(rec.alert_id) != rec.start_ts:
                index[rec.alert_id] = rec.start_ts
                write_atomic(index_path, json.dumps(index).encode())
            if (time.monotonic() - self._last_purge > self.PURGE_EVERY_S
                    or self._alerts > self.cfg.max_alerts + max(10, self.cfg.max_alerts // 10)):
                self._purge_quietly()
            return PutResult(stored=stored, publish=publish)

    def _purge_quietly(self) -> None:
        """Retention and the count cap after a write; a failure here is not the write's."""
        try:
            self.purge()
        except (OSError, StoreError) as exc:
            log.error("local alert store %s: old alerts could not be deleted: %s", self.root, exc)

    def mark_published(self, alert_id: str, event_ids: list[str]) -> None:
        with self._lock:
            path = self._record_path(alert_id)
            current = _record_file(path)
            if current is None:
                return
            for e in event_ids:
                if e in current["events"]:
                    current["events"][e] = 1
            write_atomic(path, json.dumps(current).encode())

    def _append_event(self, event: dict[str, Any]) -> None:
        """Append one line to the event log, all of it or nothing (a partial line is cut off)."""
        line = json.dumps({"n": self._next_event, "written_ms": int(time.time() * 1000), "event": event},
                          separators=(",", ":"))
        try:
            with open(self.events_path, "ab") as fh:
                start = fh.seek(0, os.SEEK_END)
                try:
                    fh.write(line.encode() + b"\n")
                    fh.flush()
                except OSError:
                    with contextlib.suppress(OSError):
                        fh.truncate(start)
                    raise
        except OSError as exc:
            raise StoreWriteError(self.events_path, exc) from exc
        self._next_event += 1
        self._event_lines += 1
        if self._event_lines > self.cfg.events_max + max(10, self.cfg.events_max // 10):
            try:
                self._trim_events(keep=lambda _e, i, n: i >= n - self.cfg.events_max)
            except StoreWriteError as exc:  # the event is in; the log is cut again next time
                log.error("local alert store: the event log could not be cut to %d lines: %s",
                          self.cfg.events_max, exc)

    def _read_events(self) -> list[dict[str, Any]]:
        """The event log's entries ``{"n": int, "written_ms": int, "event": ...}``; lines that are
        not such an entry (being appended right now, or damaged) are left out."""
        try:
            text = self.events_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        out, bad = [], 0
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):
                bad += 1
                continue
            if isinstance(entry, dict) and _int(entry.get("n")) > 0:
                out.append(entry)
            else:
                bad += 1
        if bad > self._bad_lines_logged:
            log.warning("%s: %d line(s) are not event entries; skipped", self.events_path, bad)
        self._bad_lines_logged = bad
        return out

    def _trim_events(self, keep: Any) -> None:
        entries = self._read_events()
        kept = [e for i, e in enumerate(entries) if keep(e, i, len(entries))]
        write_atomic(self.events_path, "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in kept)
                      .encode())
        self._event_lines = len(kept)

    def _last_event_number(self) -> int:
        entries = self._read_events()
        return int(entries[-1]["n"]) if entries else 0

    def _count_event_lines(self) -> int:
        return len(self._read_events())

    # -- retention
    def purge(self, now_ms: int | None = None) -> int:
        """Delete alerts (and events) written longer ago than the retention, and beyond
        ``max_alerts`` the oldest written; returns alerts deleted."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        cutoff = now_ms - self.cfg.retention_s * 1000
        deleted = 0
        with self._lock:
            self._last_purge = time.monotonic()
            kept: list[tuple[int, Path, dict[str, Any] | None]] = []
            for path in (self.root / "alerts").glob("*.json"):
                data = _record_file(path)
                written = _int(data["record"].get("written_ms")) if data is not None else 0
                if data is not None and written >= cutoff:
                    kept.append((written, path, data))
                elif data is not None:
                    self._delete(path, data["record"])
                    deleted += 1
            kept.sort(key=lambda k: (k[0], k[1].name))
            for _written, path, data in kept[:max(0, len(kept) - self.cfg.max_alerts)]:
                assert data is not None
                self._delete(path, data["record"])
                deleted += 1
            self._alerts = sum(1 for _ in (self.root / "alerts").glob("*.json"))
            if self._event_lines:
                entries = self._read_events()
                if entries and _int(entries[0].get("written_ms")) < cutoff:
                    self._trim_events(keep=lambda e, _i, _n: _int(e.get("written_ms")) >= cutoff)
        return deleted

    def _delete(self, path: Path, rec: dict[str, Any]) -> None:
        """Delete one alert: its record, clip, snapshot and index entry."""
        alert_id, camera = str(rec.get("alert_id", path.stem)), str(rec.get("camera", ""))
        files = [path]
        if is_alert_id(alert_id):
            files += [self.root / self.clip_key(alert_id), self.root / self.snapshot_key(alert_id),
                      self._review_path(alert_id)]
        for p in files:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        if is_camera_id(camera):
            index = _read_json(self._index_path(camera))
            if isinstance(index, dict) and index.pop(alert_id, None) is not None:
                write_atomic(self._index_path(camera), json.dumps(index).encode())

    # -- reads
    def get(self, alert_id: str) -> AlertRecord | None:
        if not is_alert_id(alert_id):
            return None
        data = _record_file(self._record_path(alert_id))
        if data is None:
            return None
        try:
            return AlertRecord.from_json(data["record"])
        except (TypeError, ValueError, KeyError) as exc:
            log.warning("ignoring alert %s: its record is damaged (%s)", alert_id, exc)
            return None

    def _blob(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def clip(self, alert_id: str) -> bytes | None:
        return self._blob(self.clip_key(alert_id)) if is_alert_id(alert_id) else None

    def snapshot(self, alert_id: str) -> bytes | None:
        return self._blob(self.snapshot_key(alert_id)) if is_alert_id(alert_id) else None

    def cameras(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "index").glob("*.json"))

    def list(self, camera: str | None = None, limit: int = 100, since_ts: int | None = None,
             before: tuple[int, str] | None = None) -> list[AlertRecord]:
        out = []
        for cam in [camera] if camera is not None else self.cameras():
            if not is_camera_id(cam):
                continue
            index = _read_json(self._index_path(cam))
            if not isinstance(index, dict):
                continue
            pairs = [(int(v), k) for k, v in index.items() if isinstance(v, int | float)]
            for _ts, alert_id in page_filter(pairs, since_ts, before)[:limit]:
                rec = self.get(alert_id)
                if rec is not None:
                    out.append(rec)
        out.sort(key=lambda r: (r.start_ts, r.alert_id), reverse=True)
        return out[:limit]

    def set_review(self, alert_id: str, mark: str | None, note: str = "") -> dict | None:
        with self._lock:
            record = self.get(alert_id)
            if record is None:
                raise LookupError(f"no alert {alert_id[:80]!r} in {self.root}")
            path = self._review_path(alert_id)
            if mark is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                return None
            review = make_review(record, mark, note)
            write_atomic(path, json.dumps(review).encode())
            return review

    def reviews(self, alert_ids: list[str]) -> dict[str, dict]:
        out = {}
        for alert_id in alert_ids:
            if is_alert_id(alert_id):
                review = _read_json(self._review_path(alert_id))
                if isinstance(review, dict) and review.get("mark") is not None:
                    out[alert_id] = review
        return out

    def events(self, after: str | None, block_ms: int = 0, count: int = 100) -> list[tuple[str, dict | None]]:
        start = int(after) if after else 0
        deadline = time.monotonic() + block_ms / 1000
        while True:
            out = [(str(e["n"]), self._event_of(e)) for e in self._read_events() if e["n"] > start][:count]
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(0.1)

    def _event_of(self, entry: dict[str, Any]) -> dict | None:
        try:
            return check_event(entry.get("event"))
        except EventError as exc:
            if entry["n"] not in self._bad_events_logged:  # once per entry, not on every read
                self._bad_events_logged[entry["n"]] = None
                while len(self._bad_events_logged) > 1024:
                    self._bad_events_logged.popitem(last=False)
                log.warning("%s: entry %d is not a valid alert event (%s); skipped", self.events_path,
                            entry["n"], exc)
            return None

    def latest_cursor(self) -> str:
        entries = self._read_events()
        return str(entries[-1]["n"]) if entries else "0"

    def pending(self) -> int:
        return 0

    def drain(self) -> int:
        return 0

    def close(self) -> None:
        pass


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0

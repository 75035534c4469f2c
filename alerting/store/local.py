"""The alert store in a local folder (embedded mode): :class:`LocalStore`, with its retention.

Layout (``alerting.store.dir``): ``alerts/{id}.json`` · ``clips/{id}.mp4`` ·
``snaps/{id}.jpg`` · ``index/{camera}.json`` ({id: start_ts}) · ``events.jsonl`` (capped at
``events_max`` lines). Files are replaced atomically; alerts older than the retention
(by write time) are deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from alerting.config import LocalStoreConfig
from alerting.events import AlertRecord
from alerting.store.base import AlertWrite, PutResult

__all__ = ["LocalStore"]

log = logging.getLogger(__name__)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None


class LocalStore:
    """:class:`AlertStore` in a local folder (embedded mode). Thread-safe within a process;
    readers in other processes (``vigil alerts ...``) see only complete files."""

    PURGE_EVERY_S = 60.0

    def __init__(self, cfg: LocalStoreConfig) -> None:
        self.cfg = cfg
        self.root = Path(cfg.dir)
        for sub in ("alerts", "clips", "snaps", "index"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.events_path = self.root / "events.jsonl"
        self._lock = threading.RLock()
        self._next_event = self._last_event_number() + 1
        self._event_lines = self._count_event_lines()
        self._last_purge = 0.0
        self.purge()

    # -- keys / paths
    def clip_key(self, alert_id: str) -> str:
        return f"clips/{alert_id}.mp4"

    def snapshot_key(self, alert_id: str) -> str:
        return f"snaps/{alert_id}.jpg"

    def _record_path(self, alert_id: str) -> Path:
        return self.root / "alerts" / f"{alert_id}.json"

    def _index_path(self, camera: str) -> Path:
        return self.root / "index" / f"{camera}.json"

    # -- writes
    def put(self, write: AlertWrite) -> PutResult:
        rec = write.record
        with self._lock:
            current = _read_json(self._record_path(rec.alert_id))
            markers: dict[str, int] = dict((current or {}).get("events", {}))
            stored = current is None or int(current["record"]["version"]) <= rec.version
            if stored:
                if write.clip:
                    _write_atomic(self.root / self.clip_key(rec.alert_id), write.clip)
                if write.snapshot:
                    _write_atomic(self.root / self.snapshot_key(rec.alert_id), write.snapshot)
                record_json = rec.to_json()
            else:
                record_json = current["record"]
            publish = False
            if write.event is not None:
                mark = markers.get(write.event["event_id"])
                if mark is None:
                    markers[write.event["event_id"]] = 0
                    self._append_event(write.event)
                    publish = True
                else:
                    publish = mark == 0
            _write_atomic(self._record_path(rec.alert_id),
                          json.dumps({"record": record_json, "events": markers}).encode())
            index = _read_json(self._index_path(rec.camera)) or {}
            if index.get(rec.alert_id) != rec.start_ts:
                index[rec.alert_id] = rec.start_ts
                _write_atomic(self._index_path(rec.camera), json.dumps(index).encode())
            if time.monotonic() - self._last_purge > self.PURGE_EVERY_S:
                self.purge()
            return PutResult(stored=stored, publish=publish)

    def mark_published(self, alert_id: str, event_ids: list[str]) -> None:
        with self._lock:
            path = self._record_path(alert_id)
            current = _read_json(path)
            if current is None:
                return
            for e in event_ids:
                if e in current["events"]:
                    current["events"][e] = 1
            _write_atomic(path, json.dumps(current).encode())

    def _append_event(self, event: dict[str, Any]) -> None:
        line = json.dumps({"n": self._next_event, "written_ms": int(time.time() * 1000), "event": event},
                          separators=(",", ":"))
        with open(self.events_path, "a") as fh:
            fh.write(line + "\n")
        self._next_event += 1
        self._event_lines += 1
        if self._event_lines > self.cfg.events_max + max(10, self.cfg.events_max // 10):
            self._trim_events(keep=lambda _e, i, n: i >= n - self.cfg.events_max)

    def _read_events(self) -> list[dict[str, Any]]:
        try:
            text = self.events_path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):  # a line being appended right now
                out.append(json.loads(line))
        return out

    def _trim_events(self, keep: Any) -> None:
        entries = self._read_events()
        kept = [e for i, e in enumerate(entries) if keep(e, i, len(entries))]
        _write_atomic(self.events_path, "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in kept)
                      .encode())
        self._event_lines = len(kept)

    def _last_event_number(self) -> int:
        entries = self._read_events()
        return int(entries[-1]["n"]) if entries else 0

    def _count_event_lines(self) -> int:
        return len(self._read_events())

    # -- retention
    def purge(self, now_ms: int | None = None) -> int:
        """Delete alerts (and events) written longer ago than the retention; returns alerts deleted."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        cutoff = now_ms - self.cfg.retention_s * 1000
        deleted = 0
        with self._lock:
            self._last_purge = time.monotonic()
            for path in (self.root / "alerts").glob("*.json"):
                data = _read_json(path)
                if data is None or int(data["record"].get("written_ms", 0)) >= cutoff:
                    continue
                rec = data["record"]
                for p in (path, self.root / self.clip_key(rec["alert_id"]),
                          self.root / self.snapshot_key(rec["alert_id"])):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
                index = _read_json(self._index_path(rec["camera"])) or {}
                if index.pop(rec["alert_id"], None) is not None:
                    _write_atomic(self._index_path(rec["camera"]), json.dumps(index).encode())
                deleted += 1
            if self._event_lines:
                entries = self._read_events()
                if entries and int(entries[0].get("written_ms", 0)) < cutoff:
                    self._trim_events(keep=lambda e, _i, _n: int(e.get("written_ms", 0)) >= cutoff)
        return deleted

    # -- reads
    def get(self, alert_id: str) -> AlertRecord | None:
        data = _read_json(self._record_path(alert_id))
        return AlertRecord.from_json(data["record"]) if data else None

    def _blob(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def clip(self, alert_id: str) -> bytes | None:
        return self._blob(self.clip_key(alert_id))

    def snapshot(self, alert_id: str) -> bytes | None:
        return self._blob(self.snapshot_key(alert_id))

    def cameras(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "index").glob("*.json"))

    def list(self, camera: str | None = None, limit: int = 100) -> list[AlertRecord]:
        out = []
        for cam in [camera] if camera is not None else self.cameras():
            index = _read_json(self._index_path(cam)) or {}
            for alert_id in sorted(index, key=lambda i: (index[i], i), reverse=True)[:limit]:
                rec = self.get(alert_id)
                if rec is not None:
                    out.append(rec)
        out.sort(key=lambda r: (r.start_ts, r.alert_id), reverse=True)
        return out[:limit]

    def events(self, after: str | None, block_ms: int = 0, count: int = 100) -> list[tuple[str, dict]]:
        start = int(after) if after else 0
        deadline = time.monotonic() + block_ms / 1000
        while True:
            out = [(str(e["n"]), e["event"]) for e in self._read_events() if int(e["n"]) > start][:count]
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(0.1)

    def latest_cursor(self) -> str:
        entries = self._read_events()
        return str(entries[-1]["n"]) if entries else "0"

    def pending(self) -> int:
        return 0

    def drain(self) -> int:
        return 0

    def close(self) -> None:
        pass

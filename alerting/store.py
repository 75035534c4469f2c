"""Where alerts are kept: Redis (deployment) or a local folder (embedded mode), same interface.

Every write is one :class:`AlertWrite` -- the alert's record, optionally its clip and
snapshot, optionally the event that goes with it -- and is idempotent:

* a record never replaces a newer one (``version``, the seq of the frame that caused the
  write, only grows), so a redelivered or spooled write cannot roll an alert back;
* an event is appended to the event log once (per ``event_id``); the store remembers whether
  it was published on ``vigil.alerts`` yet (:meth:`AlertStore.mark_published`), and
  :class:`PutResult.publish` says whether the caller still has to publish it.

Redis layout (prefix default ``vigil:``; ARCHITECTURE.md): ``alert:{id}`` hash (fields JSON
encoded; event markers ``evt:{event_id}`` = 0 stored / 1 published) · ``clip:{id}`` MP4 ·
``snap:{id}`` JPEG · ``alerts:{camera}`` sorted set of ids by start time · ``alerts`` capped
stream (``MAXLEN ~``) of events (field ``event``: the JSON). Every key gets the retention as
TTL on every write. One Lua script does a whole write, so it is atomic. (The keys of one
write are not in one hash slot: a single Redis server or a replica set, not Redis Cluster.)

When Redis cannot be reached, :class:`SpoolingStore` appends writes to a bounded on-disk
spool (one fsynced file per write, in order) and replays them, in order, once Redis answers
again; while anything is spooled, new writes queue behind it. Replays are idempotent, so a
write applied twice (Redis answered but the reply was lost) changes nothing. A full spool
raises :class:`SpoolFullError`: the caller must hold on (not commit its input) until it drains.

Local layout (``alerting.store.dir``): ``alerts/{id}.json`` · ``clips/{id}.mp4`` ·
``snaps/{id}.jpg`` · ``index/{camera}.json`` ({id: start_ts}) · ``events.jsonl`` (capped at
``events_max`` lines). Files are replaced atomically; alerts older than the retention
(by write time) are deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from alerting.config import LocalStoreConfig, RedisStoreConfig
from alerting.events import AlertRecord
from common.redact import redact_url
from common.retry import Backoff

__all__ = [
    "AlertStore",
    "AlertWrite",
    "LocalStore",
    "PutResult",
    "RedisStore",
    "Spool",
    "SpoolFullError",
    "SpoolingStore",
    "StoreError",
    "StoreUnavailableError",
    "open_store",
]

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The store refused or failed an operation."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached right now (Redis down, timeout)."""


class SpoolFullError(StoreUnavailableError):
    """Redis is unreachable and the spool has no room for another write."""


@dataclass(frozen=True)
class AlertWrite:
    record: AlertRecord
    event: dict[str, Any] | None = None
    clip: bytes | None = None
    snapshot: bytes | None = None

    @property
    def event_id(self) -> str | None:
        return None if self.event is None else self.event["event_id"]


@dataclass(frozen=True)
class PutResult:
    stored: bool  # the record was written (False: a newer version is stored, or spooled)
    publish: bool  # the event is not known to be on vigil.alerts yet: publish it
    spooled: bool = False


class AlertStore(Protocol):
    """Alert records, clips, snapshots, per-camera index and event log."""

    def clip_key(self, alert_id: str) -> str: ...

    def snapshot_key(self, alert_id: str) -> str: ...

    def put(self, write: AlertWrite) -> PutResult: ...

    def mark_published(self, alert_id: str, event_ids: list[str]) -> None: ...

    def get(self, alert_id: str) -> AlertRecord | None: ...

    def clip(self, alert_id: str) -> bytes | None: ...

    def snapshot(self, alert_id: str) -> bytes | None: ...

    def list(self, camera: str | None = None, limit: int = 100) -> list[AlertRecord]:
        """Newest first (by start time)."""
        ...

    def events(self, after: str | None, block_ms: int = 0, count: int = 100) -> list[tuple[str, dict]]:
        """Events after cursor ``after`` (``None``: from the beginning), ``(cursor, event)`` pairs."""
        ...

    def latest_cursor(self) -> str:
        """A cursor after the newest event (to follow only new ones)."""
        ...

    def pending(self) -> int:
        """Writes waiting in the spool."""
        ...

    def drain(self) -> int:
        """Apply spooled writes; returns how many were applied."""
        ...

    def close(self) -> None: ...


# ============================================================================ Redis

_PUT_SCRIPT = """
local ttl = tonumber(ARGV[1])
local cur = redis.call('HGET', KEYS[1], 'version')
local stored = 0
if (not cur) or tonumber(cur) <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], unpack(ARGV, 10))
  if ARGV[8] ~= '' then redis.call('SET', KEYS[2], ARGV[8], 'EX', ttl) end
  if ARGV[9] ~= '' then redis.call('SET', KEYS[3], ARGV[9], 'EX', ttl) end
  stored = 1
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[4], ttl)
local publish = 0
if ARGV[6] ~= '' then
  local mark = redis.call('HGET', KEYS[1], ARGV[7])
  if not mark then
    redis.call('HSET', KEYS[1], ARGV[7], '0')
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', 'event', ARGV[6])
    redis.call('EXPIRE', KEYS[5], ttl)
    publish = 1
  elseif mark == '0' then
    publish = 1
  end
end
return {stored, publish}
"""

_MARK_SCRIPT = """
for i = 1, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then redis.call('HSET', KEYS[1], ARGV[i], '1') end
end
return 1
"""


def _event_json(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


class RedisStore:
    """:class:`AlertStore` on a Redis server (raises :class:`StoreUnavailableError` when unreachable)."""

    def __init__(self, cfg: RedisStoreConfig) -> None:
        import redis

        self.cfg = cfg
        self.prefix = cfg.prefix
        self.where = redact_url(cfg.url)
        url = cfg.url
        if cfg.tls and url.startswith("redis://"):
            url = "rediss://" + url[len("redis://"):]
        kw: dict[str, Any] = {"socket_timeout": cfg.socket_timeout_s,
                              "socket_connect_timeout": cfg.socket_timeout_s}
        if cfg.username is not None:
            kw["username"] = cfg.username
        if cfg.password is not None:
            kw["password"] = cfg.password.get_secret_value()
        if url.startswith("rediss://"):
            kw["ssl_cert_reqs"] = "required" if cfg.tls_verify else "none"
            for name, value in (("ssl_ca_certs", cfg.tls_ca_file), ("ssl_certfile", cfg.tls_cert_file),
                                ("ssl_keyfile", cfg.tls_key_file)):
                if value is not None:
                    kw[name] = value
        self.client = redis.Redis.from_url(url, **kw)
        self._put = self.client.register_script(_PUT_SCRIPT)
        self._mark = self.client.register_script(_MARK_SCRIPT)
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        redis.exceptions.BusyLoadingError)
        self._redis_error = redis.exceptions.RedisError

    # -- keys
    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def clip_key(self, alert_id: str) -> str:
        return self.key(f"clip:{alert_id}")

    def snapshot_key(self, alert_id: str) -> str:
        return self.key(f"snap:{alert_id}")

    def alert_key(self, alert_id: str) -> str:
        return self.key(f"alert:{alert_id}")

    def index_key(self, camera: str) -> str:
        return self.key(f"alerts:{camera}")

    @property
    def stream_key(self) -> str:
        return self.key("alerts")

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            raise StoreUnavailableError(f"Redis at {self.where} unreachable ({what}): {exc}") from exc
        except self._redis_error as exc:
            raise StoreError(f"Redis at {self.where} refused {what}: {exc}") from exc

    # -- writes
    def put(self, write: AlertWrite) -> PutResult:
        rec = write.record
        fields = rec.to_fields()
        has_event = write.event is not None
        args: list[Any] = [self.cfg.retention_s, rec.version, rec.start_ts, rec.alert_id,
                           self.cfg.stream_maxlen, _event_json(write.event) if has_event else "",
                           f"evt:{write.event_id}" if has_event else "",
                           write.clip or b"", write.snapshot or b""]
        for k, v in fields.items():
            args += [k, v]
        keys = [self.alert_key(rec.alert_id), self.clip_key(rec.alert_id), self.snapshot_key(rec.alert_id),
                self.index_key(rec.camera), self.stream_key]
        with self._call(f"write of alert {rec.alert_id}"):
            stored, publish = self._put(keys=keys, args=args)
        return PutResult(stored=bool(stored), publish=bool(publish))

    def mark_published(self, alert_id: str, event_ids: list[str]) -> None:
        if not event_ids:
            return
        with self._call(f"publish mark of alert {alert_id}"):
            self._mark(keys=[self.alert_key(alert_id)], args=[f"evt:{e}" for e in event_ids])

    # -- reads
    def get(self, alert_id: str) -> AlertRecord | None:
        with self._call(f"read of alert {alert_id}"):
            raw = self.client.hgetall(self.alert_key(alert_id))
        return AlertRecord.from_fields(raw) if raw else None

    def clip(self, alert_id: str) -> bytes | None:
        with self._call(f"read of clip {alert_id}"):
            return self.client.get(self.clip_key(alert_id))

    def snapshot(self, alert_id: str) -> bytes | None:
        with self._call(f"read of snapshot {alert_id}"):
            return self.client.get(self.snapshot_key(alert_id))

    def ttl(self, key: str) -> int:
        """Seconds to live of ``key`` (-1: none, -2: no such key)."""
        with self._call(f"TTL of {key}"):
            return int(self.client.ttl(key))

    def cameras(self) -> list[str]:
        head = self.index_key("")
        with self._call("camera index scan"):
            keys = [k.decode() for k in self.client.scan_iter(match=head + "*", count=500)]
        return sorted(k[len(head):] for k in keys)

    def list(self, camera: str | None = None, limit: int = 100) -> list[AlertRecord]:
        cameras = [camera] if camera is not None else self.cameras()
        out: list[AlertRecord] = []
        with self._call("alert listing"):
            for cam in cameras:
                ids = [i.decode() for i in self.client.zrevrange(self.index_key(cam), 0, limit - 1)]
                pipe = self.client.pipeline(transaction=False)
                for alert_id in ids:
                    pipe.hgetall(self.alert_key(alert_id))
                gone = []
                for alert_id, raw in zip(ids, pipe.execute(), strict=True):
                    if raw:
                        out.append(AlertRecord.from_fields(raw))
                    else:
                        gone.append(alert_id)  # expired record: drop it from the index
                if gone:
                    self.client.zrem(self.index_key(cam), *gone)
        out.sort(key=lambda r: (r.start_ts, r.alert_id), reverse=True)
        return out[:limit]

    def events(self, after: str | None, block_ms: int = 0, count: int = 100) -> list[tuple[str, dict]]:
        # a blocking read must return before the socket times out
        block_ms = min(block_ms, int(self.cfg.socket_timeout_s * 1000) - 250)
        with self._call("event stream read"):
            reply = self.client.xread({self.stream_key: after or "0-0"}, count=count,
                                      block=block_ms if block_ms > 0 else None)
        out = []
        for _stream, entries in reply or []:
            for entry_id, data in entries:
                out.append((entry_id.decode(), json.loads(data[b"event"])))
        return out

    def latest_cursor(self) -> str:
        with self._call("event stream read"):
            last = self.client.xrevrange(self.stream_key, count=1)
        return last[0][0].decode() if last else "0-0"

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except self._errors:
            return False

    def pending(self) -> int:
        return 0

    def drain(self) -> int:
        return 0

    def close(self) -> None:
        self.client.close()


# ============================================================================ the spool

_SPOOL_MAGIC = b"VIGILSPOOL1\n"
_LEN = struct.Struct(">I")


class Spool:
    """Writes waiting for Redis, one fsynced file each (``NNNNNNNNNNNN.spool``), oldest first."""

    def __init__(self, directory: Path, max_bytes: int, max_entries: int) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_entries = max_bytes, max_entries
        for stale in self.dir.glob("*.tmp"):  # a crash mid-write: the write was never acknowledged
            stale.unlink()
        files = self.files()
        self._next = (int(files[-1].stem) + 1) if files else 0
        self.bytes = sum(f.stat().st_size for f in files)
        self.count = len(files)

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("*.spool"))

    def __len__(self) -> int:
        return self.count

    def append(self, op: dict[str, Any], blobs: dict[str, bytes]) -> Path:
        names = [k for k, v in blobs.items() if v]
        head = json.dumps({**op, "blobs": {k: len(blobs[k]) for k in names}}).encode()
        data = _SPOOL_MAGIC + _LEN.pack(len(head)) + head + b"".join(blobs[k] for k in names)
        if self.count + 1 > self.max_entries or self.bytes + len(data) > self.max_bytes:
            raise SpoolFullError(f"alert spool {self.dir} is full ({self.count} writes, {self.bytes} bytes; "
                            f"limits {self.max_entries} / {self.max_bytes})")
        path = self.dir / f"{self._next:012d}.spool"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.dir)
        self._next += 1
        self.count += 1
        self.bytes += len(data)
        return path

    @staticmethod
    def read(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
        data = path.read_bytes()
        if not data.startswith(_SPOOL_MAGIC):
            raise StoreError(f"{path} is not a spool file")
        pos = len(_SPOOL_MAGIC)
        (n,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        op = json.loads(data[pos:pos + n])
        pos += n
        blobs = {}
        for name, size in op.pop("blobs").items():
            blobs[name] = data[pos:pos + size]
            pos += size
        return op, blobs

    def remove(self, path: Path) -> None:
        size = path.stat().st_size
        path.unlink()
        self.count -= 1
        self.bytes -= size


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class SpoolingStore:
    """A :class:`RedisStore` that spools writes to disk while Redis is unreachable.

    Thread-safe. Reads go straight to Redis (spooled writes are not visible until drained).
    After a failure Redis is retried with a capped back-off (``BACKOFF``); meanwhile
    writes go straight to the spool instead of waiting for a timeout each.
    """

    BACKOFF = Backoff(0.5, 5.0)  # before Redis is tried again after consecutive failures

    def __init__(self, inner: RedisStore, spool: Spool) -> None:
        self.inner, self.spool = inner, spool
        self._lock = threading.RLock()
        self.spooled_total = 0
        self.drained_total = 0
        self._retry_at = 0.0  # after a failure, Redis is not tried again before this (monotonic)
        self._failures = 0

    def __getattr__(self, name: str) -> Any:  # reads, keys, ttl, ...: the inner store's
        return getattr(self.inner, name)

    def clip_key(self, alert_id: str) -> str:
        return self.inner.clip_key(alert_id)

    def snapshot_key(self, alert_id: str) -> str:
        return self.inner.snapshot_key(alert_id)

    def pending(self) -> int:
        return len(self.spool)

    def _down(self) -> None:
        self._failures += 1
        self._retry_at = time.monotonic() + self.BACKOFF.delay(self._failures)

    def _up(self) -> bool:
        """Whether Redis is worth trying now (drains the spool first); False: spool the write."""
        if time.monotonic() < self._retry_at:
            return False
        return self._drain_locked() is not None

    def put(self, write: AlertWrite) -> PutResult:
        with self._lock:
            if self._up():
                try:
                    result = self.inner.put(write)
                    self._failures = 0
                    return result
                except StoreUnavailableError as exc:
                    self._down()
                    log.warning("%s; spooling alert %s", exc, write.record.alert_id)
            op = {"op": "put", "record": write.record.to_json(), "event": write.event}
            self.spool.append(op, {"clip": write.clip or b"", "snapshot": write.snapshot or b""})
            self.spooled_total += 1
            return PutResult(stored=False, publish=write.event is not None, spooled=True)

    def mark_published(self, alert_id: str, event_ids: list[str]) -> None:
        if not event_ids:
            return
        with self._lock:
            if self._up():
                try:
                    self.inner.mark_published(alert_id, event_ids)
                    return
                except StoreUnavailableError:
                    self._down()
            self.spool.append({"op": "mark", "alert_id": alert_id, "event_ids": event_ids}, {})
            self.spooled_total += 1

    def drain(self) -> int:
        """Apply what is spooled (at most one Redis attempt per back-off interval)."""
        with self._lock:
            if not len(self.spool) or time.monotonic() < self._retry_at:
                return 0
            return self._drain_locked() or 0

    def _drain_locked(self) -> int | None:
        """Apply spooled writes in order; returns how many, or None if Redis is still away
        (0 with an empty spool)."""
        applied = 0
        for path in self.spool.files():
            op, blobs = Spool.read(path)
            try:
                if op["op"] == "put":
                    self.inner.put(AlertWrite(AlertRecord.from_json(op["record"]), op["event"],
                                              blobs.get("clip"), blobs.get("snapshot")))
                else:
                    self.inner.mark_published(op["alert_id"], op["event_ids"])
            except StoreUnavailableError:
                self._down()
                if applied:
                    log.info("alert spool: %d write(s) applied, %d still waiting", applied, len(self.spool))
                return None
            self._failures = 0
            self.spool.remove(path)
            applied += 1
            self.drained_total += 1
        if applied:
            log.info("alert spool drained: %d write(s) applied to Redis at %s", applied, self.inner.where)
        return applied

    def close(self) -> None:
        self.inner.close()


# ============================================================================ local folder


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


def open_store(cfg: LocalStoreConfig | RedisStoreConfig) -> AlertStore:
    """The store a config names: a :class:`LocalStore`, or Redis behind its spool."""
    if isinstance(cfg, LocalStoreConfig):
        return LocalStore(cfg)
    return SpoolingStore(RedisStore(cfg), Spool(cfg.spool_dir, cfg.spool_max_bytes, cfg.spool_max_entries))

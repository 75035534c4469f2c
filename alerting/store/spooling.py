"""Redis behind a spool: :class:`SpoolingStore` spools writes to disk while Redis is unreachable.

Writes that Redis cannot take are appended to a bounded on-disk :class:`~alerting.store.spool.Spool`
(one fsynced file per write, in order) and replayed, in order, once Redis answers again; while
anything is spooled, new writes queue behind it. Replays are idempotent, so a write applied
twice (Redis answered but the reply was lost) changes nothing. A full spool raises
:class:`~alerting.store.base.SpoolFullError`: the caller must hold on (not commit its input)
until it drains. A spool that cannot be written (its disk full or unwritable) raises
:class:`~alerting.store.base.StoreWriteError` naming the file. Reads are not spooled: they go
to Redis.
"""

from __future__ import annotations

import logging
import threading
import time

from alerting.events import AlertRecord
from alerting.store.base import AlertWrite, PutResult, StoreUnavailableError
from alerting.store.redis_store import RedisStore
from alerting.store.spool import CorruptSpoolEntry, Spool
from common.retry import Backoff

__all__ = ["SpoolingStore"]

log = logging.getLogger(__name__)


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

    # -- keys: the inner store's
    def key(self, name: str) -> str:
        return self.inner.key(name)

    def clip_key(self, alert_id: str) -> str:
        return self.inner.clip_key(alert_id)

    def snapshot_key(self, alert_id: str) -> str:
        return self.inner.snapshot_key(alert_id)

    def alert_key(self, alert_id: str) -> str:
        return self.inner.alert_key(alert_id)

    def index_key(self, camera: str) -> str:
        return self.inner.index_key(camera)

    def review_key(self, alert_id: str) -> str:
        return self.inner.review_key(alert_id)

    @property
    def stream_key(self) -> str:
        return self.inner.stream_key

    # -- reads: straight to Redis (StoreUnavailableError while it is away)
    def get(self, alert_id: str) -> AlertRecord | None:
        return self.inner.get(alert_id)

    def clip(self, alert_id: str) -> bytes | None:
        return self.inner.clip(alert_id)

    def snapshot(self, alert_id: str) -> bytes | None:
        return self.inner.snapshot(alert_id)

    def ttl(self, key: str) -> int:
        """Seconds to live of ``key`` (-1: none, -2: no such key)."""
        return self.inner.ttl(key)

    def cameras(self) -> list[str]:
        return self.inner.cameras()

    def list(self, camera: str | None = None, limit: int = 100, since_ts: int | None = None,
             before: tuple[int, str] | None = None) -> list[AlertRecord]:
        """Newest first (by start time, then id); see :meth:`AlertStore.list`."""
        return self.inner.list(camera, limit, since_ts, before)

    def set_review(self, alert_id: str, mark: str | None, note: str = "") -> dict | None:
        """Straight to Redis (an operator's mark is not spooled: the page says it failed)."""
        return self.inner.set_review(alert_id, mark, note)

    def reviews(self, alert_ids: list[str]) -> dict[str, dict]:
        return self.inner.reviews(alert_ids)

    def events(self, after: str | None, block_ms: int = 0, count: int = 100) -> list[tuple[str, dict]]:
        """Events after cursor ``after`` (``None``: from the beginning), ``(cursor, event)`` pairs."""
        return self.inner.events(after, block_ms, count)

    def latest_cursor(self) -> str:
        return self.inner.latest_cursor()

    def ping(self) -> bool:
        return self.inner.ping()

    # -- writes: to Redis, or to the spool while it is away
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
            try:
                op, blobs = Spool.read(path)
            except CorruptSpoolEntry as exc:  # one damaged file must not hold up the rest
                bad = self.spool.quarantine(path)
                log.error("alert spool: %s; moved aside to %s, not replayed", exc, bad.name)
                continue
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

"""The alert store on a Redis server: :class:`RedisStore` and the Lua scripts that make its writes atomic.

Layout (prefix default ``vigil:``; docs/architecture.md): ``alert:{id}`` hash (fields JSON
encoded; event markers ``evt:{event_id}`` = 0 stored / 1 published) · ``clip:{id}`` MP4 ·
``snap:{id}`` JPEG · ``review:{id}`` an operator's mark (JSON) · ``alerts:{camera}`` sorted
set of ids by start time · ``alerts`` capped stream (``MAXLEN ~``) of events (field
``event``: the JSON). Every key gets the retention as TTL on every write; a camera's index
keeps its newest ``index_max`` ids. One Lua script does a whole write, so it is atomic. (The
keys of one write are not in one hash slot: a single Redis server or a replica set, not
Redis Cluster.) Entries that cannot be read back (a damaged record, a stream entry that is
no event) are skipped and logged, never raised to a reader that lists or follows.

Credentials are checked when the store is opened: one ``PING``, and credentials Redis
refuses raise :class:`StoreAuthError` there and then (``vigil alert`` exits with one error
line) instead of every write being spooled as if Redis were away. (redis-py reports a wrong
password as an ``AuthenticationError``, a subclass of its ``ConnectionError``; its replies
``NOAUTH`` and ``WRONGPASS`` become that error too.) An unreachable Redis at start is only a
warning: writes spool until it answers. Credentials refused later (a password changed on the
server) raise :class:`StoreAuthError` from the write, which is not spooled: the alert role
keeps it in memory and retries, saying why.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from alerting.config import RedisStoreConfig
from alerting.events import AlertRecord, EventError, check_event
from alerting.store.base import (
    AlertWrite,
    PutResult,
    StoreError,
    StoreUnavailableError,
    make_review,
    page_filter,
)
from common.redact import redact_url

__all__ = ["RedisStore", "StoreAuthError"]

log = logging.getLogger(__name__)

_PUT_SCRIPT = """
local ttl = tonumber(ARGV[1])
local cur = redis.call('HGET', KEYS[1], 'version')
local stored = 0
if (not cur) or tonumber(cur) <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], unpack(ARGV, 11))
  if ARGV[8] ~= '' then redis.call('SET', KEYS[2], ARGV[8], 'EX', ttl) end
  if ARGV[9] ~= '' then redis.call('SET', KEYS[3], ARGV[9], 'EX', ttl) end
  stored = 1
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -(tonumber(ARGV[10]) + 1))
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


class StoreAuthError(StoreError):
    """Redis refused the credentials (wrong or missing password, unknown or disabled ACL
    user): retrying will not help. The message names the redacted URL and the config keys."""

    reason = "auth"  # the alert role's ``vigil_alert_store_errors{reason}``


def _credentials_hint(cfg: RedisStoreConfig) -> str:
    """Which config keys hold the credentials Redis refused (or that none are configured)."""
    try:
        parts = urlsplit(cfg.url)
        in_url = parts.username is not None or parts.password is not None
    except ValueError:
        in_url = "@" in cfg.url
    keys = [key for key, value in (("alerting.store.username", cfg.username),
                                   ("alerting.store.password", cfg.password)) if value is not None]
    if in_url:
        keys.append("the user:password in alerting.store.url")
    if not keys:
        return ("no password is configured and this server requires one: set alerting.store.password "
                "(and alerting.store.username for an ACL user)")
    return "check " + " / ".join(keys)


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
        # refused credentials first: redis-py's AuthenticationError is a ConnectionError
        self._auth_errors = (redis.exceptions.AuthenticationError,
                             redis.exceptions.AuthenticationWrongNumberOfArgsError)
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        redis.exceptions.BusyLoadingError)
        self._redis_error = redis.exceptions.RedisError
        self._bad_logged: OrderedDict[str, None] = OrderedDict()  # damaged entries already logged
        self._check_credentials()

    def _check_credentials(self) -> None:
        """One PING: refused credentials raise :class:`StoreAuthError` now, at start, rather than
        on the first alert; a Redis that does not answer yet is only logged (writes spool)."""
        try:
            self.client.ping()
        except self._auth_errors as exc:
            self.client.close()
            raise self._refused_credentials("the connection check", exc) from exc
        except self._errors as exc:
            log.warning("Redis at %s does not answer yet (%s); alert writes are spooled until it does",
                        self.where, exc)
        except self._redis_error as exc:  # e.g. an ACL user without PING: the writes will tell
            log.warning("Redis at %s answered the connection check with an error: %s", self.where, exc)

    def _refused_credentials(self, what: str, exc: BaseException) -> StoreAuthError:
        return StoreAuthError(f"Redis at {self.where} refused the credentials ({what}: {exc}); "
                              f"{_credentials_hint(self.cfg)}")

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

    def review_key(self, alert_id: str) -> str:
        return self.key(f"review:{alert_id}")

    @property
    def stream_key(self) -> str:
        return self.key("alerts")

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._auth_errors as exc:
            raise self._refused_credentials(what, exc) from exc
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
                           write.clip or b"", write.snapshot or b"", self.cfg.index_max]
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
        if not raw:
            return None
        record = self._record(alert_id, raw)
        if record is None:
            raise StoreError(f"alert {alert_id} in Redis at {self.where} is damaged (see the log)")
        return record

    def _record(self, alert_id: str, raw: dict) -> AlertRecord | None:
        try:
            return AlertRecord.from_fields(raw)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            self._log_bad(f"alert:{alert_id}", f"alert {alert_id}: damaged record skipped ({exc})")
            return None

    def _log_bad(self, key: str, message: str) -> None:
        """Log a damaged entry once (not on every read that meets it)."""
        if key in self._bad_logged:
            return
        self._bad_logged[key] = None
        while len(self._bad_logged) > 1024:
            self._bad_logged.popitem(last=False)
        log.warning("Redis at %s: %s", self.where, message)

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

    def list(self, camera: str | None = None, limit: int = 100, since_ts: int | None = None,
             before: tuple[int, str] | None = None) -> list[AlertRecord]:
        cameras = [camera] if camera is not None else self.cameras()
        out: list[AlertRecord] = []
        high = "+inf" if before is None else before[0]
        low = "-inf" if since_ts is None else since_ts
        with self._call("alert listing"):
            for cam in cameras:
                # alerts that share the cursor's start time are filtered here (by id), so a
                # few more than a page are read
                rows = self.client.zrevrangebyscore(self.index_key(cam), high, low, start=0, num=limit + 16,
                                                    withscores=True)
                pairs = [(int(score), i.decode()) for i, score in rows]
                ids = [i for _ts, i in page_filter(pairs, since_ts, before)[:limit]]
                pipe = self.client.pipeline(transaction=False)
                for alert_id in ids:
                    pipe.hgetall(self.alert_key(alert_id))
                gone = []
                for alert_id, raw in zip(ids, pipe.execute(), strict=True):
                    if not raw:
                        gone.append(alert_id)  # expired record: drop it from the index
                    elif (rec := self._record(alert_id, raw)) is not None:
                        out.append(rec)
                if gone:
                    self.client.zrem(self.index_key(cam), *gone)
        out.sort(key=lambda r: (r.start_ts, r.alert_id), reverse=True)
        return out[:limit]

    def set_review(self, alert_id: str, mark: str | None, note: str = "") -> dict | None:
        record = self.get(alert_id)
        if record is None:
            raise LookupError(f"no alert {alert_id[:80]!r} in Redis at {self.where}")
        with self._call(f"review of alert {alert_id}"):
            if mark is None:
                self.client.delete(self.review_key(alert_id))
                return None
            review = make_review(record, mark, note)
            self.client.set(self.review_key(alert_id), json.dumps(review), ex=self.cfg.retention_s)
        return review

    def reviews(self, alert_ids: list[str]) -> dict[str, dict]:
        if not alert_ids:
            return {}
        with self._call("review read"):
            raw = self.client.mget([self.review_key(i) for i in alert_ids])
        out = {}
        for alert_id, value in zip(alert_ids, raw, strict=True):
            if value is None:
                continue
            try:
                review = json.loads(value)
            except (ValueError, RecursionError):
                self._log_bad(f"review:{alert_id}", f"review of {alert_id} is not JSON; ignored")
                continue
            if isinstance(review, dict):
                out[alert_id] = review
        return out

    def events(self, after: str | None, block_ms: int = 0, count: int = 100) -> list[tuple[str, dict | None]]:
        # a blocking read must return before the socket times out
        block_ms = min(block_ms, int(self.cfg.socket_timeout_s * 1000) - 250)
        with self._call("event stream read"):
            reply = self.client.xread({self.stream_key: after or "0-0"}, count=count,
                                      block=block_ms if block_ms > 0 else None)
        out: list[tuple[str, dict | None]] = []
        for _stream, entries in reply or []:
            for entry_id, data in entries:
                cursor = entry_id.decode()
                try:
                    event = check_event(json.loads(data[b"event"]))
                except (KeyError, ValueError, RecursionError, EventError) as exc:
                    self._log_bad(cursor, f"stream entry {cursor} is not an alert event ({str(exc)[:200]}); "
                                          "skipped")
                    event = None
                out.append((cursor, event))
        return out

    def latest_cursor(self) -> str:
        with self._call("event stream read"):
            last = self.client.xrevrange(self.stream_key, count=1)
        return last[0][0].decode() if last else "0-0"

    def ping(self) -> bool:
        """Whether Redis answers (:class:`StoreAuthError` if it refuses the credentials)."""
        try:
            return bool(self.client.ping())
        except self._auth_errors as exc:
            raise self._refused_credentials("ping", exc) from exc
        except self._errors:
            return False

    def pending(self) -> int:
        return 0

    def drain(self) -> int:
        return 0

    def close(self) -> None:
        self.client.close()

"""Where alerts are kept: Redis (deployment) or a local folder (embedded mode), same interface.

This package's public names, and :func:`open_store`, which picks the store a config names.

Every write is one :class:`AlertWrite` -- the alert's record, optionally its clip and
snapshot, optionally the event that goes with it -- and is idempotent:

* a record never replaces a newer one (``version``, the seq of the frame that caused the
  write, only grows), so a redelivered or spooled write cannot roll an alert back;
* an event is appended to the event log once (per ``event_id``); the store remembers whether
  it was published on ``vigil.alerts`` yet (:meth:`AlertStore.mark_published`), and
  :class:`PutResult.publish` says whether the caller still has to publish it.

The stores, one module each:

* :mod:`alerting.store.base` -- the :class:`AlertStore` protocol, the write, its result, the errors;
* :mod:`alerting.store.redis_store` -- :class:`RedisStore` (its key layout, the Lua scripts);
* :mod:`alerting.store.spool` -- the on-disk :class:`Spool` of writes waiting for Redis;
* :mod:`alerting.store.spooling` -- :class:`SpoolingStore`, Redis behind the spool;
* :mod:`alerting.store.local` -- :class:`LocalStore`, a local folder with retention.
"""

from __future__ import annotations

from alerting.config import LocalStoreConfig, RedisStoreConfig
from alerting.store.base import (
    REVIEW_MARKS,
    AlertStore,
    AlertWrite,
    PutResult,
    SpoolFullError,
    StoreError,
    StoreUnavailableError,
    StoreWriteError,
)
from alerting.store.local import LocalStore
from alerting.store.redis_store import RedisStore, StoreAuthError
from alerting.store.spool import Spool
from alerting.store.spooling import SpoolingStore

__all__ = [
    "REVIEW_MARKS",
    "AlertStore",
    "AlertWrite",
    "LocalStore",
    "PutResult",
    "RedisStore",
    "Spool",
    "SpoolFullError",
    "SpoolingStore",
    "StoreAuthError",
    "StoreError",
    "StoreUnavailableError",
    "StoreWriteError",
    "open_store",
]


def open_store(cfg: LocalStoreConfig | RedisStoreConfig) -> AlertStore:
    """The store a config names: a :class:`LocalStore`, or Redis behind its spool."""
    if isinstance(cfg, LocalStoreConfig):
        return LocalStore(cfg)
    return SpoolingStore(RedisStore(cfg), Spool(cfg.spool_dir, cfg.spool_max_bytes, cfg.spool_max_entries))

"""Redis behind the spool: writes spooled while Redis is down and replayed in order, reads declared
explicitly and answered by the Redis store."""

from __future__ import annotations

import pytest

from alerting.config import RedisStoreConfig
from alerting.store import RedisStore, SpoolingStore, StoreUnavailableError, open_store
from tests.alerting.store.records import T0, record, write
from tests.servers import RedisServer


def test_spooling_store_replays_in_order_when_redis_returns(redis_server: RedisServer, redis_url,
                                                            tmp_path) -> None:
    cfg = RedisStoreConfig(url=redis_url, spool_dir=tmp_path / "spool", retention_s=600, socket_timeout_s=0.5)
    store = open_store(cfg)
    assert isinstance(store, SpoolingStore)
    opened, closed = record(version=10), record(version=40, status="closed", end_seq=35, end_ts=T0)
    redis_server.stop()
    try:
        first = store.put(write(opened, snapshot=b"snap"))
        assert first.spooled and first.publish
        store.mark_published(opened.alert_id, [f"{opened.alert_id}:start:10"])
        store._retry_at = 0.0
        assert store.put(write(closed, "end", 35, clip=b"clip")).spooled  # queued behind the others
        assert store.pending() == 3
    finally:
        redis_server.start()
    # a new process finds the spool and drains it
    store.close()
    store = open_store(cfg)
    assert store.pending() == 3
    assert store.drain() == 3 and store.pending() == 0
    rec = store.get(opened.alert_id)
    assert rec.status == "closed" and store.clip(opened.alert_id) == b"clip"
    assert store.snapshot(opened.alert_id) == b"snap"
    assert [e["state"] for _, e in store.events(None)] == ["start", "end"]
    assert not store.put(write(opened)).publish  # the start was marked published from the spool
    store.close()


def test_spooling_store_declares_every_method_of_the_redis_store() -> None:
    """No attribute forwarding: what a reader (or a type checker) sees is the whole interface."""
    assert "__getattr__" not in vars(SpoolingStore)
    public = {name for name in vars(RedisStore) if not name.startswith("_")}
    assert {"get", "clip", "snapshot", "list", "cameras", "events", "latest_cursor", "ttl", "ping", "key",
            "clip_key", "snapshot_key", "alert_key", "index_key", "stream_key"} <= public
    assert public - set(vars(SpoolingStore)) == set()


def test_spooling_store_reads_are_the_redis_stores(redis_url, tmp_path) -> None:
    cfg = RedisStoreConfig(url=redis_url, spool_dir=tmp_path / "spool", retention_s=600, prefix="sp:")
    store = open_store(cfg)
    assert isinstance(store, SpoolingStore)
    inner = store.inner
    a = record(version=20)
    b = record("other-000000050", version=50, start_seq=50, camera="other")
    assert store.put(write(a, clip=b"clip", snapshot=b"snap")).stored
    assert inner.put(write(b)).stored  # behind the spooling store's back: its reads see it (Redis's answer)
    assert store.get(a.alert_id) == inner.get(a.alert_id) == a and store.get("nope") is None
    assert store.clip(a.alert_id) == inner.clip(a.alert_id) == b"clip"
    assert store.snapshot(a.alert_id) == inner.snapshot(a.alert_id) == b"snap"
    assert store.cameras() == inner.cameras() == ["cam", "other"]
    assert store.list() == inner.list() == [b, a] and store.list("cam", limit=1) == [a]
    events = store.events(None)
    assert events == inner.events(None) and [e["alert_id"] for _, e in events] == [a.alert_id, b.alert_id]
    assert store.events(events[0][0], count=1) == events[1:]
    assert store.latest_cursor() == inner.latest_cursor() == events[-1][0]
    assert store.key("x") == inner.key("x") == "sp:x"
    keys = [store.alert_key(a.alert_id), store.clip_key(a.alert_id), store.snapshot_key(a.alert_id),
            store.index_key("cam"), store.stream_key]
    assert keys == [inner.alert_key(a.alert_id), inner.clip_key(a.alert_id), inner.snapshot_key(a.alert_id),
                    inner.index_key("cam"), inner.stream_key]
    assert keys == ["sp:alert:" + a.alert_id, "sp:clip:" + a.alert_id, "sp:snap:" + a.alert_id,
                    "sp:alerts:cam", "sp:alerts"]
    for key in keys:
        assert store.ttl(key) == inner.ttl(key) and 0 < store.ttl(key) <= 600, key
    assert store.ping() and store.pending() == 0
    store.close()


def test_spooling_store_reads_are_not_spooled(tmp_path) -> None:
    cfg = RedisStoreConfig(url="redis://127.0.0.1:1/0", socket_timeout_s=0.5, spool_dir=tmp_path / "spool")
    store = open_store(cfg)
    assert not store.ping()
    with pytest.raises(StoreUnavailableError, match="127.0.0.1:1"):
        store.get("cam-000000010")
    with pytest.raises(StoreUnavailableError):
        store.list()
    assert store.pending() == 0
    store.close()

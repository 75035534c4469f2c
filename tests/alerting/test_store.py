"""Alert stores: the local folder and Redis (a real redis-server), the spool, retention."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from alerting.config import LocalStoreConfig, RedisStoreConfig
from alerting.events import AlertRecord
from alerting.region import Region
from alerting.store import (
    AlertWrite,
    LocalStore,
    RedisStore,
    Spool,
    SpoolFullError,
    SpoolingStore,
    StoreUnavailableError,
    open_store,
)
from tests.servers import RedisServer

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


@pytest.fixture(params=["local", "redis"])
def store(request, tmp_path: Path):
    if request.param == "local":
        s = LocalStore(LocalStoreConfig(dir=tmp_path / "alerts"))
    else:
        url = request.getfixturevalue("redis_url")
        s = RedisStore(RedisStoreConfig(url=url, retention_s=600, prefix="t:"))
    yield s
    s.close()


def test_put_get_list_and_blobs(store) -> None:
    a = record()
    result = store.put(write(a, snapshot=b"\xff\xd8\xffsnap"))
    assert result.stored and result.publish
    assert store.get(a.alert_id) == a
    assert store.snapshot(a.alert_id) == b"\xff\xd8\xffsnap" and store.clip(a.alert_id) is None
    b = record("cam-000000090", version=90, start_seq=90)
    c = record("other-000000050", version=50, start_seq=50, camera="other")
    store.put(write(b))
    store.put(write(c))
    assert [r.alert_id for r in store.list()] == [b.alert_id, c.alert_id, a.alert_id]
    assert [r.alert_id for r in store.list("cam")] == [b.alert_id, a.alert_id]
    assert [r.alert_id for r in store.list("cam", limit=1)] == [b.alert_id]
    assert store.get("nope") is None and store.list("nobody") == []


def test_writes_are_idempotent_and_never_roll_back(store) -> None:
    opened = record(version=10)
    closed = record(version=40, status="closed", end_seq=35, end_ts=T0 + 3500, clip_ready=True, clip_frames=3)
    assert store.put(write(opened)).publish
    assert store.put(write(closed, "end", 35, clip=b"mp4-bytes")).publish
    # a redelivered (older) write: nothing changes, the event is known and still unpublished
    again = store.put(write(opened))
    assert not again.stored and again.publish
    assert store.get(opened.alert_id).status == "closed" and store.clip(opened.alert_id) == b"mp4-bytes"
    store.mark_published(opened.alert_id, [f"{opened.alert_id}:start:10", f"{opened.alert_id}:end:35"])
    assert not store.put(write(opened)).publish
    assert not store.put(write(closed, "end", 35)).publish
    events = store.events(None)
    assert [e["state"] for _, e in events] == ["start", "end"]  # each event once
    assert store.events(events[-1][0]) == [] and store.latest_cursor() == events[-1][0]


def test_redis_keys_have_ttls_and_the_stream_is_capped(redis_url) -> None:
    store = RedisStore(RedisStoreConfig(url=redis_url, retention_s=123, stream_maxlen=10))
    for i in range(300):
        rec = record(f"cam-{i:09d}", version=i, start_seq=i)
        store.put(write(rec, clip=b"c", snapshot=b"s"))
    alert_id = "cam-000000299"
    for key in (store.alert_key(alert_id), store.clip_key(alert_id), store.snapshot_key(alert_id),
                store.index_key("cam"), store.stream_key):
        assert 0 < store.ttl(key) <= 123, key
    assert store.client.xlen(store.stream_key) < 150  # MAXLEN ~ 10: trimmed in whole nodes
    # an alert whose keys expired disappears from the listing (and from the index)
    store.client.delete(store.alert_key(alert_id))
    assert alert_id not in [r.alert_id for r in store.list("cam", limit=5)]
    assert store.client.zscore(store.index_key("cam"), alert_id) is None
    store.close()


def test_redis_password_and_acl_user(redis_server: RedisServer, redis_url, tmp_path) -> None:
    admin = RedisStore(RedisStoreConfig(url=redis_url))
    admin.client.execute_command("ACL", "SETUSER", "vigil", "on", ">s3cret", "~vigil:*", "+@all")
    try:
        cfg = RedisStoreConfig(url=redis_url, username="vigil", password="s3cret")
        store = RedisStore(cfg)
        assert store.put(write(record())).stored
        assert "s3cret" not in repr(cfg)
        wrong = RedisStore(RedisStoreConfig(url=redis_url, username="vigil", password="nope"))
        with pytest.raises(StoreUnavailableError):
            wrong.get("x")
    finally:
        admin.client.execute_command("ACL", "DELUSER", "vigil")
        admin.close()


def test_redis_down_raises_unavailable(tmp_path) -> None:
    store = RedisStore(RedisStoreConfig(url="redis://127.0.0.1:1/0", socket_timeout_s=0.5))
    with pytest.raises(StoreUnavailableError, match="127.0.0.1:1"):
        store.put(write(record()))


def test_spool_is_bounded_and_survives_a_restart(tmp_path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000, max_entries=3)
    for i in range(3):
        spool.append({"op": "mark", "alert_id": "a", "event_ids": [str(i)]}, {"clip": b"x" * 10})
    with pytest.raises(SpoolFullError):
        spool.append({"op": "mark", "alert_id": "a", "event_ids": []}, {})
    again = Spool(tmp_path, max_bytes=10_000, max_entries=5)
    assert len(again) == 3
    op, blobs = Spool.read(again.files()[0])
    assert op["event_ids"] == ["0"] and blobs == {"clip": b"x" * 10}
    with pytest.raises(SpoolFullError):
        Spool(tmp_path, max_bytes=10, max_entries=99).append({"op": "mark"}, {"clip": b"y" * 100})


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


def test_local_store_retention(tmp_path) -> None:
    store = LocalStore(LocalStoreConfig(dir=tmp_path, retention_s=60))
    old = record("cam-000000001", written_ms=int(time.time() * 1000) - 120_000)
    new = record("cam-000000002", start_seq=2)
    store.put(write(old, clip=b"old"))
    store.put(write(new, clip=b"new"))
    assert store.purge() == 1
    assert store.get(old.alert_id) is None and store.clip(old.alert_id) is None
    assert [r.alert_id for r in store.list("cam")] == [new.alert_id]
    assert len(store.events(None)) == 2  # events written now: kept
    assert store.purge(now_ms=int(time.time() * 1000) + 61_000) == 1
    assert store.list() == [] and store.events(None) == []

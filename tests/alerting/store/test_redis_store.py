"""The Redis store on a real redis-server: TTLs, the capped stream, ACL users, Redis down."""

from __future__ import annotations

import pytest

from alerting.config import RedisStoreConfig
from alerting.store import RedisStore, StoreAuthError, StoreUnavailableError
from tests.alerting.store.records import record, write
from tests.servers import RedisServer


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
        # refused credentials are no outage (that would spool): they fail when the store opens
        with pytest.raises(StoreAuthError, match="refused the credentials") as info:
            RedisStore(RedisStoreConfig(url=redis_url, username="vigil", password="nope"))
        assert not isinstance(info.value, StoreUnavailableError) and "nope" not in str(info.value)
    finally:
        admin.client.execute_command("ACL", "DELUSER", "vigil")
        admin.close()


def test_redis_down_raises_unavailable(tmp_path) -> None:
    store = RedisStore(RedisStoreConfig(url="redis://127.0.0.1:1/0", socket_timeout_s=0.5))
    with pytest.raises(StoreUnavailableError, match="127.0.0.1:1"):
        store.put(write(record()))

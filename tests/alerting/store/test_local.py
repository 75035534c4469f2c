"""The local store's retention: old alerts and their events are deleted."""

from __future__ import annotations

import time

from alerting.config import LocalStoreConfig
from alerting.store import LocalStore
from tests.alerting.store.records import record, write


def test_local_store_retention(tmp_path) -> None:
    store = LocalStore(LocalStoreConfig(dir=tmp_path, retention_s=60))
    old = record("cam-000000001", written_ms=int(time.time() * 1000) - 120_000)
    new = record("cam-000000002", start_seq=2)
    store.put(write(old, clip=b"old"))
    store.put(write(new, clip=b"new"))
    store.set_review(old.alert_id, "false_alarm")
    assert store.purge() == 1
    assert store.get(old.alert_id) is None and store.clip(old.alert_id) is None
    assert store.reviews([old.alert_id]) == {} and not list((tmp_path / "reviews").iterdir())
    assert [r.alert_id for r in store.list("cam")] == [new.alert_id]
    assert len(store.events(None)) == 2  # events written now: kept
    assert store.purge(now_ms=int(time.time() * 1000) + 61_000) == 1
    assert store.list() == [] and store.events(None) == []

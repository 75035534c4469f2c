"""Every buffer of the alert role is bounded by configuration: each test drives one past its
bound and checks that it stays bounded -- the frame ring, the cameras held, the spool, the
Redis keys (a real redis-server), the local store and its event log, and the writes kept in
memory while the store cannot take them."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import redis as redis_lib
from prometheus_client import CollectorRegistry

import alerting.worker as worker_mod
from alerting.config import AlertingConfig, LocalStoreConfig, RedisStoreConfig
from alerting.ring import FrameRing, RingEntry
from alerting.store import (
    LocalStore,
    PutResult,
    RedisStore,
    Spool,
    SpoolFullError,
    SpoolingStore,
    StoreWriteError,
)
from alerting.worker import AlertMetrics, AlertWorker
from common.bus import InProcessBus
from common.messages import FRAMES_TOPIC, SCORES_TOPIC, encode_jpeg
from tests.alerting.poison import good_frame, good_score, total
from tests.alerting.store.records import record, write
from tests.alerting.test_poison import IMAGE, Rig, eager_config

JPEG = encode_jpeg(IMAGE)


def test_the_frame_ring_stays_within_its_frame_and_byte_caps() -> None:
    ring = FrameRing(max_frames=10, max_bytes=8 * len(JPEG))
    for seq in range(500):
        ring.add(RingEntry(seq, seq * 100, 64, 48, JPEG))
        assert len(ring) <= 10 and ring.bytes <= ring.max_bytes
        ring.attach(seq, 1.0, np.zeros((16, 16), np.float32), "m")  # maps count too
        assert len(ring) <= 10 and ring.bytes <= ring.max_bytes
        assert ring.bytes == sum(e.nbytes for e in ring.between(-1, seq))
    assert ring.newest_seq == 499 and ring.oldest_seq is not None and ring.oldest_seq > 490


def test_the_alert_role_holds_at_most_max_cameras_and_drops_idle_ones(tmp_path) -> None:
    cfg = eager_config(tmp_path, max_cameras=3, ring={"max_frames": 5, "max_bytes": 2**20})
    rig = Rig(cfg)
    for seq in range(12):
        for cam in range(8):
            rig.producer.send(FRAMES_TOPIC, *good_frame(IMAGE, f"cam{cam}", seq))
            rig.producer.send(SCORES_TOPIC, *good_score(f"cam{cam}", seq, 2.0 if seq % 4 == 1 else 0.3))
    while records := rig.worker.consumer.poll(max_records=7, timeout_ms=0):
        rig.worker.handle(records)
        assert len(rig.worker.cameras) <= 3
        assert all(len(c.ring) <= 5 for c in rig.worker.cameras.values())
    assert rig.value("vigil_alert_cameras_dropped_total", why="max_cameras") > 0
    assert rig.metrics.cameras._value.get() == len(rig.worker.cameras) <= 3
    # nothing arrives any more (the whole bus is quiet): idle after QUIET_BUS_FACTOR timeouts
    quiet = worker_mod.QUIET_BUS_FACTOR * cfg.idle_timeout_s
    rig.worker.housekeeping(now=time.monotonic() + quiet + 5)  # ends what is open
    rig.worker.housekeeping(now=time.monotonic() + quiet + 10)  # then drops them
    assert rig.worker.cameras == {} and rig.value("vigil_alert_cameras_dropped_total", why="idle") >= 1
    assert rig.bus.lag("alert", [FRAMES_TOPIC, SCORES_TOPIC]) == 0  # dropped state holds nothing back
    assert all(r.status == "closed" for r in rig.store.list())  # a dropped camera's alerts were ended


def _files_size(path) -> tuple[int, int]:
    files = list(path.glob("*.spool"))
    return len(files), sum(f.stat().st_size for f in files)


def test_the_spool_stays_within_its_entry_and_byte_caps(tmp_path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=4000, max_entries=8)
    refused = 0
    for i in range(200):
        try:
            spool.append({"op": "mark", "alert_id": "a", "event_ids": [str(i)]},
                         {"clip": b"c" * (i % 7 * 90)})
        except SpoolFullError:
            refused += 1
        count, size = _files_size(tmp_path / "spool")
        assert count == len(spool) <= 8 and size == spool.bytes <= 4000
    assert refused > 150
    again = Spool(tmp_path / "spool", max_bytes=4000, max_entries=8)  # after a restart: the same bound
    assert len(again) == len(spool) and again.bytes == spool.bytes
    with pytest.raises(SpoolFullError):
        for _ in range(20):
            again.append({"op": "mark", "alert_id": "a", "event_ids": []}, {"clip": b"x" * 500})


def test_writes_spooled_while_redis_is_down_stay_bounded(tmp_path) -> None:
    cfg = RedisStoreConfig(url="redis://127.0.0.1:9/0", socket_timeout_s=0.2, spool_dir=tmp_path / "spool",
                           spool_max_entries=5, spool_max_bytes=2**20)
    store = SpoolingStore(RedisStore(cfg), Spool(cfg.spool_dir, cfg.spool_max_bytes, cfg.spool_max_entries))
    results = []
    for i in range(30):
        try:
            results.append(store.put(write(record(f"cam-{i:09d}", start_seq=i, version=i), clip=b"m" * 100)))
        except SpoolFullError:
            results.append(None)
        assert store.pending() <= 5 and _files_size(tmp_path / "spool")[0] <= 5
    assert [r.spooled for r in results if r is not None] == [True] * 5 and results.count(None) == 25


def test_redis_keys_expire_the_index_and_the_stream_are_capped(redis_url) -> None:
    cfg = RedisStoreConfig(url=redis_url, retention_s=120, stream_maxlen=10, index_max=5)
    store = RedisStore(cfg)
    for i in range(300):
        rec = record(f"cam-{i:09d}", start_seq=i, version=i)
        store.put(write(rec, clip=b"mp4", snapshot=b"jpg"))
    client = redis_lib.Redis.from_url(redis_url)
    assert client.zcard(store.index_key("cam")) == 5  # the newest five
    assert [r.alert_id for r in store.list("cam")] == [f"cam-{i:09d}" for i in range(299, 294, -1)]
    # MAXLEN ~ trims whole stream nodes (100 entries by default): approximately capped
    assert client.xlen(store.stream_key) <= cfg.stream_maxlen + 100
    keys = list(client.scan_iter(match=cfg.prefix + "*", count=1000))
    assert len(keys) == 3 * 300 + 2  # records, clips, snapshots + index + stream: each ...
    assert all(0 < client.ttl(k) <= cfg.retention_s for k in keys)  # ... expires with the retention


def test_the_local_store_and_its_event_log_stay_within_their_caps(tmp_path) -> None:
    cfg = LocalStoreConfig(dir=tmp_path / "alerts", events_max=20, max_alerts=10)
    store = LocalStore(cfg)
    root = cfg.dir
    for i in range(60):
        rec = record(f"cam-{i:09d}", start_seq=i, version=i, written_ms=int(time.time() * 1000) + i)
        store.put(write(rec, clip=b"mp4", snapshot=b"jpg"))
        lines = (root / "events.jsonl").read_text().splitlines()
        assert len(lines) <= cfg.events_max + max(10, cfg.events_max // 10)
        alerts = list((root / "alerts").glob("*.json"))
        assert len(alerts) <= cfg.max_alerts + max(10, cfg.max_alerts // 10)
        assert len(list((root / "clips").glob("*"))) == len(alerts) == len(list((root / "snaps").glob("*")))
    store.purge()
    kept = sorted(p.stem for p in (root / "alerts").glob("*.json"))
    assert kept == [f"cam-{i:09d}" for i in range(50, 60)]  # the newest written
    assert len(store.list("cam", limit=1000)) == 10
    assert store.events(None)[-1][1]["alert_id"] == "cam-000000059"  # the log keeps the newest


class BrokenDisk:
    """A store whose writes fail (its disk is full) until ``healed``."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner, self.healed, self.attempts = inner, False, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put(self, w) -> PutResult:
        self.attempts += 1
        if not self.healed:
            raise StoreWriteError(self.inner.root / "alerts" / f"{w.record.alert_id}.json",
                                  OSError(28, "No space left on device"))
        return self.inner.put(w)


def test_writes_kept_in_memory_are_bounded_and_then_the_worker_waits(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(worker_mod, "_QUEUE_BACKOFF", worker_mod.Backoff(0.01, 0.05))
    cfg = AlertingConfig.model_validate({"store": {"kind": "local", "dir": str(tmp_path / "a")},
                                         "store_retry_max_writes": 3, "store_retry_max_bytes": 10_000})
    store = BrokenDisk(LocalStore(cfg.store))  # type: ignore[arg-type]
    bus = InProcessBus(partitions=1)
    worker = AlertWorker(bus.consumer("g", [FRAMES_TOPIC, SCORES_TOPIC]), bus.producer(), store, cfg,  # type: ignore[arg-type]
                         AlertMetrics(CollectorRegistry()), threading.Event())
    for i in range(3):
        assert worker._put(write(record(f"cam-{i:09d}", start_seq=i, version=i))) is None  # kept
    assert worker.queued_writes == 3
    big = write(record("cam-000000009", start_seq=9, version=9), clip=b"x" * 20_000)
    blocked = threading.Thread(target=worker._put, args=(big,))
    blocked.start()
    time.sleep(0.3)
    assert blocked.is_alive() and worker.queued_writes == 3  # the bound holds: the worker waits
    store.healed = True
    blocked.join(timeout=10)
    assert not blocked.is_alive()
    assert worker.queued_writes == 1 and worker._queue_bytes > 20_000  # the big one, after the others
    assert worker._flush_queue(force=True) and worker.queued_writes == 0
    stored = [r.alert_id for r in store.inner.list("cam")]
    assert stored == ["cam-000000009", *(f"cam-{i:09d}" for i in (2, 1, 0))]
    assert total(worker.metrics.registry, "vigil_alert_store_errors_total", reason="ENOSPC") >= 4

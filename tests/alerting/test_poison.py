"""No single record can stop the alert role, the clip recorder or ``vigil alerts tail``: poison
records are counted by reason, logged once with topic/partition/offset and skipped, and the
next valid record is still processed."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

import alerting.worker as worker_mod
from alerting.clip import ClipAssembler, snapshot_jpeg
from alerting.config import AlertingConfig
from alerting.events import ALERTS_TOPIC, parse_event
from alerting.ring import RingEntry
from alerting.store import open_store
from alerting.store.local import LocalStore
from alerting.worker import AlertMetrics, AlertWorker
from common.bus import InProcessBus
from common.messages import FRAMES_TOPIC, SCORES_TOPIC, encode_jpeg
from tests.alerting.poison import (
    HUGE_INT,
    POISON_SETTINGS,
    T0,
    by_label,
    frame_records,
    good_frame,
    good_score,
    jpeg_bomb,
    score_records,
    score_value,
    total,
    valid_score_header,
)

REJECTED = "vigil_alert_rejected_total"
IMAGE = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)


def eager_config(tmp_path: Path, **over) -> AlertingConfig:
    """Alerts start on one hot score and end on one quiet one: every record reaches the
    lifecycle, the clip recorder and the store."""
    base = {"lifecycle": {"enter": 1.0, "exit": 0.8, "k": 1, "n": 1, "m": 1, "min_duration_s": 0.0,
                          "cooldown_s": 0.0, "update_min_interval_s": 0.0},
            "clip": {"pre_roll_s": 0.2, "post_roll_s": 0.1, "overlay": True,
                     "tmp_dir": str(tmp_path / "tmp")},
            "ring": {"max_frames": 50, "max_bytes": 2**22},
            "store": {"kind": "local", "dir": str(tmp_path / "alerts")}, "join_timeout_s": 0.0}
    base.update(over)
    return AlertingConfig.model_validate(base)


class Rig:
    """An alert worker on an in-process bus, driven poll by poll."""

    def __init__(self, cfg: AlertingConfig, store=None) -> None:
        self.bus = InProcessBus(partitions=1)
        self.bus.ensure_topics([FRAMES_TOPIC, SCORES_TOPIC, ALERTS_TOPIC])
        self.producer = self.bus.producer()
        self.store = store or open_store(cfg.store)
        self.metrics = AlertMetrics(CollectorRegistry())
        self.worker = AlertWorker(self.bus.consumer("alert", [FRAMES_TOPIC, SCORES_TOPIC]), self.producer,
                                  self.store, cfg, self.metrics, threading.Event())
        self.reader = self.bus.consumer("check", [ALERTS_TOPIC])

    def drain(self) -> None:
        while records := self.worker.consumer.poll(max_records=64, timeout_ms=0):
            self.worker.handle(records)

    def pair(self, camera: str, seq: int, score: float) -> None:
        self.producer.send(FRAMES_TOPIC, *good_frame(IMAGE, camera, seq))
        self.producer.send(SCORES_TOPIC, *good_score(camera, seq, score))

    def events(self) -> list[dict]:
        out = []
        while batch := self.reader.poll(max_records=1000, timeout_ms=0):
            out += [parse_event(r.value) for r in batch]
        return out

    def value(self, name: str, **labels: str) -> float:
        return total(self.metrics.registry, name, **labels)


def test_random_and_broken_records_never_stop_the_alert_role(tmp_path_factory) -> None:
    rig = Rig(eager_config(tmp_path_factory.mktemp("poison")))
    seqs = iter(range(1, 10**6))

    @POISON_SETTINGS
    @given(frame=frame_records(), score=score_records(), hot=st.booleans())
    def one(frame, score, hot) -> None:
        seq = next(seqs)
        scored = rig.value("vigil_alert_scores_in_total", camera="good")
        rejected_frames = rig.value(REJECTED, topic=FRAMES_TOPIC)
        rejected_scores = rig.value(REJECTED, topic=SCORES_TOPIC)
        seen = rig.value("vigil_alert_scores_in_total") + rig.value("vigil_alert_duplicates_total")
        rig.producer.send(FRAMES_TOPIC, *frame)
        rig.producer.send(SCORES_TOPIC, *score)
        rig.pair("good", seq, 2.0 if hot else 0.3)
        rig.drain()
        assert rig.value("vigil_alert_scores_in_total", camera="good") == scored + 1  # the valid one: in
        assert rig.value(REJECTED, topic=FRAMES_TOPIC) - rejected_frames <= 1
        # the poison score: processed, a duplicate, or counted as rejected -- never lost silently
        poison = (rig.value("vigil_alert_scores_in_total") + rig.value("vigil_alert_duplicates_total")
                  - seen - 1 + rig.value(REJECTED, topic=SCORES_TOPIC) - rejected_scores)
        assert poison == 1
        assert rig.worker.error is None

    one()
    rig.worker.finish_all()
    assert rig.bus.lag("alert", [FRAMES_TOPIC, SCORES_TOPIC]) == 0  # everything committed in the end
    events = rig.events()
    assert any(e["camera"] == "good" and e["state"] == "end" for e in events)
    assert all(r.camera for r in rig.store.list())  # the store still reads back
    reasons = set(by_label(rig.metrics.registry, REJECTED, "reason"))
    assert "bad_message" in reasons


def test_each_kind_of_poison_is_counted_and_logged_once_with_its_offset(tmp_path, caplog) -> None:
    rig = Rig(eager_config(tmp_path))
    key, value, headers = good_frame(IMAGE, "cam", 0)
    rig.producer.send(FRAMES_TOPIC, key, value, [(k, HUGE_INT if k == "ts" else v) for k, v in headers])
    rig.producer.send(FRAMES_TOPIC, key, jpeg_bomb(), headers)  # offset 1: declares 30000x30000
    rig.producer.send(FRAMES_TOPIC, b"../../x", value,
                      [(k, b"../../x" if k == "camera" else v) for k, v in headers])  # offset 2
    deep = b"[" * 100_000
    rig.producer.send(SCORES_TOPIC, b"cam", len(deep).to_bytes(4, "big") + deep, [])  # scores offset 0
    header = valid_score_header("a/b", 0)
    rig.producer.send(SCORES_TOPIC, b"a/b", score_value(header, bytes(16)), [])  # scores offset 1
    rig.pair("cam", 1, 0.3)
    with caplog.at_level(logging.WARNING, logger="alerting.worker"):
        rig.drain()
    assert rig.value("vigil_alert_scores_in_total", camera="cam") == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5  # once per record
    for where in (f"{FRAMES_TOPIC}[0]@0", f"{FRAMES_TOPIC}[0]@1", f"{FRAMES_TOPIC}[0]@2",
                  f"{SCORES_TOPIC}[0]@0", f"{SCORES_TOPIC}[0]@1"):
        assert sum(where in line for line in lines) == 1, where
    assert rig.value(REJECTED) == 5
    assert not (tmp_path / "x.json").exists() and not list(tmp_path.glob("**/x*"))
    rig.worker.finish_all()
    assert rig.bus.lag("alert", [FRAMES_TOPIC, SCORES_TOPIC]) == 0


def test_a_failure_while_handling_a_score_restarts_only_that_cameras_state(tmp_path, caplog,
                                                                          monkeypatch) -> None:
    rig = Rig(eager_config(tmp_path))
    on_score = AlertWorker._on_score

    def failing(self, cam, msg):
        if cam.camera == "bad" and msg.seq == 3:
            raise KeyError("a bug in the alert logic, for this record only")
        return on_score(self, cam, msg)

    monkeypatch.setattr(AlertWorker, "_on_score", failing)
    for seq in range(6):
        rig.pair("bad", seq, 2.0)  # an alert is open when seq 3 fails
        rig.pair("fine", seq, 2.0 if seq < 4 else 0.3)
    with caplog.at_level(logging.WARNING, logger="alerting.worker"):
        rig.drain()
    assert by_label(rig.metrics.registry, REJECTED, "reason") == {"error:KeyError": 1.0}
    [line] = [r.getMessage() for r in caplog.records if "skipping record" in r.getMessage()]
    assert f"{SCORES_TOPIC}[0]@" in line and "camera bad" in line
    assert any("camera bad: alert state started afresh" in r.getMessage() for r in caplog.records)
    # the broken camera's alert was ended and stored with what it had; a new one started after
    bad = sorted((r for r in rig.store.list("bad")), key=lambda r: r.start_seq)
    assert [r.status for r in bad] == ["closed", "open"] and bad[0].clip_ready
    assert bad[1].start_seq == 4
    # the other camera never noticed
    [fine] = rig.store.list("fine")
    assert fine.start_seq == 0 and fine.status in ("open", "closed")
    assert rig.worker.error is None
    rig.worker.finish_all()
    assert rig.bus.lag("alert", [FRAMES_TOPIC, SCORES_TOPIC]) == 0


def test_an_alert_whose_snapshot_cannot_be_made_is_stored_without_one(tmp_path, monkeypatch, caplog) -> None:
    rig = Rig(eager_config(tmp_path))

    def broken_snapshot(*_a, **_kw):
        raise ValueError("the overlay cannot take this map")

    monkeypatch.setattr(worker_mod, "snapshot_jpeg", broken_snapshot)
    rig.pair("cam", 0, 2.0)
    with caplog.at_level(logging.ERROR, logger="alerting.worker"):
        rig.drain()
    [rec] = rig.store.list("cam")
    assert rec.snapshot_key is None and rig.value(REJECTED) == 0
    assert any("no snapshot" in r.getMessage() for r in caplog.records)


def test_a_failure_outside_any_record_stops_the_worker_visibly(tmp_path, caplog) -> None:
    rig = Rig(eager_config(tmp_path))

    def broken(*_a, **_kw):
        raise RuntimeError("a bug in housekeeping")

    rig.worker.housekeeping = broken
    with caplog.at_level(logging.ERROR, logger="alerting.worker"):
        rig.worker.start()
        rig.worker.join(timeout=10)
    assert not rig.worker.alive and isinstance(rig.worker.error, RuntimeError)
    assert any("alert worker failed" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- the clip recorder

def _entry(seq: int, jpeg: bytes, width: int = 64, height: int = 48, amap=None, score=None) -> RingEntry:
    return RingEntry(seq, T0 + seq * 100, width, height, jpeg, score=score, amap=amap)


_MAPS = st.one_of(
    st.none(),
    st.sampled_from([np.full((4, 4), np.nan, np.float32), np.full((4, 4), np.inf, np.float32),
                     np.zeros((1, 1000), np.float32), np.full((8, 8), 1e38, np.float32),
                     np.zeros((3,), np.float32), np.zeros((0, 4), np.float32)]),
)


@st.composite
def ring_entries(draw: st.DrawFn, seq: int) -> RingEntry:
    jpeg = draw(st.one_of(st.binary(max_size=200), st.just(jpeg_bomb()),
                          st.integers(1, 400).map(lambda n: encode_jpeg(IMAGE)[:n]),
                          st.just(encode_jpeg(IMAGE))))
    return _entry(seq, jpeg, draw(st.sampled_from([64, 1, 10_000])), draw(st.sampled_from([48, 1, 10_000])),
                  draw(_MAPS), draw(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))))


def test_broken_frames_never_stop_a_clip_and_the_next_good_frame_is_written(tmp_path) -> None:
    good = encode_jpeg(IMAGE)

    @POISON_SETTINGS
    @given(data=st.data())
    def one(data) -> None:
        clip = ClipAssembler(10.0, (64, 48), overlay=True, crf=30, max_frames=100, tmp_dir=tmp_path)
        try:
            assert clip.add(_entry(0, good))
            bad = data.draw(ring_entries(1))
            clip.add(bad)  # written or left out, never raised
            snapshot_jpeg(bad, None)  # None or bytes, never raised
            assert clip.add(_entry(2, good, amap=np.full((8, 8), 0.5, np.float32), score=0.5))
            assert clip.seqs[0] == 0 and clip.seqs[-1] == 2
            assert clip.finish() is not None
        finally:
            clip.discard()

    one()


# ----------------------------------------------------------------------------- vigil alerts tail

@st.composite
def event_values(draw: st.DrawFn) -> bytes | None:
    good = json.dumps(_event("cam", 1)).encode()
    kind = draw(st.sampled_from(["random", "none", "json", "truncated", "deep", "wrong_type"]))
    if kind == "random":
        return draw(st.binary(max_size=200))
    if kind == "none":
        return None
    if kind == "json":
        return json.dumps(draw(st.one_of(st.integers(), st.text(max_size=10), st.lists(st.integers()),
                                         st.dictionaries(st.text(max_size=5), st.integers())))).encode()
    if kind == "truncated":
        return good[:draw(st.integers(0, len(good) - 1))]
    if kind == "deep":
        return b"[" * 100_000
    event = _event("cam", 1)
    event[draw(st.sampled_from(["state", "camera", "alert_id"]))] = draw(st.one_of(
        st.none(), st.integers(), st.lists(st.integers(), max_size=2), st.just("begin")))
    return json.dumps(event).encode()


def _event(camera: str, seq: int, state: str = "start") -> dict:
    from tests.alerting.store.records import record

    rec = record(f"{camera}-{seq:09d}", camera=camera, start_seq=seq, version=seq)
    return rec.event(state, seq, T0)


def test_tail_of_the_topic_skips_what_is_no_event_and_prints_the_next(capsys) -> None:
    from alerting.cli import alerts_tail, follow_records

    @POISON_SETTINGS
    @given(value=event_values())
    def one(value) -> None:
        skipped: Counter[str] = Counter()
        records = [SimpleNamespace(topic=ALERTS_TOPIC, partition=0, offset=7, value=value),
                   SimpleNamespace(topic=ALERTS_TOPIC, partition=0, offset=8,
                                   value=json.dumps(_event("cam", 2)).encode())]
        out: list[str] = []
        writer = SimpleNamespace(write=out.append, flush=lambda: None)
        printed = alerts_tail(iter(follow_records(iter(records), skipped)), out=writer)  # type: ignore[arg-type]
        assert json.loads(out[-1])["alert_id"] == "cam-000000002"
        assert printed + sum(skipped.values()) == 2
        if skipped:
            assert f"{ALERTS_TOPIC}[0]@7" in capsys.readouterr().err

    one()


def test_tail_of_the_local_store_passes_over_damaged_lines(tmp_path) -> None:
    from alerting.cli import alerts_tail, follow_store
    from tests.alerting.store.records import record, write

    store = LocalStore(eager_config(tmp_path).store)  # type: ignore[arg-type]
    store.put(write(record("cam-000000001", camera="cam", start_seq=1, version=1)))
    with open(store.events_path, "a") as fh:
        fh.write('{"n": 2, "written_ms": 0, "event": {"state": "start"}}\n')  # an entry, not an event
        fh.write("[[[[\n")  # damaged
        fh.write('"just a string"\n')
        fh.write('{"n": 3, "written_ms": 0, "event": null}\n')
    store._next_event = 4
    store.put(write(record("cam-000000005", camera="cam", start_seq=5, version=5)))
    skipped: Counter[str] = Counter()
    out: list[str] = []
    writer = SimpleNamespace(write=out.append, flush=lambda: None)
    printed = alerts_tail(follow_store(store, True, poll_ms=10, skipped=skipped), idle_timeout_s=0.05,
                          out=writer)  # type: ignore[arg-type]
    assert printed == 2 and [json.loads(line)["alert_id"] for line in out] == ["cam-000000001",
                                                                                  "cam-000000005"]
    assert skipped == {"bad_event": 2}


def test_tail_of_the_redis_stream_passes_over_damaged_entries(redis_url, tmp_path) -> None:
    import redis

    from alerting.cli import alerts_tail, follow_store
    from alerting.config import RedisStoreConfig
    from alerting.store import RedisStore
    from tests.alerting.store.records import record, write

    store = RedisStore(RedisStoreConfig(url=redis_url, retention_s=600))
    client = redis.Redis.from_url(redis_url)
    for i in range(150):  # more damaged entries than one read returns: the cursor must move past them
        damaged = {"event": b"not json" if i % 2 else b'{"x": 1}'} if i % 3 else {"y": b"1"}
        client.xadd(store.stream_key, damaged)
    store.put(write(record("cam-000000001", camera="cam", start_seq=1, version=1)))
    skipped: Counter[str] = Counter()
    out: list[str] = []
    writer = SimpleNamespace(write=out.append, flush=lambda: None)
    printed = alerts_tail(follow_store(store, True, poll_ms=10, skipped=skipped), idle_timeout_s=0.2,
                          out=writer)  # type: ignore[arg-type]
    assert printed == 1 and json.loads(out[0])["alert_id"] == "cam-000000001"
    assert skipped == {"bad_event": 150}


def test_a_damaged_record_file_in_the_local_store_is_passed_over_and_replaced(tmp_path) -> None:
    from tests.alerting.store.records import record, write

    store = LocalStore(eager_config(tmp_path).store)  # type: ignore[arg-type]
    store.put(write(record("cam-000000001", camera="cam", start_seq=1, version=1)))
    path = store.root / "alerts" / "cam-000000001.json"
    path.write_text('["not", "a", "record"]')
    assert store.get("cam-000000001") is None and store.list("cam") == []
    assert store.put(write(record("cam-000000001", camera="cam", start_seq=1, version=2))).stored
    assert store.get("cam-000000001").version == 2  # type: ignore[union-attr]
    assert store.get("../../etc/passwd") is None and store.clip("a/b") is None


def test_a_damaged_spool_file_is_moved_aside_and_the_rest_replayed(redis_url, tmp_path, caplog) -> None:
    from alerting.config import RedisStoreConfig
    from alerting.store import RedisStore, Spool, SpoolingStore
    from tests.alerting.store.records import record, write

    spool = Spool(tmp_path / "spool", 2**20, 100)
    for i in (1, 2, 3):
        rec = record(f"cam-{i:09d}", camera="cam", start_seq=i, version=i)
        spool.append({"op": "put", "record": rec.to_json(), "event": None}, {"clip": b"c"})
    damaged = spool.files()[1]
    damaged.write_bytes(damaged.read_bytes()[:30])  # cut short (a disk error, a bad copy)
    store = SpoolingStore(RedisStore(RedisStoreConfig(url=redis_url)), Spool(tmp_path / "spool", 2**20, 100))
    with caplog.at_level(logging.ERROR, logger="alerting.store.spooling"):
        assert store.drain() == 2
    assert store.pending() == 0 and damaged.with_suffix(".bad").exists()
    assert [r.alert_id for r in store.list("cam")] == ["cam-000000003", "cam-000000001"]
    assert any("moved aside" in r.getMessage() and damaged.name in r.getMessage() for r in caplog.records)
    assert store.put(write(record("cam-000000004", camera="cam", start_seq=4, version=4))).stored


def test_a_damaged_record_in_redis_is_passed_over_by_list(redis_url) -> None:
    import redis

    from alerting.config import RedisStoreConfig
    from alerting.store import RedisStore, StoreError
    from tests.alerting.store.records import record, write

    store = RedisStore(RedisStoreConfig(url=redis_url))
    for i in (1, 2):
        store.put(write(record(f"cam-{i:09d}", camera="cam", start_seq=i, version=i)))
    redis.Redis.from_url(redis_url).hset(store.alert_key("cam-000000001"), "peak_score", b"{not json")
    assert [r.alert_id for r in store.list("cam")] == ["cam-000000002"]
    with pytest.raises(StoreError, match="damaged"):
        store.get("cam-000000001")

"""The alert role against real stores: a local folder and a real redis-server.

The worker reads the shipped clip with a composited moving square (frames) and scores that
follow the square, both on the in-process bus, and is driven synchronously (``handle``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from alerting.config import AlertingConfig
from alerting.events import ALERTS_TOPIC, parse_event
from alerting.store import AlertStore, open_store
from alerting.worker import AlertMetrics, AlertWorker
from common.bus import InProcessBus
from common.messages import FRAMES_TOPIC, SCORES_TOPIC, decode_jpeg
from streamer.video import iter_frames
from tests.alerting.streams import STEP_MS, T0, Event, box_at, clip_images, composite, messages, publish
from tests.servers import RedisServer

EVENT = Event(60, 79)
CAMERA = "gate"
GROUP = "vigil-alert"


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return composite(clip_images(), EVENT)


def alerting_config(store: dict, **over) -> AlertingConfig:
    base = {
        "lifecycle": {"enter": 1.0, "exit": 0.8, "k": 3, "n": 5, "m": 5, "min_duration_s": 1.0,
                      "cooldown_s": 5.0},
        "clip": {"pre_roll_s": 3.0, "post_roll_s": 3.0},
        "ring": {"max_frames": 80, "max_bytes": 16 * 2**20},
        "store": store,
        "join_timeout_s": 0.0,
    }
    base.update(over)
    return AlertingConfig.model_validate(base)


def local(tmp_path: Path) -> dict:
    return {"kind": "local", "dir": str(tmp_path / "alerts")}


def redis(url: str, tmp_path: Path, **over) -> dict:
    return {"kind": "redis", "url": url, "retention_s": 3600, "spool_dir": str(tmp_path / "spool"), **over}


class Harness:
    """An alert worker on an in-process bus, driven record batch by record batch."""

    def __init__(self, cfg: AlertingConfig, bus: InProcessBus | None = None, store: AlertStore | None = None):
        self.bus = bus or InProcessBus(partitions=2)
        self.bus.ensure_topics([FRAMES_TOPIC, SCORES_TOPIC, ALERTS_TOPIC])
        self.producer = self.bus.producer()
        self.store = store or open_store(cfg.store)
        self.metrics = AlertMetrics(CollectorRegistry())
        self.worker = AlertWorker(self.bus.consumer(GROUP, [FRAMES_TOPIC, SCORES_TOPIC]), self.producer,
                                  self.store, cfg, self.metrics)

    def drain(self, batch: int = 16) -> None:
        while records := self.worker.consumer.poll(max_records=batch, timeout_ms=0):
            self.worker.handle(records)

    def events(self) -> list[dict]:
        reader = self.bus.consumer(f"reader-{id(self)}-{np.random.randint(1 << 30)}", [ALERTS_TOPIC])
        out = [parse_event(r.value) for r in reader.poll(max_records=10_000, timeout_ms=0)]
        reader.close()
        return out

    def lag(self) -> int:
        return self.bus.lag(GROUP, [FRAMES_TOPIC, SCORES_TOPIC])


def states(events: list[dict]) -> list[str]:
    return [e["state"] for e in events]


def decode_clip(data: bytes, tmp_path: Path) -> list[np.ndarray]:
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    return [f.image for f in iter_frames(path)]


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_composited_anomaly_gives_one_alert_with_clip_and_snapshot(kind, images, tmp_path, redis_url) -> None:
    store_cfg = local(tmp_path) if kind == "local" else redis(redis_url, tmp_path)
    h = Harness(alerting_config(store_cfg))
    publish(h.producer, messages(images, CAMERA, EVENT))
    h.drain()
    events = h.events()
    assert states(events).count("start") == 1 and states(events).count("end") == 1
    assert states(events)[0] == "start" and states(events)[-1] == "end"
    start, end = events[0], events[-1]
    alert_id = start["alert_id"]
    assert alert_id == f"{CAMERA}-{start['start_seq']:09d}" and end["alert_id"] == alert_id
    assert EVENT.first + 2 == start["start_seq"]  # k = 3 hits
    assert end["end_seq"] == EVENT.last + 5  # m = 5 quiet frames
    assert start["threshold"] == 1.0 and start["model"].startswith("campus:cflow:")
    for e in events:
        assert {"schema", "camera", "scene", "seq", "ts", "source", "alert_id", "state", "start_ts", "end_ts",
                "peak_score", "threshold", "model", "region", "clip_key", "snapshot_key"} <= set(e)
        assert e["camera"] == CAMERA and e["source"] == "replay"
    assert end["clip_ready"] and not start["clip_ready"]
    # the cool-down still depends on the alert's records: not committed yet; the end of the
    # stream releases them (and ends nothing more)
    assert h.lag() > 0
    h.worker.finish_all()
    assert h.lag() == 0 and len(h.events()) == len(events)

    [rec] = h.store.list(CAMERA)
    assert rec.alert_id == alert_id and rec.status == "closed" and rec.clip_ready
    assert rec.start_ts == T0 + rec.start_seq * STEP_MS
    # the clip: pre-roll (3 s before the start) + alert + post-roll (3 s after the end)
    assert rec.clip_first_seq == rec.start_seq - 30
    assert rec.clip_last_seq == rec.end_seq + 30
    frames = decode_clip(h.store.clip(alert_id), tmp_path)
    assert len(frames) == rec.clip_frames == rec.clip_last_seq - rec.clip_first_seq + 1
    assert frames[0].shape == images[0].shape
    # the clip's first frame is the pre-roll frame from 3 s before the start
    distance = [float(np.abs(frames[0].astype(int) - img.astype(int)).mean()) for img in images]
    assert abs(int(np.argmin(distance)) - rec.clip_first_seq) <= 1
    # the region: the object's box in the peak frame
    x0, y0, x1, y1 = box_at(rec.peak_seq, EVENT, 256, 192)
    r = rec.region
    assert r is not None and (r.width, r.height) == (256, 192)
    assert r.x0 <= x0 + 8 and r.x1 >= x1 - 8 and r.y0 <= y0 + 8 and r.y1 >= y1 - 8
    assert (r.x1 - r.x0) < 2.5 * (x1 - x0)
    snap = decode_jpeg(h.store.snapshot(alert_id))
    assert snap.shape == images[0].shape
    if kind == "redis":
        inner = h.store.inner
        keys = [inner.alert_key(alert_id), inner.clip_key(alert_id), inner.snapshot_key(alert_id),
                inner.index_key(CAMERA), inner.stream_key]
        assert rec.clip_key == inner.clip_key(alert_id) == "vigil:clip:" + alert_id
        for key in keys:
            assert 0 < inner.ttl(key) <= 3600, key
        stream = h.store.events(None)
        assert [e["event_id"] for _, e in stream] == [e["event_id"] for e in events]
        assert h.store.pending() == 0
    else:
        assert (tmp_path / "alerts" / "clips" / f"{alert_id}.mp4").is_file()
        lines = (tmp_path / "alerts" / "events.jsonl").read_text().splitlines()
        assert [json.loads(line)["event"]["state"] for line in lines] == states(events)


def test_replaying_the_same_clip_twice_creates_no_duplicate(images, tmp_path, redis_url) -> None:
    cfg = alerting_config(redis(redis_url, tmp_path))
    pairs = messages(images, CAMERA, EVENT)
    first = Harness(cfg)
    publish(first.producer, pairs)
    first.drain()
    published_first = first.events()
    # the replay: a new process (fresh bus, fresh worker), the same store
    second = Harness(cfg)
    publish(second.producer, pairs)
    second.drain()
    assert second.events() == []  # the store knew every event was published already
    assert len(second.store.list()) == 1
    stream = second.store.events(None)
    assert [e["event_id"] for _, e in stream] == [e["event_id"] for e in published_first]
    assert second.store.get(published_first[0]["alert_id"]).status == "closed"


def test_redis_restarted_in_the_middle_of_an_alert_loses_nothing(images, tmp_path, redis_server: RedisServer,
                                                                redis_url) -> None:
    cfg = alerting_config(redis(redis_url, tmp_path))
    h = Harness(cfg)
    pairs = messages(images, CAMERA, EVENT)
    publish(h.producer, pairs[:EVENT.first + 8])  # the alert has started
    h.drain()
    assert states(h.events()) == ["start"]
    alert_id = h.events()[0]["alert_id"]
    redis_server.stop()
    try:
        publish(h.producer, pairs[EVENT.first + 8:])  # updates, the end and the clip: Redis is down
        h.drain()
        assert h.store.pending() >= 1  # spooled on disk
        spool_files = sorted((tmp_path / "spool").glob("*.spool"))
        assert spool_files
        assert states(h.events()).count("end") == 1  # the topic still heard about it
    finally:
        redis_server.start()
    h.worker.store._retry_at = 0.0  # no back-off wait in the test
    assert h.store.drain() >= 1 and h.store.pending() == 0
    rec = h.store.get(alert_id)
    assert rec is not None and rec.status == "closed" and rec.clip_ready
    assert len(decode_clip(h.store.clip(alert_id), tmp_path)) == rec.clip_frames > 0
    assert h.store.snapshot(alert_id) is not None
    assert [r.alert_id for r in h.store.list(CAMERA)] == [alert_id]
    stream_states = [e["state"] for _, e in h.store.events(None)]
    assert stream_states.count("end") == 1
    assert 0 < h.store.ttl(h.store.clip_key(alert_id)) <= 3600
    # exactly one start and one end went out on the topic, and draining again changes nothing
    assert states(h.events()).count("start") == 1 and states(h.events()).count("end") == 1
    assert h.store.drain() == 0 and len(h.store.events(None)) == len(stream_states)


def test_scores_hovering_at_the_threshold_do_not_flap(images, tmp_path, redis_url) -> None:
    cfg = alerting_config(redis(redis_url, tmp_path))
    h = Harness(cfg)
    rng = np.random.default_rng(1)
    hover = {seq: float(1.0 + rng.uniform(-0.15, 0.15)) for seq in range(20, 100)}
    publish(h.producer, messages(images, CAMERA, None, scores=hover))
    h.drain()
    h.worker.finish_all()
    events = h.events()
    assert states(events).count("start") == 1  # never ends while hovering above exit
    assert states(events)[-1] == "end"  # ended by the end of the stream
    assert len(h.store.list()) == 1


def test_crash_mid_alert_is_recovered_from_uncommitted_records(images, tmp_path) -> None:
    """At-least-once: a worker that dies mid-alert left the alert's records uncommitted; the
    next one rebuilds the same alert (same id, same clip), without publishing the start again."""
    cfg = alerting_config(local(tmp_path))
    bus = InProcessBus(partitions=2)
    first = Harness(cfg, bus)
    pairs = messages(images, CAMERA, EVENT)
    publish(first.producer, pairs[:EVENT.last])
    first.drain()
    assert states(first.events()) == ["start"]
    committed = bus.committed(GROUP)
    assert committed  # something is committed, but not the alert's pre-roll and window
    first.worker.consumer.close()  # crash: no finish, nothing more committed
    second = Harness(cfg, bus, store=first.store)
    publish(second.producer, pairs[EVENT.last:])
    second.drain()
    events = second.events()
    assert states(events).count("start") == 1 and states(events).count("end") == 1
    [rec] = second.store.list()
    assert rec.alert_id == events[0]["alert_id"] and rec.status == "closed"
    assert rec.clip_first_seq == rec.start_seq - 30  # the pre-roll was read again
    second.worker.finish_all()
    assert second.lag() == 0


def test_bad_records_duplicates_and_missing_frames(images, tmp_path) -> None:
    cfg = alerting_config(local(tmp_path))
    h = Harness(cfg)
    pairs = messages(images, CAMERA, EVENT)
    h.producer.send(FRAMES_TOPIC, b"x", b"not a frame", [])
    h.producer.send(SCORES_TOPIC, b"x", b"\x00\x00\x00\x02{}", [])
    # frames 62..70 never arrive; every score is sent twice
    for frame, score in pairs:
        if not 62 <= frame.seq <= 70:
            h.producer.send(FRAMES_TOPIC, *frame.to_record())
        h.producer.send(SCORES_TOPIC, *score.to_record())
        h.producer.send(SCORES_TOPIC, *score.to_record())
    h.drain()
    m = h.metrics
    assert m.rejected.labels(FRAMES_TOPIC, "bad_message")._value.get() == 1
    assert m.rejected.labels(SCORES_TOPIC, "bad_message")._value.get() == 1
    assert m.duplicates._value.get() == len(pairs)
    assert m.missing_frames._value.get() == 9
    events = h.events()
    assert states(events).count("start") == 1 and states(events).count("end") == 1
    [rec] = h.store.list()
    assert rec.clip_frames == rec.clip_last_seq - rec.clip_first_seq + 1 - 9  # the missing frames
    h.worker.finish_all()
    assert h.lag() == 0


def test_scores_that_arrive_before_their_frames_wait_for_them(images, tmp_path) -> None:
    cfg = alerting_config(local(tmp_path), join_timeout_s=30.0)
    h = Harness(cfg, InProcessBus(partitions=1))
    pairs = messages(images, CAMERA, EVENT)
    for chunk in range(0, len(pairs), 10):  # each chunk's scores first, then its frames
        part = pairs[chunk:chunk + 10]
        for _frame, score in part:
            h.producer.send(SCORES_TOPIC, *score.to_record())
        h.drain()
        assert len(h.worker.cameras[CAMERA].pending) == len(part)  # waiting, not processed
        for frame, _score in part:
            h.producer.send(FRAMES_TOPIC, *frame.to_record())
        h.drain()
        assert not h.worker.cameras[CAMERA].pending
    assert h.metrics.missing_frames._value.get() == 0
    [rec] = h.store.list()
    assert rec.status == "closed" and rec.clip_frames == rec.clip_last_seq - rec.clip_first_seq + 1


def test_a_camera_moving_to_another_scene_ends_its_alert(images, tmp_path) -> None:
    """The first record of a camera from a new scene ends the alert it had open in the old one
    (stored closed, with its clip) and starts the camera afresh in the new scene."""
    cfg = alerting_config(local(tmp_path))
    h = Harness(cfg, InProcessBus(partitions=1))
    publish(h.producer, messages(images, CAMERA, EVENT)[:EVENT.first + 8])
    h.drain()
    assert states(h.events()) == ["start"]
    moved = messages(images, CAMERA, None, scene="other", seqs=range(EVENT.first + 8, EVENT.first + 12))
    publish(h.producer, moved)
    h.drain()
    events = h.events()
    assert states(events) == ["start", "end"] and events[-1]["scene"] == "campus"
    [rec] = h.store.list(CAMERA)
    assert rec.status == "closed" and rec.clip_ready and rec.scene == "campus"
    assert rec.clip_frames == rec.clip_last_seq - rec.clip_first_seq + 1 > 0
    cam = h.worker.cameras[CAMERA]
    assert cam.scene == "other" and cam.machine.active is None and not cam.alerts
    assert cam.last_seq == EVENT.first + 11
    h.worker.finish_all()
    assert h.lag() == 0 and len(h.events()) == 2


def test_an_alert_on_provisional_scores_is_stored_and_published_provisional(images, tmp_path) -> None:
    h = Harness(alerting_config(local(tmp_path)))
    pairs = [(f, dataclasses.replace(s, provisional=True)) for f, s in messages(images, CAMERA, EVENT)]
    publish(h.producer, pairs)
    h.drain()
    h.worker.finish_all()
    events = h.events()
    assert events and all(e["provisional"] is True for e in events)
    [rec] = h.store.list(CAMERA)
    assert rec.provisional is True
    # the same footage scored after the learning period: a final alert
    h2 = Harness(alerting_config(local(tmp_path / "final")))
    publish(h2.producer, messages(images, CAMERA, EVENT))
    h2.drain()
    assert h2.events() and not any(e["provisional"] for e in h2.events())

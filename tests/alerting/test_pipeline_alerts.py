"""The whole path with alerting: a frame folder with a composited object -> ingest -> detector
(the tiny trained scene) -> alert role -> store + vigil.alerts, then the `vigil alerts` commands.

Embedded mode: in-process bus, local store. Kafka mode: the tansu broker and a real
redis-server. The composited object is an 80 px red/green checkerboard crossing the view in
frames 60-79; the tiny test model scores it 2.5-4.2 while the clip's normal frames stay
under 2.0, so the alert thresholds are set between (enter 2.3, exit 2.0)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import pytest
import yaml

from alerting.store import LocalStore, RedisStore
from common.bus import KafkaConfig
from streamer.video import iter_frames
from tests.alerting.streams import CHECKER_FIRST as FIRST
from tests.alerting.streams import CHECKER_LAST as LAST
from tests.conftest import TINY_SCENE
from tests.vigil.test_cli import vigil
from vigil.config import parse_config
from vigil.runner import ROLES, Pipeline

T0 = 1_700_000_000_000
FRAME_MS = 40  # frame folders are timed at 25 fps


def config_data(registry_root: Path, out: Path, folder: Path, camera: str, store: dict,
                bus: dict | None = None) -> dict:
    return {
        "scenes": {"root": str(registry_root)},
        "detector": {"batch_size": 8, "max_wait_ms": 20, "map_size": 32},
        "cameras": [{"id": camera, "url": str(folder), "scene": TINY_SCENE, "replay_start_ms": T0}],
        "bus": bus or {"kind": "inprocess"},
        "recorder": {"dir": str(out / "scores")},
        "alerting": {
            "lifecycle": {"enter": 2.3, "exit": 2.0, "k": 3, "n": 5, "m": 5, "min_duration_s": 0.2,
                          "cooldown_s": 2.0},
            "clip": {"pre_roll_s": 1.0, "post_roll_s": 1.0},
            "store": store,
            "idle_timeout_s": 5.0,
        },
    }


def write_config(data: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def check_alert(rec, tmp_path: Path, clip: bytes) -> None:
    assert rec.status == "closed" and rec.clip_ready and rec.threshold == 2.3
    assert FIRST <= rec.onset_seq <= rec.start_seq <= FIRST + 6
    assert LAST < rec.end_seq <= LAST + 8
    assert rec.model.startswith(f"{TINY_SCENE}:cflow:")
    assert rec.start_ts == T0 + rec.start_seq * FRAME_MS
    # pre-roll: frames from (1 s) before the start; post-roll: 1 s after the end
    assert rec.clip_first_seq == rec.start_seq - 25 and rec.clip_last_seq == rec.end_seq + 25
    path = tmp_path / "check.mp4"
    path.write_bytes(clip)
    frames = list(iter_frames(path))
    assert len(frames) == rec.clip_frames == rec.clip_last_seq - rec.clip_first_seq + 1
    # the score timeline the review page draws: every clip frame, in order, the peak among them
    assert [p[0] for p in rec.timeline] == list(range(rec.clip_first_seq, rec.clip_last_seq + 1))
    assert max(p[2] for p in rec.timeline if p[2] is not None) == pytest.approx(rec.peak_score, abs=1e-3)
    assert frames[0].image.shape == (192, 256, 3)
    r = rec.region
    assert r is not None and (r.width, r.height) == (256, 192)
    assert r.y0 < 96 < r.y1 and 40 <= r.x1 - r.x0 <= 160  # around the 80 px object


def test_embedded_pipeline_raises_one_alert_and_the_cli_reads_it(registry, anomaly_folder, tmp_path) -> None:
    data = config_data(registry.root, tmp_path, anomaly_folder, "cam-emb",
                       {"kind": "local", "dir": str(tmp_path / "alerts")})
    with Pipeline(parse_config(data), ROLES) as pipeline:
        assert pipeline.wait(timeout=180), "embedded pipeline did not drain"
        metrics = pipeline.alert_metrics
        assert metrics is not None
        assert metrics.events.labels("start")._value.get() == 1
        assert metrics.events.labels("end")._value.get() == 1
    store = LocalStore(parse_config(data).alerting.store)
    [rec] = store.list()
    check_alert(rec, tmp_path, store.clip(rec.alert_id))

    config = write_config(data, tmp_path / "embedded.yaml")
    listed = vigil("--config", config, "alerts", "list", "--camera", "cam-emb")
    assert listed.code == 0, listed.err
    assert [json.loads(line)["alert_id"] for line in listed.out.splitlines()] == [rec.alert_id]
    got = vigil("--config", config, "alerts", "get", rec.alert_id, "-o", tmp_path / "c.mp4",
                "--snapshot", tmp_path / "s.jpg")
    assert got.code == 0, got.err
    assert json.loads(got.out)["alert_id"] == rec.alert_id
    assert (tmp_path / "c.mp4").read_bytes() == store.clip(rec.alert_id)
    assert cv2.imread(str(tmp_path / "s.jpg")).shape == (192, 256, 3)
    tail = vigil("--config", config, "alerts", "tail", "--from-beginning", "--timeout", "1")
    assert tail.code == 0, tail.err
    states = [json.loads(line)["state"] for line in tail.out.splitlines()]
    assert states[0] == "start" and states[-1] == "end" and states.count("end") == 1
    missing = vigil("--config", config, "alerts", "get", "cam-emb-000000001")
    assert missing.code == 2 and "no alert" in missing.err


@pytest.mark.kafka
def test_kafka_and_redis_deployment(registry, anomaly_folder, tmp_path, kafka_config: KafkaConfig,
                                    redis_url: str) -> None:
    bus = {"kind": "kafka", "kafka": kafka_config.model_dump(mode="json") | {"sasl_plain_password": None}}
    store_cfg = {"kind": "redis", "url": redis_url, "retention_s": 3600, "spool_dir": str(tmp_path / "spool")}
    data = config_data(registry.root, tmp_path, anomaly_folder, "cam-kafka", store_cfg, bus)
    config = write_config(data, tmp_path / "kafka.yaml")
    store = RedisStore(parse_config(data).alerting.store)
    with Pipeline(parse_config(data), ROLES):
        deadline = time.monotonic() + 180
        while not any(r.status == "closed" for r in store.list("cam-kafka")):
            assert time.monotonic() < deadline, "no closed alert in Redis after 180 s"
            time.sleep(0.5)
    [rec] = store.list("cam-kafka")
    check_alert(rec, tmp_path, store.clip(rec.alert_id))
    for key in (store.alert_key(rec.alert_id), store.clip_key(rec.alert_id), store.snapshot_key(rec.alert_id),
                store.index_key("cam-kafka"), store.stream_key):
        assert 0 < store.ttl(key) <= 3600
    # the topic, from the beginning: one start ... one end, keyed by camera
    tail = vigil("--config", config, "alerts", "tail", "--from-beginning", "--camera", "cam-kafka",
                 "--timeout", "5")
    assert tail.code == 0, tail.err
    events = [json.loads(line) for line in tail.out.splitlines()]
    assert [e["state"] for e in events].count("start") == 1 and events[0]["state"] == "start"
    assert [e["state"] for e in events].count("end") == 1 and events[-1]["state"] == "end"
    assert {e["alert_id"] for e in events} == {rec.alert_id}
    assert events[-1]["clip_key"] == f"vigil:clip:{rec.alert_id}" and events[-1]["clip_ready"]
    got = vigil("--config", config, "alerts", "get", rec.alert_id, "-o", tmp_path / "c.mp4")
    assert got.code == 0, got.err
    assert (tmp_path / "c.mp4").read_bytes() == store.clip(rec.alert_id)
    store.close()

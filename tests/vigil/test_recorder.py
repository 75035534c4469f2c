"""The score recorder writes one CSV row per (camera, seq), dropping redeliveries."""

from __future__ import annotations

import csv

import numpy as np
from prometheus_client import CollectorRegistry

from common.bus import InProcessBus
from common.messages import SCORES_TOPIC, ScoreMessage
from vigil.recorder import COLUMNS, ScoreRecorder


def score(camera: str, seq: int) -> ScoreMessage:
    return ScoreMessage(camera=camera, scene="s", seq=seq, ts=1000 + seq, source="replay", score=0.5,
                        raw=1.0, model="s:cflow:abc", latency_ms=3.0,
                        anomaly_map=np.zeros((8, 8), np.float32))


def test_duplicates_and_garbage_are_dropped(tmp_path) -> None:
    bus = InProcessBus(partitions=1)
    producer = bus.producer()
    for seq in (0, 1, 1, 2, 0):
        producer.send(SCORES_TOPIC, *score("cam", seq).to_record())
    producer.send(SCORES_TOPIC, b"cam", b"\x00\x00\x00\x05garbage", [])
    recorder = ScoreRecorder(bus.consumer("rec", [SCORES_TOPIC]), tmp_path, CollectorRegistry())
    recorder.handle(recorder.consumer.poll(max_records=100, timeout_ms=100))
    recorder.close()
    rows = list(csv.reader((tmp_path / "cam.csv").open()))
    assert rows[0] == COLUMNS
    assert [int(r[0]) for r in rows[1:]] == [0, 1, 2]
    assert recorder.duplicates._value.get() == 2
    assert recorder.rejected.labels("bad_message")._value.get() == 1
    assert bus.lag("rec", [SCORES_TOPIC]) == 0


def test_poison_records_never_stop_the_recorder(tmp_path) -> None:
    from hypothesis import given

    from tests.alerting.poison import POISON_SETTINGS, score_records, total

    bus = InProcessBus(partitions=1)
    producer = bus.producer()
    registry = CollectorRegistry()
    recorder = ScoreRecorder(bus.consumer("rec", [SCORES_TOPIC]), tmp_path, registry)
    seqs = iter(range(10**6))
    done: list[int] = []

    def counts() -> tuple[float, float, float]:
        return (total(registry, "vigil_recorder_scores_written_total"),
                total(registry, "vigil_recorder_rejected_total"),
                total(registry, "vigil_recorder_duplicates_total"))

    @POISON_SETTINGS
    @given(poison=score_records())
    def one(poison) -> None:
        seq = next(seqs)
        written, rejected, duplicates = counts()
        producer.send(SCORES_TOPIC, *poison)
        producer.send(SCORES_TOPIC, *score("good", seq).to_record())
        recorder.handle(recorder.consumer.poll(max_records=10, timeout_ms=100))
        w, r, d = counts()
        assert recorder.count("good") == seq + 1  # the valid record after it: written
        assert (w - written) + (r - rejected) + (d - duplicates) == 2  # the poison: written or counted
        assert bus.lag("rec", [SCORES_TOPIC]) == 0
        done.append(seq)

    one()
    recorder.close()
    rows = list(csv.reader((tmp_path / "good.csv").open()))
    assert [int(r[0]) for r in rows[1:]] == done
    assert all(p.parent == tmp_path for p in tmp_path.rglob("*.csv"))  # no camera id escaped the folder


def test_a_camera_id_that_cannot_name_a_file_and_a_deep_header_are_counted(tmp_path) -> None:
    import json
    import struct

    bus = InProcessBus(partitions=1)
    producer = bus.producer()
    head = json.dumps({"schema": 1, "camera": "../escape", "scene": "s", "seq": 0, "ts": 1,
                       "source": "replay", "score": 0.5, "raw": 1.0, "model": "m", "latency_ms": 1.0,
                       "map_shape": [1, 1], "map_encoding": "uint8", "map_lo": 0.0, "map_hi": 2.0}).encode()
    producer.send(SCORES_TOPIC, b"../escape", struct.pack(">I", len(head)) + head + b"\x00", [])
    deep = b"[" * 100_000
    producer.send(SCORES_TOPIC, b"cam", struct.pack(">I", len(deep)) + deep, [])
    producer.send(SCORES_TOPIC, *score("cam", 0).to_record())
    recorder = ScoreRecorder(bus.consumer("rec", [SCORES_TOPIC]), tmp_path / "out", CollectorRegistry())
    assert recorder.handle(recorder.consumer.poll(max_records=10, timeout_ms=100)) == 1
    assert recorder.rejected.labels("bad_message")._value.get() == 2  # both refused by the contract
    assert not (tmp_path / "escape.csv").exists() and recorder.count("cam") == 1


def test_the_recorder_is_bounded_in_cameras_and_open_files(tmp_path) -> None:
    bus = InProcessBus(partitions=1)
    producer = bus.producer()
    for seq in range(3):
        for cam in range(6):
            producer.send(SCORES_TOPIC, *score(f"cam{cam}", seq).to_record())
    recorder = ScoreRecorder(bus.consumer("rec", [SCORES_TOPIC]), tmp_path, CollectorRegistry(),
                             max_cameras=4, max_open_files=2)
    while records := recorder.consumer.poll(max_records=5, timeout_ms=50):
        recorder.handle(records)
        assert len(recorder._files) <= 2  # files closed and reopened for appending
    recorder.close()
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == [f"cam{i}.csv" for i in range(4)]
    for cam in range(4):  # reopening appended: one header, every row
        rows = list(csv.reader((tmp_path / f"cam{cam}.csv").open()))
        assert rows[0] == COLUMNS and [int(r[0]) for r in rows[1:]] == [0, 1, 2]
    assert recorder.rejected.labels("too_many_cameras")._value.get() == 6

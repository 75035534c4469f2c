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
    assert recorder.rejected._value.get() == 1
    assert bus.lag("rec", [SCORES_TOPIC]) == 0

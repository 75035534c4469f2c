"""The detector worker against the real Kafka-protocol broker (tansu): one record with a
malformed scene id, from any producer, cannot take the detector down."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from common.bus import KafkaBus, KafkaConfig
from common.messages import FrameMessage, ScoreMessage
from detector.worker import DetectorMetrics, DetectorSettings, DetectorWorker
from scenes.registry import SceneRegistry
from tests.conftest import TINY_SCENE


def _frame(image: np.ndarray, seq: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return FrameMessage.from_image(image, camera="cam", scene=TINY_SCENE, seq=seq, ts=1_700_000_000_000 + seq,
                                   source="replay").to_record()


def _with_scene(record: tuple[bytes, bytes, list[tuple[str, bytes]]], scene: bytes):
    """The same record with a forged ``scene`` header: what a buggy or hostile producer sends
    (the frame contract refuses to build such a message)."""
    key, value, headers = record
    return key, value, [(k, scene if k == "scene" else v) for k, v in headers]


def _run_until(worker: DetectorWorker, done, timeout_s: float = 60) -> None:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.1)
    assert thread.is_alive(), f"the detector worker stopped: {worker.error!r}"
    worker.stop.set()
    thread.join(30)


@pytest.mark.kafka
def test_bad_scene_id_is_counted_skipped_and_committed(kafka_config: KafkaConfig, encoder,
                                                        registry: SceneRegistry, clip_frames) -> None:
    suffix = uuid.uuid4().hex[:8]
    frames, scores = f"vigil.frames.{suffix}", f"vigil.scores.{suffix}"
    bus = KafkaBus(kafka_config)
    bus.ensure_topics([frames, scores])
    with bus.producer() as producer:
        producer.send(frames, *_frame(clip_frames[0], 0))
        for seq, bad in enumerate([b"a/b", b"../x", b"x" * 70], start=1):
            producer.send(frames, *_with_scene(_frame(clip_frames[seq], seq), bad))
        producer.send(frames, *_frame(clip_frames[4], 4))
        producer.flush(10)

    group = f"det-{suffix}"
    seen: list[ScoreMessage] = []
    collector = bus.consumer(f"check-{suffix}", [scores])

    def scored() -> bool:
        seen.extend(ScoreMessage.from_record(r.key, r.value, r.headers)
                    for r in collector.poll(max_records=50, timeout_ms=100))
        return len(seen) >= 2

    # Twice: a restarted worker must not meet the bad records again (they were committed).
    rejected = []
    for _ in range(2):
        metrics = DetectorMetrics(CollectorRegistry())
        worker = DetectorWorker(bus.consumer(group, [frames]), bus.producer(), encoder, registry,
                                DetectorSettings(batch_size=8, max_wait_ms=200), metrics, threading.Event(),
                                frames_topic=frames, scores_topic=scores)
        _run_until(worker, scored if not seen else lambda: False, timeout_s=60 if not seen else 8)
        rejected.append(metrics.registry.get_sample_value("vigil_detector_rejected_total",
                                                          {"reason": "bad_scene"}) or 0)
        worker.consumer.close()
        worker.producer.close()
    collector.close()
    assert sorted(s.seq for s in seen) == [0, 4]
    assert rejected == [3, 0]

"""Two cameras streamed through the detector worker on the in-process bus, for the tests that
check a worker's per-camera state (motion, score smoothing) against offline scoring."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from prometheus_client import CollectorRegistry

from common.bus import InProcessBus
from common.messages import FRAMES_TOPIC, SCORES_TOPIC, FrameMessage, ScoreMessage
from detector.checkpoint import save_scene
from detector.encoders import Encoder
from detector.model import SceneModel
from detector.worker import DetectorMetrics, DetectorSettings, DetectorWorker
from scenes.registry import SceneRegistry

#: The two cameras and where each one's frames start in the test clip.
CAMERAS = (("cam-a", 0), ("cam-b", 10))


def stream_two_cameras(model: SceneModel, encoder: Encoder, clip_frames: list[np.ndarray],
                       registry: SceneRegistry, seqs: Sequence[int], **settings: object
                       ) -> dict[tuple[str, int], float]:
    """Send both cameras' frames ``seqs`` interleaved, run a worker in batches of 4 (which mix the
    cameras and split their runs), and return the published score of every ``(camera, seq)``.
    ``settings``: further :class:`DetectorSettings`."""
    save_scene(registry, "walk", model)
    bus = InProcessBus(partitions=2)
    producer = bus.producer()
    for seq in seqs:
        for cam, offset in CAMERAS:
            producer.send(FRAMES_TOPIC, *FrameMessage.from_image(
                clip_frames[offset + seq], camera=cam, scene="walk", seq=seq,
                ts=1_700_000_000_000 + 100 * seq, source="replay").to_record())
    worker = DetectorWorker(bus.consumer("det", [FRAMES_TOPIC]), bus.producer(), encoder, registry,
                            DetectorSettings(batch_size=4, max_wait_ms=0, map_encoding="float16", **settings),
                            DetectorMetrics(CollectorRegistry()), threading.Event())
    while records := worker.poll_batch():
        worker.process(records)
    worker.scorer.close()
    consumer = bus.consumer("check", [SCORES_TOPIC])
    scores: dict[tuple[str, int], float] = {}
    while batch := consumer.poll(max_records=100, timeout_ms=50):
        for r in batch:
            s = ScoreMessage.from_record(r.key, r.value, r.headers)
            scores[(s.camera, s.seq)] = s.score
    return scores


def sent_images(clip_frames: list[np.ndarray], offset: int, seqs: Sequence[int]) -> list[np.ndarray]:
    """The frames as the worker sees them (after the message's JPEG round trip)."""
    return [FrameMessage.from_image(clip_frames[offset + q], camera="x", scene="x", seq=0, ts=0,
                                    source="replay").image() for q in seqs]

"""The detector's caches are bounded by configuration: the scene-head cache (``cache_models``,
``cache_mb``) stays within both bounds however many scenes its frames name, and the motion
state goes with an evicted head."""

from __future__ import annotations

import threading

import torch
from prometheus_client import CollectorRegistry

from common.bus import InProcessBus
from common.messages import FRAMES_TOPIC
from detector.checkpoint import save_scene
from detector.motion import MotionSettings, MotionTracker
from detector.worker import DetectorMetrics, DetectorSettings, DetectorWorker, SceneCache
from scenes.registry import SceneRegistry
from tests.alerting.poison import good_frame

SCENES = [f"s{i}" for i in range(6)]


def many_scenes(tmp_path, scene_model) -> SceneRegistry:
    reg = SceneRegistry(tmp_path / "scenes")
    for scene in SCENES:
        save_scene(reg, scene, scene_model)
    return reg


def test_the_scene_cache_stays_within_its_model_and_byte_bounds(encoder, scene_model, tmp_path) -> None:
    reg = many_scenes(tmp_path, scene_model)
    by_count = SceneCache(reg, encoder, torch.device("cpu"), max_models=2, max_bytes=2**40)
    one = by_count.get(SCENES[0]).bytes
    by_bytes = SceneCache(reg, encoder, torch.device("cpu"), max_models=100, max_bytes=3 * one + one // 2)
    for _round in range(3):
        for scene in SCENES:
            assert by_count.get(scene).model_id.startswith(f"{scene}:")
            by_bytes.get(scene)
            assert len(by_count.loaded) <= 2
            assert sum(e.bytes for e in by_bytes.loaded.values()) <= by_bytes.max_bytes
    assert list(by_count.loaded) == SCENES[-2:] and len(by_bytes.loaded) == 3


def test_a_worker_fed_frames_of_many_scenes_keeps_the_bounds(encoder, scene_model, clip_frames,
                                                            tmp_path) -> None:
    reg = many_scenes(tmp_path, scene_model)
    bus = InProcessBus(partitions=1)
    producer = bus.producer()
    for seq in range(12):
        scene = SCENES[seq % len(SCENES)]
        producer.send(FRAMES_TOPIC, *good_frame(clip_frames[seq], f"cam-{scene}", seq, scene))
    metrics = DetectorMetrics(CollectorRegistry())
    worker = DetectorWorker(bus.consumer("det", [FRAMES_TOPIC]), producer, encoder, reg,
                            DetectorSettings(batch_size=4, max_wait_ms=0, cache_models=2, decode_threads=1),
                            metrics, threading.Event())
    # motion state for a scene whose head is evicted goes with it
    worker.scorer.motion["gone:cflow:000000000000"] = MotionTracker(MotionSettings())
    while records := worker.poll_batch():
        worker.process(records)
        assert len(worker.cache.loaded) <= 2 and metrics.models_loaded._value.get() <= 2
    assert "gone:cflow:000000000000" not in worker.scorer.motion
    assert bus.lag("det", [FRAMES_TOPIC]) == 0

"""No single record can stop the detector: poison frame records are counted by reason, logged
once with topic/partition/offset, skipped and committed, and the next valid frame is scored.
A model that is broken for every frame is not a poison record: it stops the worker."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from prometheus_client import CollectorRegistry

import detector.worker as worker_mod
from common.bus import InProcessBus
from common.messages import FRAMES_TOPIC, SCORES_TOPIC, ScoreMessage
from detector.motion import MotionSettings, MotionTracker
from detector.worker import DetectorMetrics, DetectorSettings, DetectorWorker, SceneWarnings
from scenes.registry import SceneRegistry
from tests.alerting.poison import (
    HUGE_INT,
    POISON_SETTINGS,
    T0,
    by_label,
    frame_headers,
    frame_records,
    good_frame,
    jpeg_bomb,
    total,
)
from tests.conftest import TINY_SCENE
from tests.detector.test_worker import wait_until

REJECTED = "vigil_detector_rejected_total"


class Rig:
    """A detector worker on an in-process bus, driven batch by batch; one per test."""

    def __init__(self, encoder, registry: SceneRegistry, **settings) -> None:
        self.bus = InProcessBus(partitions=1)
        self.producer = self.bus.producer()
        self.metrics = DetectorMetrics(CollectorRegistry())
        cfg = DetectorSettings(**{"batch_size": 8, "max_wait_ms": 0, "decode_threads": 1, **settings})
        self.worker = DetectorWorker(self.bus.consumer("det", [FRAMES_TOPIC]), self.producer, encoder,
                                     registry, cfg, self.metrics, threading.Event())
        self.reader = self.bus.consumer("check", [SCORES_TOPIC])

    def send(self, key, value, headers) -> None:
        self.producer.send(FRAMES_TOPIC, key, value, headers)

    def drain(self) -> None:
        while records := self.worker.poll_batch():
            self.worker.process(records)

    def scores(self) -> list[ScoreMessage]:
        out = []
        while batch := self.reader.poll(max_records=100, timeout_ms=0):
            out += [ScoreMessage.from_record(r.key, r.value, r.headers) for r in batch]
        return out

    def rejected(self) -> float:
        return total(self.metrics.registry, REJECTED)

    def lag(self) -> int:
        return self.bus.lag("det", [FRAMES_TOPIC])


@pytest.fixture(scope="module")
def image(clip_frames) -> np.ndarray:
    return clip_frames[0]


def test_random_and_broken_frame_records_never_stop_the_detector(encoder, registry, image) -> None:
    rig = Rig(encoder, registry)
    seqs = iter(range(1, 10**6))

    @POISON_SETTINGS
    @given(record=frame_records(scene=TINY_SCENE))
    def one(record) -> None:
        before = rig.rejected()
        stale_before = total(rig.metrics.registry, "vigil_detector_stale_live_frames_total")
        seq = next(seqs)
        rig.send(*record)
        rig.send(*good_frame(image, "good", seq, TINY_SCENE))
        rig.drain()
        scores = rig.scores()
        assert [s.seq for s in scores if s.camera == "good"] == [seq]  # the next valid frame: scored
        poison_scored = len(scores) - 1
        counted = rig.rejected() - before
        stale = total(rig.metrics.registry, "vigil_detector_stale_live_frames_total") - stale_before
        assert poison_scored + counted + stale == 1  # the poison record: scored or counted, once
        assert rig.lag() == 0  # and committed either way

    one()
    reasons = by_label(rig.metrics.registry, REJECTED, "reason")
    assert set(reasons) <= {"bad_message", "bad_scene", "unknown_scene"} | {r for r in reasons
                                                                            if r.startswith("error:")}


def test_each_kind_of_poison_is_counted_by_reason_and_logged_with_its_offset(encoder, registry, image,
                                                                             caplog) -> None:
    rig = Rig(encoder, registry)
    good_key, good_value, good_headers = good_frame(image, "cam", 0, TINY_SCENE)
    huge_seq = [(k, HUGE_INT if k == "seq" else v) for k, v in good_headers]
    rig.send(good_key, good_value, huge_seq)  # offset 0: a 5000-digit seq, refused by the contract
    rig.send(good_key, jpeg_bomb(), frame_headers("cam", TINY_SCENE, 1, T0 + 1))  # offset 1: JPEG bomb
    rig.send(*good_frame(image, "cam", 2, TINY_SCENE))  # offset 2
    with caplog.at_level(logging.WARNING, logger="detector.worker"):
        rig.drain()
    assert [s.seq for s in rig.scores()] == [2]
    assert rig.rejected() == 2 and rig.lag() == 0
    lines = [r.getMessage() for r in caplog.records]
    assert any(f"{FRAMES_TOPIC}[0]@0" in line for line in lines)
    assert any(f"{FRAMES_TOPIC}[0]@1" in line and "max_frame_pixels" in line for line in lines)
    assert len(lines) == 2  # once per record


def _poison_when_dark(monkeypatch) -> None:
    """The model step fails for any batch holding an all-black frame (a frame the model chokes on)."""
    to_input = worker_mod.to_input

    def picky(images, size):
        if any(float(np.asarray(i).mean()) < 1.0 for i in images):
            raise FloatingPointError("the model cannot take this frame")
        return to_input(images, size)

    monkeypatch.setattr(worker_mod, "to_input", picky)


@pytest.mark.parametrize("prefetch", [0, 1])
def test_a_frame_the_model_fails_on_is_skipped_and_the_rest_of_its_batch_scored(
        encoder, registry, image, monkeypatch, prefetch) -> None:
    _poison_when_dark(monkeypatch)
    rig = Rig(encoder, registry, prefetch_batches=prefetch, batch_size=4)
    black = np.zeros_like(image)
    for seq in range(4):
        rig.send(*good_frame(black if seq == 1 else image, "cam", seq, TINY_SCENE))
    rig.send(*good_frame(black, "cam", 4, TINY_SCENE))  # ... and a batch of only the bad frame
    rig.worker.start()
    try:
        wait_until(lambda: rig.lag() == 0, timeout=60)
    finally:
        rig.worker.stop.set()
        rig.worker.join(timeout=30)
    assert rig.worker.error is None
    assert sorted(s.seq for s in rig.scores()) == [0, 2, 3]
    assert by_label(rig.metrics.registry, REJECTED, "reason") == {"error:FloatingPointError": 2.0}
    assert rig.metrics.batch_failures._value.get() == 0  # the frames failed alone: theirs, not the batch's


def test_a_batch_that_fails_together_but_not_alone_is_logged_and_scored_one_by_one(
        encoder, registry, image, monkeypatch, caplog) -> None:
    to_input = worker_mod.to_input

    def out_of_memory_for_batches(images, size):
        if len(images) > 1:
            raise RuntimeError("CUDA out of memory (pretend)")
        return to_input(images, size)

    monkeypatch.setattr(worker_mod, "to_input", out_of_memory_for_batches)
    rig = Rig(encoder, registry)
    for seq in range(3):
        rig.send(*good_frame(image, "cam", seq, TINY_SCENE))
    with caplog.at_level(logging.ERROR, logger="detector.worker"):
        rig.drain()
    assert sorted(s.seq for s in rig.scores()) == [0, 1, 2] and rig.rejected() == 0
    assert rig.metrics.batch_failures._value.get() == 1
    assert any("each frame alone succeeded" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("frames", [1, 3])
def test_a_model_broken_for_every_frame_stops_the_worker_and_commits_nothing(encoder, registry, image,
                                                                             monkeypatch, frames) -> None:
    def broken(images, size):
        raise RuntimeError("CUDA error: an illegal memory access was encountered (pretend)")

    monkeypatch.setattr(worker_mod, "to_input", broken)
    rig = Rig(encoder, registry)
    for seq in range(frames):
        rig.send(*good_frame(image, "cam", seq, TINY_SCENE))
    rig.worker.start()
    wait_until(lambda: not rig.worker.alive, timeout=30)
    assert isinstance(rig.worker.error, RuntimeError) and "illegal memory access" in str(rig.worker.error)
    rig.worker.consumer.close()
    assert rig.lag() == frames and rig.rejected() == 0  # not blamed on the records: redelivered


def test_a_score_that_cannot_become_a_message_skips_only_its_frame(encoder, registry, image,
                                                                   monkeypatch) -> None:
    rig = Rig(encoder, registry)
    message = worker_mod.BatchScorer._message

    def nan_for_seq_1(self, msg, scene, scored):
        if msg.seq == 1:
            scored = (float("nan"), *scored[1:])
        return message(self, msg, scene, scored)

    monkeypatch.setattr(worker_mod.BatchScorer, "_message", nan_for_seq_1)
    to_record = ScoreMessage.to_record

    def unserialisable_seq_2(self):
        if self.seq == 2:
            raise OverflowError("pretend the map cannot be encoded")
        return to_record(self)

    monkeypatch.setattr(ScoreMessage, "to_record", unserialisable_seq_2)
    for seq in range(4):
        rig.send(*good_frame(image, "cam", seq, TINY_SCENE))
    rig.drain()
    assert sorted(s.seq for s in rig.scores()) == [0, 3]
    assert by_label(rig.metrics.registry, REJECTED, "reason") == {"error:MessageError": 1.0,
                                                                  "error:OverflowError": 1.0}
    assert rig.lag() == 0


def test_motion_features_that_fail_skip_only_their_frame(encoder, registry, image, monkeypatch) -> None:
    rig = Rig(encoder, registry)
    loaded = rig.worker.cache.get(TINY_SCENE)
    # a motion channel that is never used (every camera's first frame has no motion evidence)
    monkeypatch.setattr(loaded.model, "motion", SimpleNamespace(settings=MotionSettings()))
    pair = MotionTracker.pair

    def failing_for_bad(self, camera, seq, bgr, ts_ms=None):
        if camera == "bad":
            raise ZeroDivisionError("pretend the grey frame blew up")
        return pair(self, camera, seq, bgr, ts_ms)

    monkeypatch.setattr(MotionTracker, "pair", failing_for_bad)
    for camera in ("a", "bad", "b"):
        rig.send(*good_frame(image, camera, 0, TINY_SCENE))
    rig.drain()
    assert sorted(s.camera for s in rig.scores()) == ["a", "b"]
    assert by_label(rig.metrics.registry, REJECTED, "reason") == {"error:ZeroDivisionError": 1.0}


@pytest.mark.parametrize("overlap", [False, True])
def test_an_optical_flow_that_fails_on_a_flow_thread_skips_only_its_frame(encoder, registry, image,
                                                                         monkeypatch, overlap) -> None:
    rig = Rig(encoder, registry, flow_threads=2, flow_overlap=overlap)
    loaded = rig.worker.cache.get(TINY_SCENE)
    monkeypatch.setattr(loaded.model, "motion", SimpleNamespace(settings=MotionSettings()))

    class Blows:
        def features(self):
            raise FloatingPointError("pretend optical flow blew up")

    monkeypatch.setattr(MotionTracker, "pair",
                        lambda self, camera, seq, bgr, ts_ms=None: Blows() if camera == "bad" else None)
    for camera in ("a", "bad", "b"):
        rig.send(*good_frame(image, camera, 0, TINY_SCENE))
    rig.drain()
    rig.worker.scorer.close()
    assert sorted(s.camera for s in rig.scores()) == ["a", "b"]
    assert by_label(rig.metrics.registry, REJECTED, "reason") == {"error:FloatingPointError": 1.0}


def test_an_unexpected_failure_loading_a_scene_is_counted_and_logged_per_scene(encoder, registry, image,
                                                                               monkeypatch, caplog) -> None:
    rig = Rig(encoder, registry)

    def disk_error(scene):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(rig.worker.cache.registry, "load", disk_error)
    for seq in range(3):
        rig.send(*good_frame(image, "cam", seq, TINY_SCENE))
    with caplog.at_level(logging.WARNING, logger="detector.worker"):
        rig.drain()
    assert rig.scores() == [] and rig.lag() == 0
    assert by_label(rig.metrics.registry, REJECTED, "reason") == {"error:OSError": 3.0}
    assert len(caplog.records) == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_unknown_scene_and_bad_checkpoint_warnings_are_rate_limited_per_scene(encoder, registry, image,
                                                                              tmp_path, caplog) -> None:
    import shutil

    root = tmp_path / "scenes"
    shutil.copytree(registry.path(TINY_SCENE), root / TINY_SCENE)
    shutil.copytree(registry.path(TINY_SCENE), root / "broken")
    (root / "broken" / "meta.json").write_text('{"format_version": 1, "kind": ')
    rig = Rig(encoder, SceneRegistry(root))
    clock = Clock()
    rig.worker.scene_warnings = SceneWarnings(clock=clock)
    seq = 0

    def send(scene: str, n: int) -> None:
        nonlocal seq
        for _ in range(n):
            rig.send(*good_frame(image, "cam-" + scene, seq, scene))
            seq += 1

    def warnings() -> list[str]:
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        caplog.clear()
        return lines

    with caplog.at_level(logging.WARNING, logger="detector.worker"):
        send("nowhere", 5)
        send("broken", 3)
        send("elsewhere", 2)
        send(TINY_SCENE, 1)
        rig.drain()
        first = warnings()
        assert len(first) == 3  # the first frame of each of the three scenes
        assert any("scene nowhere" in w and "unknown_scene" in w for w in first)
        assert any("scene broken" in w and "bad_checkpoint" in w for w in first)
        clock.now += 30  # within the minute: quiet
        send("nowhere", 4)
        rig.drain()
        assert warnings() == []
        clock.now += 31  # past it: one line with the frames skipped since
        send("nowhere", 1)
        rig.drain()
        [line] = warnings()
        assert "scene nowhere" in line and "8 more frame(s) skipped" in line
    reasons = by_label(rig.metrics.registry, REJECTED, "reason")
    assert reasons == {"unknown_scene": 12.0, "bad_checkpoint": 3.0}  # every frame counted
    assert [s.camera for s in rig.scores()] == [f"cam-{TINY_SCENE}"]


def test_scene_warnings_remember_a_bounded_number_of_scenes() -> None:
    clock = Clock()
    w = SceneWarnings(interval_s=60, max_scenes=3, clock=clock)
    assert [w.due(f"s{i}", "unknown_scene") for i in range(5)] == [0] * 5
    assert len(w._last) == 3
    assert w.due("s4", "unknown_scene") is None and w.due("s0", "unknown_scene") == 0  # s0 was forgotten


def test_allow_missing_scenes_is_a_setting_off_by_default() -> None:
    assert DetectorSettings().allow_missing_scenes is False
    assert DetectorSettings(allow_missing_scenes=True).allow_missing_scenes is True
    assert "allow_missing_scenes" in DetectorSettings.model_json_schema()["properties"]
    assert DetectorSettings.model_fields["allow_missing_scenes"].description

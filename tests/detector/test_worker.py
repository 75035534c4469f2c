"""The detector worker on the in-process bus: batching, publishing, bad input, at-least-once."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from common.bus import InProcessBus, PublishError
from common.messages import FRAMES_TOPIC, SCORES_TOPIC, FrameMessage, ScoreMessage
from detector.checkpoint import load_scene, save_scene
from detector.encoders import Encoder
from detector.scorer import FrameScorer
from detector.worker import DetectorMetrics, DetectorSettings, DetectorWorker, SceneCache
from scenes.registry import SceneRegistry
from tests.conftest import TINY_SCENE


def frame_record(image: np.ndarray, camera: str, seq: int, scene: str = TINY_SCENE):
    return FrameMessage.from_image(image, camera=camera, scene=scene, seq=seq, ts=1_700_000_000_000 + seq,
                                   source="replay").to_record()


def make_worker(bus: InProcessBus, encoder: Encoder, registry: SceneRegistry, producer=None, **settings):
    metrics = DetectorMetrics(CollectorRegistry())
    settings = {"batch_size": 8, "max_wait_ms": 0, **settings}
    worker = DetectorWorker(bus.consumer("det", [FRAMES_TOPIC]), producer or bus.producer(), encoder,
                            registry, DetectorSettings(**settings), metrics, threading.Event())
    return worker, metrics


def drain(worker: DetectorWorker, polls: int = 20) -> None:
    for _ in range(polls):
        records = worker.poll_batch()
        if not records:
            return
        worker.process(records)


def scores_of(bus: InProcessBus, group: str = "check") -> list[ScoreMessage]:
    consumer = bus.consumer(group, [SCORES_TOPIC])
    out: list[ScoreMessage] = []
    while batch := consumer.poll(max_records=100, timeout_ms=50):
        out += [ScoreMessage.from_record(r.key, r.value, r.headers) for r in batch]
    return out


def bus_with_frames(clip_frames, frames: int, cameras: tuple[str, ...] = ("cam",),
                    partitions: int = 1) -> InProcessBus:
    """An in-process bus holding ``frames`` replay frames (seq 0, 1, ...) of each camera."""
    bus = InProcessBus(partitions=partitions)
    producer = bus.producer()
    for seq in range(frames):
        for camera in cameras:
            producer.send(FRAMES_TOPIC, *frame_record(clip_frames[seq], camera, seq))
    return bus


@pytest.mark.parametrize("decode_threads", [1, 3])
def test_every_frame_of_every_camera_gets_one_score(encoder, registry, clip_frames, decode_threads) -> None:
    bus = bus_with_frames(clip_frames, 6, ("cam-a", "cam-b"), partitions=2)
    worker, metrics = make_worker(bus, encoder, registry, decode_threads=decode_threads)
    drain(worker)
    scores = scores_of(bus)
    assert sorted((s.camera, s.seq) for s in scores) == [(c, q) for c in ("cam-a", "cam-b") for q in range(6)]
    assert all(s.model.startswith(f"{TINY_SCENE}:cflow:") for s in scores)
    assert bus.lag("det", [FRAMES_TOPIC]) == 0
    # Micro-batches mix cameras; the score of a frame is what the offline scorer gives it alone.
    model, _ = load_scene(registry, TINY_SCENE)
    offline = FrameScorer(encoder, model, TINY_SCENE)
    for s in scores:
        # The frame went through JPEG on the bus, so score the decoded JPEG offline too.
        image = FrameMessage.from_image(clip_frames[s.seq], camera="x", scene="x", seq=0, ts=0,
                                        source="replay").image()
        assert s.score == pytest.approx(offline.score_batch([image])[0].score, abs=1e-4)
    assert metrics.batch_size._sum.get() == 12
    assert metrics.consumer_lag._value.get() == 0


@pytest.mark.parametrize("decode_threads", [1, 2])
def test_bad_records_are_counted_and_skipped(encoder, registry, clip_frames, decode_threads) -> None:
    bus = InProcessBus(partitions=1)
    producer = bus.producer()
    good_key, good_value, good_headers = frame_record(clip_frames[0], "cam", 0)
    producer.send(FRAMES_TOPIC, b"cam", b"garbage", [])  # no headers at all
    producer.send(FRAMES_TOPIC, good_key, b"\xff\xd8\xffnot really a jpeg", good_headers)
    producer.send(FRAMES_TOPIC, *frame_record(clip_frames[1], "cam", 1, scene="nowhere"))
    wrong_schema = [(k, b"99" if k == "schema" else v) for k, v in good_headers]
    producer.send(FRAMES_TOPIC, good_key, good_value, wrong_schema)
    producer.send(FRAMES_TOPIC, *frame_record(clip_frames[2], "cam", 2))
    producer.send(FRAMES_TOPIC, *frame_record(clip_frames[3], "cam", 3))
    worker, metrics = make_worker(bus, encoder, registry, decode_threads=decode_threads)
    drain(worker)
    assert [(s.camera, s.seq) for s in scores_of(bus)] == [("cam", 2), ("cam", 3)]
    assert metrics.rejected.labels("bad_message")._value.get() == 3
    assert metrics.rejected.labels("unknown_scene")._value.get() == 1
    assert bus.lag("det", [FRAMES_TOPIC]) == 0  # bad records are committed, not retried forever


class FailingProducer:
    """A producer whose flush fails: the batch's scores were not stored."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def send(self, *args, **kw) -> None:
        self.inner.send(*args, **kw)

    def flush(self, timeout=None) -> None:
        raise PublishError("broker unavailable")

    def close(self) -> None:
        self.inner.close()


def test_offsets_are_committed_only_after_scores_are_published(encoder, registry, clip_frames) -> None:
    bus = InProcessBus(partitions=1)
    producer = bus.producer()
    for seq in range(3):
        producer.send(FRAMES_TOPIC, *frame_record(clip_frames[seq], "cam", seq))
    worker, _ = make_worker(bus, encoder, registry, producer=FailingProducer(bus.producer()))
    with pytest.raises(PublishError):
        worker.process(worker.poll_batch())
    worker.consumer.close()
    assert bus.lag("det", [FRAMES_TOPIC]) == 3  # nothing committed
    retry, _ = make_worker(bus, encoder, registry)
    drain(retry)
    assert bus.lag("det", [FRAMES_TOPIC]) == 0
    # At-least-once: the failed batch's scores may have been written too; (camera, seq) dedupes.
    assert {s.seq for s in scores_of(bus)} == {0, 1, 2}


def test_scene_cache_is_bounded(encoder, registry, tmp_path, scene_model) -> None:
    many = SceneRegistry(tmp_path)
    for scene in ("s1", "s2", "s3"):
        save_scene(many, scene, scene_model)
    import torch

    cache = SceneCache(many, encoder, torch.device("cpu"), max_models=2, max_bytes=2**40)
    for scene in ("s1", "s2", "s3", "s1"):
        assert cache.get(scene).model_id.startswith(f"{scene}:")
    assert list(cache.loaded) == ["s3", "s1"]


def test_stale_live_frames_are_skipped_replays_never(encoder, registry, clip_frames) -> None:
    import time

    bus = InProcessBus(partitions=1)
    producer = bus.producer()
    now = int(time.time() * 1000)
    for seq, (source, ts) in enumerate([("live", now - 60_000), ("live", now), ("replay", now - 60_000)]):
        msg = FrameMessage.from_image(clip_frames[seq], camera=source, scene=TINY_SCENE, seq=seq, ts=ts,
                                      source=source)
        producer.send(FRAMES_TOPIC, *msg.to_record())
    worker, metrics = make_worker(bus, encoder, registry, live_max_age_ms=10_000)
    drain(worker)
    assert sorted((s.camera, s.seq) for s in scores_of(bus)) == [("live", 1), ("replay", 2)]
    assert metrics.stale.labels("live")._value.get() == 1


# ----------------------------------------------------------------------------- the pipelined run


def wait_until(predicate, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def run_until_scored(worker: DetectorWorker, bus: InProcessBus) -> None:
    """Run the worker on its thread until every frame record is committed, then stop it."""
    worker.start()
    try:
        wait_until(lambda: bus.lag("det", [FRAMES_TOPIC]) == 0)
    finally:
        worker.stop.set()
        worker.join(timeout=30)


def test_pipelined_run_scores_every_frame_once_and_commits(encoder, registry, clip_frames) -> None:
    bus = bus_with_frames(clip_frames, 10, ("cam-a", "cam-b"), partitions=2)
    worker, metrics = make_worker(bus, encoder, registry, batch_size=3, prefetch_batches=2)
    run_until_scored(worker, bus)
    assert not worker.alive and worker.error is None
    scores = scores_of(bus)
    assert sorted((s.camera, s.seq) for s in scores) == [(c, q) for c in ("cam-a", "cam-b")
                                                         for q in range(10)]
    assert metrics.batch_size._sum.get() == 20


class FlakyProducer:
    """Fails the first ``failures`` flushes (the scores sent before them are lost)."""

    def __init__(self, bus: InProcessBus, failures: int) -> None:
        self.bus, self.failures, self.flushes = bus, failures, 0
        self.inner = bus.producer()
        self.lag_at_failures: list[int] = []

    def send(self, *args, **kw) -> None:
        if self.failures:
            return  # the broker is "down": nothing is stored
        self.inner.send(*args, **kw)

    def flush(self, timeout=None) -> None:
        self.flushes += 1
        if self.failures:
            self.failures -= 1
            self.lag_at_failures.append(self.bus.lag("det", [FRAMES_TOPIC]))
            raise PublishError("broker unavailable")

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("prefetch", [0, 1])
def test_run_retries_a_failed_publish_and_commits_only_after(encoder, registry, clip_frames, monkeypatch,
                                                             prefetch: int) -> None:
    import detector.worker as worker_mod

    monkeypatch.setattr(worker_mod, "_BACKOFF", worker_mod.Backoff(0.05, 10.0))
    bus = bus_with_frames(clip_frames, 4)
    producer = FlakyProducer(bus, failures=2)
    worker, metrics = make_worker(bus, encoder, registry, producer=producer, prefetch_batches=prefetch)
    run_until_scored(worker, bus)
    assert producer.lag_at_failures == [4, 4]  # nothing committed while the scores were not stored
    assert metrics.publish_errors._value.get() == 2
    assert sorted(s.seq for s in scores_of(bus)) == [0, 1, 2, 3]  # the same scores, sent again


@pytest.mark.parametrize("prefetch", [0, 1])
def test_a_failing_model_step_stops_the_worker_and_commits_nothing(encoder, registry, clip_frames,
                                                                   prefetch: int) -> None:
    bus = bus_with_frames(clip_frames, 1)
    worker, _ = make_worker(bus, encoder, registry, prefetch_batches=prefetch)

    def out_of_memory(frames):
        raise RuntimeError("out of memory")

    worker.scorer.score = out_of_memory
    worker.start()
    wait_until(lambda: not worker.alive, timeout=30)
    assert isinstance(worker.error, RuntimeError)
    worker.consumer.close()
    assert bus.lag("det", [FRAMES_TOPIC]) == 1  # redelivered to the next worker


def test_decode_threads_default_to_the_cpus(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert DetectorSettings().decoders == 2
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert DetectorSettings().decoders == 4
    assert DetectorSettings(decode_threads=1).decoders == 1


def test_prefetch_defaults_to_cuda_only() -> None:
    assert DetectorSettings().prefetch == 0 and DetectorSettings(device="cuda:0").prefetch == 1
    assert DetectorSettings(prefetch_batches=2).prefetch == 2


def test_serial_mode_without_prefetch(encoder, registry, clip_frames) -> None:
    bus = bus_with_frames(clip_frames, 3)
    worker, _ = make_worker(bus, encoder, registry, prefetch_batches=0)
    worker._run_pipelined = lambda: pytest.fail("prefetch_batches 0 must not start a fetch thread")
    run_until_scored(worker, bus)
    assert sorted(s.seq for s in scores_of(bus)) == [0, 1, 2]


@pytest.mark.parametrize("prefetch", [0, 1])
def test_run_scores_on_the_calling_thread_until_stopped(encoder, registry, clip_frames,
                                                        prefetch: int) -> None:
    bus = bus_with_frames(clip_frames, 4)
    worker, _ = make_worker(bus, encoder, registry, prefetch_batches=prefetch)
    scored_on: set[str] = set()
    score = worker.scorer.score

    def recording_score(frames):
        scored_on.add(threading.current_thread().name)
        return score(frames)

    worker.scorer.score = recording_score

    def stop_when_done() -> None:
        wait_until(lambda: bus.lag("det", [FRAMES_TOPIC]) == 0)
        assert worker.alive
        worker.stop.set()

    watcher = threading.Thread(target=stop_when_done)
    watcher.start()
    worker.run()  # returns once stopped
    watcher.join()
    assert scored_on == {threading.current_thread().name} and not worker.alive
    assert sorted(s.seq for s in scores_of(bus)) == [0, 1, 2, 3]

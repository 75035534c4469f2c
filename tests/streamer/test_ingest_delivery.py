"""A replay never loses a frame the producer gave up on: records a flush reports as failed
are sent again, in order, with back-off, until confirmed; what is still unconfirmed when the
worker stops is counted, and the worker ends with an error naming the count. A producer with
Kafka's failure reporting (``send`` queues, the next ``flush`` raises ``PublishError``) over
the in-process bus stands in for a broker that refuses records."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

import streamer.ingest as ingest_mod
from common.bus import InProcessBus, Producer, PublishError
from common.messages import FRAMES_TOPIC, FrameMessage
from common.retry import Backoff
from streamer.camera import CameraConfig
from streamer.ingest import FLUSH_EVERY_FRAMES, FramesLostError, IngestMetrics, IngestWorker
from streamer.sources import CapturedFrame, Source
from tests.streamer.test_ingest import sample_value


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short back-off; windows cut by frame count only (no timing on a loaded machine)."""
    monkeypatch.setattr(ingest_mod, "_BACKOFF", Backoff(0.001, 0.004))
    monkeypatch.setattr(ingest_mod, "FLUSH_EVERY_S", 60.0)


class FailingProducer:
    """An in-process producer that reports failures as Kafka's does: a record ``fail(camera,
    seq, attempt)`` picks is not stored, and the next ``flush`` -- whichever thread calls it --
    raises :class:`PublishError` with the count."""

    def __init__(self, inner: Producer, fail: Callable[[str, int, int], bool]) -> None:
        self.inner, self.fail = inner, fail
        self.attempts: Counter[tuple[str, int]] = Counter()
        self.flushes = 0
        self._failed = 0
        self._lock = threading.Lock()

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: Sequence[tuple[str, bytes]] = ()) -> None:
        h = dict(headers)
        camera, seq = h["camera"].decode(), int(h["seq"])
        with self._lock:
            self.attempts[camera, seq] += 1
            if self.fail(camera, seq, self.attempts[camera, seq]):
                self._failed += 1
                return
        self.inner.send(topic, key, value, headers)

    def flush(self, timeout: float | None = None) -> None:
        with self._lock:
            failed, self._failed = self._failed, 0
            self.flushes += 1
        if failed:
            raise PublishError(f"{failed} record(s) could not be published; first: topic "
                               f"{FRAMES_TOPIC!r}: UnknownError(None)")

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> FailingProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ListSource(Source):
    """A replay of ``n`` small frames (seq 0, 1, ...); before frame ``pause_at`` it waits for ``gate``."""

    live = False

    def __init__(self, camera: CameraConfig, stop: threading.Event, n: int, pause_at: int | None = None,
                 gate: threading.Event | None = None) -> None:
        super().__init__(camera, stop)
        self.n, self.pause_at, self.gate = n, pause_at, gate
        self.paused = threading.Event()

    def __iter__(self) -> Iterator[CapturedFrame]:
        for seq in range(self.n):
            if seq == self.pause_at and self.gate is not None:
                self.paused.set()
                self.gate.wait(10)
            if self.stop.is_set():
                return
            yield CapturedFrame(seq=seq, ts_ms=1000 + 40 * seq,
                                decoded=np.full((24, 32, 3), seq % 256, dtype=np.uint8))


def camera(cid: str) -> CameraConfig:
    return CameraConfig(id=cid, url=f"/replays/{cid}", scene="01")


def stored(bus: InProcessBus) -> list[tuple[str, int]]:
    """Every frame record on the topic, in partition order: ``(camera, seq)``."""
    out = []
    with bus.consumer("check", [FRAMES_TOPIC]) as consumer:
        while records := consumer.poll(max_records=500, timeout_ms=50):
            for r in records:
                m = FrameMessage.from_record(r.key, r.value, r.headers)
                out.append((m.camera, m.seq))
    return out


def test_records_a_flush_reports_failed_are_sent_again_in_order(caplog: pytest.LogCaptureFixture) -> None:
    n = 3 * FLUSH_EVERY_FRAMES + 5
    burst = set(range(FLUSH_EVERY_FRAMES + 3, FLUSH_EVERY_FRAMES + 9))  # the broker refused a run of them
    with InProcessBus(partitions=1) as bus:
        producer = FailingProducer(bus.producer(), lambda _c, seq, attempt: (
            seq in burst and attempt <= 2) or (seq == n - 1 and attempt == 1))  # ... and the last one
        metrics = IngestMetrics(CollectorRegistry())
        stop = threading.Event()
        cam = camera("cam1")
        worker = IngestWorker(cam, producer, metrics, stop, source=ListSource(cam, stop, n))
        with caplog.at_level(logging.INFO, logger="streamer.ingest"):
            worker.run()
        got = stored(bus)
    seqs = [s for _c, s in got]
    assert set(seqs) == set(range(n))  # nothing lost, the final flush's failure included
    # the window is sent again whole, in order: the newest copy of every frame comes in order
    newest = sorted(range(n), key=lambda s: max(i for i, x in enumerate(seqs) if x == s))
    assert newest == list(range(n))
    assert worker.error is None and worker.stats.lost == 0
    assert worker.stats.publish_errors == 3  # the burst twice, the last frame once
    assert sample_value(metrics.registry, "vigil_ingest_publish_errors_total") == 3
    assert sample_value(metrics.registry, "vigil_ingest_frames_lost_total") == 0
    assert producer.flushes >= n // FLUSH_EVERY_FRAMES  # flushed as it went, not only at the end
    assert "not confirmed by the bus: 6 record(s) could not be published" in caplog.text
    assert "sending them again" in caplog.text


def test_a_failure_reported_to_another_cameras_flush_is_sent_again() -> None:
    """One producer serves every camera of a process: camera b's failed records are reported
    to camera a's flush; b learns it and sends its window again."""
    with InProcessBus(partitions=2) as bus:
        producer = FailingProducer(bus.producer(), lambda cam, seq, attempt: cam == "b" and seq < 3
                                   and attempt == 1)
        metrics = IngestMetrics(CollectorRegistry())
        stop, gate = threading.Event(), threading.Event()
        source_b = ListSource(camera("b"), stop, 6, pause_at=3, gate=gate)
        b = IngestWorker(camera("b"), producer, metrics, stop, source=source_b).start()
        assert source_b.paused.wait(5)  # b has sent 3 frames, not flushed yet
        a = IngestWorker(camera("a"), producer, metrics, stop, source=ListSource(camera("a"), stop, 4))
        a.run()  # its flush reports b's 3 failed records: a sends its own window again (duplicates)
        gate.set()
        assert b.join(5)
        got = stored(bus)
    assert {s for c, s in got if c == "b"} == set(range(6))
    assert {s for c, s in got if c == "a"} == set(range(4))
    assert a.error is None and b.error is None and a.stats.lost == b.stats.lost == 0
    # a's flush failed; b's own flush succeeded, but b's window had been in flight meanwhile
    assert a.stats.publish_errors == 1 and b.stats.publish_errors == 1
    assert producer.attempts["b", 0] == 2 and producer.attempts["b", 5] == 2


def test_frames_still_unconfirmed_at_stop_are_counted_and_fail_the_worker(
        caplog: pytest.LogCaptureFixture) -> None:
    n = 5
    with InProcessBus() as bus:
        producer = FailingProducer(bus.producer(), lambda _c, seq, _attempt: seq >= 2)  # the bus went away
        metrics = IngestMetrics(CollectorRegistry())
        stop = threading.Event()
        cam = camera("kil1")
        worker = IngestWorker(cam, producer, metrics, stop, source=ListSource(cam, stop, n))
        thread = threading.Thread(target=worker.run)
        with caplog.at_level(logging.INFO, logger="streamer.ingest"):
            thread.start()
            # retrying (never dropping) until stopped
            deadline = time.monotonic() + 10
            while producer.attempts["kil1", 4] < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            stop.set()
            thread.join(5)
    assert not thread.is_alive()
    assert worker.stats.lost == n  # the window since the last good flush: all 5 frames (0-1 were stored)
    assert isinstance(worker.error, FramesLostError)
    assert "camera kil1: 5 frame(s) could not be published to vigil.frames" in str(worker.error)
    assert sample_value(metrics.registry, "vigil_ingest_frames_lost_total", "kil1") == n
    assert sample_value(metrics.registry, "vigil_ingest_publish_errors_total", "kil1") >= 3
    assert metrics.health()[1]["cameras"]["kil1"]["state"] == "failed"
    assert "5 lost (never confirmed by the bus)" in caplog.text


class FastLive(Source):
    live = True

    def __init__(self, camera: CameraConfig, stop: threading.Event, n: int) -> None:
        super().__init__(camera, stop)
        self.n = n

    def __iter__(self) -> Iterator[CapturedFrame]:
        for seq in range(self.n):
            yield CapturedFrame(seq=seq, ts_ms=1000 + seq, decoded=np.zeros((24, 32, 3), np.uint8))


def test_a_live_camera_counts_a_failed_flush_and_sends_nothing_again() -> None:
    with InProcessBus() as bus:
        producer = FailingProducer(bus.producer(), lambda _c, seq, _attempt: seq == 1)
        metrics = IngestMetrics(CollectorRegistry())
        stop = threading.Event()
        cam = camera("live1")
        worker = IngestWorker(cam, producer, metrics, stop, source=FastLive(cam, stop, 3))
        worker.run()
    assert producer.attempts["live1", 1] <= 1  # never sent twice
    assert worker.error is None and worker.stats.lost == 0
    if producer.attempts["live1", 1]:  # the slot may have replaced it before it was published
        assert worker.stats.publish_errors == 1


def test_a_slow_replay_is_flushed_each_flush_every_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """A replay paced slower than FLUSH_EVERY_FRAMES per FLUSH_EVERY_S has its frames confirmed
    as it goes (here: every frame), not only at the end."""
    monkeypatch.setattr(ingest_mod, "FLUSH_EVERY_S", 0.0)
    with InProcessBus() as bus:
        producer = FailingProducer(bus.producer(), lambda _c, _seq, _attempt: False)
        stop = threading.Event()
        cam = camera("slow")
        worker = IngestWorker(cam, producer, IngestMetrics(CollectorRegistry()), stop,
                              source=ListSource(cam, stop, 6))
        worker.run()
        assert len(stored(bus)) == 6
    assert producer.flushes == 6 and worker.error is None

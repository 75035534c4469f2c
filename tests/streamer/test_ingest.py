"""The ingest worker on the in-process bus: replays, back-pressure, live drops, oversize frames, metrics."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from common.bus import InProcessBus, Producer
from common.messages import FRAMES_TOPIC, FrameMessage, encode_jpeg
from streamer.camera import CameraConfig
from streamer.ingest import WARMUP_HEADER, IngestMetrics, IngestWorker, LatestSlot
from streamer.sources import CapturedFrame, Source, SourceError
from tests.rtsp import RtspStream

CLIP = Path(__file__).resolve().parents[2] / "vigil" / "data" / "campus_clip.mp4"  # 120 frames, 10 fps


def clip_camera(**kw: object) -> CameraConfig:
    return CameraConfig(id="cam1", url=str(CLIP), scene="01", replay_start_ms=1_000_000, **kw)


def consume_all(bus: InProcessBus, group: str = "test-reader") -> list[FrameMessage]:
    out: list[FrameMessage] = []
    with bus.consumer(group, [FRAMES_TOPIC]) as consumer:
        while records := consumer.poll(max_records=500, timeout_ms=50):
            out.extend(FrameMessage.from_record(r.key, r.value, r.headers) for r in records)
    return out


def sample_value(registry: CollectorRegistry, name: str, camera: str = "cam1") -> float:
    value = registry.get_sample_value(name, {"camera": camera})
    assert value is not None, f"no sample {name}{{camera={camera!r}}}"
    return value


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


class SlowProducer:
    """A real in-process producer that takes ``delay`` seconds per send (a slow bus)."""

    def __init__(self, inner: Producer, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: Sequence[tuple[str, bytes]] = ()) -> None:
        time.sleep(self.delay)
        self.inner.send(topic, key, value, headers)

    def flush(self, timeout: float | None = None) -> None:
        self.inner.flush(timeout)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> SlowProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FastLiveSource(Source):
    """A live source that delivers ``n`` distinct frames every ``interval`` seconds, then ends."""

    live = True

    def __init__(self, camera: CameraConfig, stop: threading.Event, n: int, interval: float) -> None:
        super().__init__(camera, stop)
        self.n, self.interval = n, interval

    def __iter__(self) -> Iterator[CapturedFrame]:
        for seq in range(self.n):
            if self.stop.is_set():
                return
            image = np.full((24, 32, 3), seq % 256, dtype=np.uint8)
            yield CapturedFrame(seq=seq, ts_ms=1000 + seq, decoded=image, warmup=seq < 2)
            time.sleep(self.interval)


# ----------------------------------------------------------------------------- replay


def test_replay_publishes_one_message_per_sampled_frame_in_order() -> None:
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    with InProcessBus(partitions=4) as bus:
        worker = IngestWorker(clip_camera(fps=5), bus.producer(), metrics, threading.Event())
        worker.run()
        messages = consume_all(bus)
    assert [m.seq for m in messages] == list(range(0, 120, 2))
    assert [m.ts for m in messages] == [1_000_000 + 100 * s for s in range(0, 120, 2)]
    first = messages[0]
    assert (first.camera, first.scene, first.source, first.width, first.height, first.schema) == (
        "cam1", "01", "replay", 256, 192, 1)
    assert first.image().shape == (192, 256, 3)
    assert worker.stats.published == worker.stats.read == 60 and worker.stats.dropped == 0
    assert sample_value(registry, "vigil_ingest_frames_published_total") == 60
    assert sample_value(registry, "vigil_ingest_frames_dropped_total") == 0
    ok, detail = metrics.health()
    assert ok and detail["cameras"]["cam1"]["state"] == "finished"


def test_replay_waits_for_capacity_and_drops_nothing() -> None:
    limit = 5
    stop = threading.Event()
    with InProcessBus(partitions=2) as bus:
        detector = bus.consumer("detector", [FRAMES_TOPIC])
        calls = 0

        def wait_for_capacity() -> None:  # what the embedded runner passes: wait while the lag is high
            nonlocal calls
            calls += 1
            while bus.lag("detector", [FRAMES_TOPIC]) >= limit and not stop.is_set():
                time.sleep(0.01)

        metrics = IngestMetrics(CollectorRegistry())
        worker = IngestWorker(clip_camera(fps=5), bus.producer(), metrics, stop,
                              wait_for_capacity=wait_for_capacity).start()
        try:
            wait_for(lambda: bus.lag("detector", [FRAMES_TOPIC]) == limit, 10, "the lag to reach the limit")
            time.sleep(0.3)
            assert bus.lag("detector", [FRAMES_TOPIC]) == limit  # held back, not running ahead
            assert worker.alive and worker.stats.published == limit
            ok, detail = metrics.health()
            assert ok and detail["cameras"]["cam1"]["state"] == "throttled"
            seen: list[int] = []
            while len(seen) < 60:  # a slow detector: read, then commit
                records = detector.poll(max_records=3, timeout_ms=2000)
                assert records, f"replay stalled after {len(seen)} frames"
                seen.extend(FrameMessage.from_record(r.key, r.value, r.headers).seq for r in records)
                detector.commit(records)
            assert worker.join(5)
        finally:
            stop.set()
            worker.join(5)
            detector.close()
    assert sorted(seen) == list(range(0, 120, 2))
    assert worker.stats.published == 60 and worker.stats.dropped == 0 and calls == 60


def test_stop_ends_a_throttled_replay() -> None:
    stop = threading.Event()
    gate = threading.Event()
    with InProcessBus() as bus:
        worker = IngestWorker(clip_camera(), bus.producer(), IngestMetrics(), stop,
                              wait_for_capacity=lambda: gate.wait(5)).start()
        time.sleep(0.2)
        stop.set()
        gate.set()
        assert worker.join(3)
    assert worker.stats.published == 0 and worker.error is None


def test_missing_replay_fails_with_the_camera_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cam = CameraConfig(id="lobby", url=str(tmp_path / "gone.mp4"), scene="01")
    metrics = IngestMetrics()
    with InProcessBus() as bus, caplog.at_level(logging.ERROR):
        worker = IngestWorker(cam, bus.producer(), metrics, threading.Event())
        with pytest.raises(SourceError):
            worker.run()
    assert "lobby" in caplog.text and "gone.mp4" in caplog.text
    assert metrics.health()[1]["cameras"]["lobby"]["state"] == "failed"


# ----------------------------------------------------------------------------- live


def test_live_slow_publisher_drops_old_frames_and_publishes_the_newest() -> None:
    registry = CollectorRegistry()
    stop = threading.Event()
    cam = CameraConfig(id="cam1", url="rtsp://127.0.0.1:1/none", scene="01")
    source = FastLiveSource(cam, stop, n=60, interval=0.005)
    with InProcessBus() as bus:
        worker = IngestWorker(cam, SlowProducer(bus.producer(), 0.05), IngestMetrics(registry), stop,
                              source=source)
        started = time.monotonic()
        worker.run()
        elapsed = time.monotonic() - started
        messages = consume_all(bus)
    s = worker.stats
    assert s.read == 60 and s.warmup == 2  # the first two are warm-up frames: not published
    assert s.dropped > 10 and s.published + s.dropped == 58
    seqs = [m.seq for m in messages]
    assert seqs == sorted(seqs) and len(seqs) == s.published
    assert seqs[-1] == 59  # the newest frame got out
    assert {m.source for m in messages} == {"live"}
    assert elapsed < 60 * 0.05  # the publisher did not work through every frame
    assert sample_value(registry, "vigil_ingest_frames_dropped_total") == s.dropped
    assert sample_value(registry, "vigil_ingest_frames_warmup_total") == 2


def test_live_warmup_frames_published_with_header_when_asked() -> None:
    stop = threading.Event()
    cam = CameraConfig(id="cam1", url="rtsp://127.0.0.1:1/none", scene="01")
    with InProcessBus() as bus:
        IngestWorker(cam, bus.producer(), IngestMetrics(), stop, source=FastLiveSource(cam, stop, 4, 0.05),
                     publish_warmup=True).run()
        with bus.consumer("g", [FRAMES_TOPIC]) as consumer:
            records = consumer.poll(timeout_ms=100)
    assert [dict(r.headers).get(WARMUP_HEADER) for r in records] == [b"1", b"1", None, None]
    assert [FrameMessage.from_record(r.key, r.value, r.headers).seq for r in records] == [0, 1, 2, 3]


def test_live_rtsp_ingest_with_slow_bus(rtsp_stream: RtspStream) -> None:
    registry = CollectorRegistry()
    stop = threading.Event()
    cam = CameraConfig(id="gate", url=rtsp_stream.url, scene="07", transport="udp", read_timeout_s=1,
                       watchdog_s=2, warmup_frames=2)
    with InProcessBus() as bus:
        metrics = IngestMetrics(registry)
        worker = IngestWorker(cam, SlowProducer(bus.producer(), 0.3), metrics, stop).start()
        try:
            wait_for(lambda: worker.stats.published >= 4 and worker.stats.dropped >= 3, 20,
                     "published and dropped live frames")
            ok, detail = metrics.health()
            assert ok and detail["cameras"]["gate"]["state"] == "streaming"
        finally:
            stop.set()
            assert worker.join(5)
        messages = consume_all(bus)
    assert worker.error is None
    assert len(messages) == worker.stats.published >= 4
    assert [m.seq for m in messages] == sorted({m.seq for m in messages})
    assert all(m.source == "live" and m.camera == "gate" and m.scene == "07" for m in messages)
    assert messages[-1].image().shape == (192, 256, 3)
    assert sample_value(registry, "vigil_ingest_frames_dropped_total", "gate") == worker.stats.dropped >= 3
    assert metrics.health()[1]["cameras"]["gate"]["state"] == "stopped"


def test_latest_slot() -> None:
    slot = LatestSlot()
    assert slot.take(timeout=0.01) is None
    assert slot.put(1) is False and slot.put(2) is True  # 1 was dropped
    assert slot.take(0) == 2 and slot.take(0.01) is None
    slot.put(3)
    slot.close()
    assert not slot.closed and slot.take(0) == 3 and slot.closed


# ----------------------------------------------------------------------------- oversize frames


def _frame_folder(tmp_path: Path, n: int) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(7)
    image = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (3, 3), 0)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(n):
        assert cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    return folder, image


def _record_bytes(image: np.ndarray, quality: int) -> int:
    msg = FrameMessage.from_image(image, camera="cam1", scene="01", seq=0, ts=0, source="replay",
                                  quality=quality)
    key, value, headers = msg.to_record()
    return len(key) + len(value) + sum(len(k) + len(v) for k, v in headers)


def test_oversize_frame_is_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder, image = _frame_folder(tmp_path, 3)
    registry = CollectorRegistry()
    cam = CameraConfig(id="cam1", url=str(folder), scene="01", replay_start_ms=0)
    with InProcessBus(max_bytes_per_message=1000) as bus, caplog.at_level(logging.WARNING):
        worker = IngestWorker(cam, bus.producer(), IngestMetrics(registry), threading.Event())
        worker.run()
        assert consume_all(bus) == []
    assert worker.stats.too_large == 3 and worker.stats.published == 0
    assert sample_value(registry, "vigil_ingest_frames_too_large_total") == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors, "an oversize frame must be logged"
    text = errors[0].getMessage()
    size = _record_bytes(image, 90)
    assert "cam1" in text and "seq 0" in text and f"{size} bytes" in text and "1000-byte limit" in text


def test_oversize_frame_is_reencoded_once_at_lower_quality(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    folder, image = _frame_folder(tmp_path, 3)
    high, low = _record_bytes(image, 90), _record_bytes(image, 45)
    assert low < high
    registry = CollectorRegistry()
    cam = CameraConfig(id="cam1", url=str(folder), scene="01", replay_start_ms=0)
    with InProcessBus(max_bytes_per_message=(high + low) // 2) as bus, caplog.at_level(logging.WARNING):
        worker = IngestWorker(cam, bus.producer(), IngestMetrics(registry), threading.Event())
        worker.run()
        messages = consume_all(bus)
    assert [m.seq for m in messages] == [0, 1, 2] and worker.stats.reencoded == 3
    assert worker.stats.too_large == 0 and sample_value(registry, "vigil_ingest_frames_too_large_total") == 0
    assert len(messages[0].jpeg) == len(encode_jpeg(image, 45))
    assert "quality 45" in caplog.text and "cam1" in caplog.text


# ----------------------------------------------------------------------------- metrics and health


def test_metrics_exposition_and_health_over_http() -> None:
    from vigil.ops import OpsServer

    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    with InProcessBus() as bus:
        IngestWorker(clip_camera(fps=2), bus.producer(), metrics, threading.Event()).run()
    text = generate_latest(registry).decode()
    for line in ('vigil_ingest_frames_read_total{camera="cam1"} 24.0',
                 'vigil_ingest_frames_published_total{camera="cam1"} 24.0',
                 'vigil_ingest_frames_dropped_total{camera="cam1"} 0.0',
                 'vigil_ingest_frames_too_large_total{camera="cam1"} 0.0',
                 'vigil_ingest_reconnects_total{camera="cam1"} 0.0'):
        assert line in text
    assert 'vigil_ingest_last_frame_timestamp_seconds{camera="cam1"}' in text
    assert abs(sample_value(registry, "vigil_ingest_last_frame_timestamp_seconds") - time.time()) < 60

    server = OpsServer(registry, metrics.health).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            assert 'vigil_ingest_frames_published_total{camera="cam1"} 24.0' in resp.read().decode()
        with urllib.request.urlopen(base + "/healthz", timeout=5) as resp:
            assert json.loads(resp.read())["cameras"]["cam1"]["state"] == "finished"
        metrics.add_camera("cam2", watchdog_s=0.0)  # running, no frame within its watchdog: stalled
        time.sleep(0.01)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/healthz", timeout=5)
        assert err.value.code == 503
        assert json.loads(err.value.read())["cameras"]["cam2"]["state"] == "stalled"
    finally:
        server.close()


def test_health_follows_the_watchdog() -> None:
    now = [100.0]
    metrics = IngestMetrics(CollectorRegistry(), clock=lambda: now[0])
    metrics.add_camera("cam1", watchdog_s=10)
    assert metrics.health()[1]["cameras"]["cam1"]["state"] == "starting"
    now[0] += 11
    assert metrics.health() == (False, {"cameras": {"cam1": {"ok": False, "state": "stalled",
                                                             "seconds_since_frame": 11.0, "watchdog_s": 10}}})
    metrics.frame_read("cam1")
    now[0] += 5
    assert metrics.health()[0] and metrics.health()[1]["cameras"]["cam1"]["state"] == "streaming"
    metrics.set_throttled("cam1", True)
    now[0] += 60
    assert metrics.health()[0]  # held up by back-pressure is not a stall
    metrics.set_throttled("cam1", False)
    assert metrics.health()[0]
    now[0] += 11
    assert not metrics.health()[0]
    metrics.finished("cam1", "stopped")
    assert metrics.health()[0]


def test_frame_folder_jpegs_are_published_byte_for_byte(tmp_path: Path) -> None:
    """An STC replay carries the frame files' own bytes: no lossy re-encode on the way."""
    rng = np.random.default_rng(0)
    files = []
    for i in range(3):
        data = encode_jpeg(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), quality=75)
        (tmp_path / f"{i:03d}.jpg").write_bytes(data)
        files.append(data)
    camera = CameraConfig(id="stc", url=str(tmp_path), scene="s", replay_start_ms=0)
    with InProcessBus() as bus:
        worker = IngestWorker(camera, bus.producer(), IngestMetrics(CollectorRegistry()), threading.Event())
        worker.run()
        published = consume_all(bus)
    assert [m.jpeg for m in published] == files
    assert [(m.width, m.height) for m in published] == [(64, 48)] * 3


def test_corrupt_frames_are_counted_per_camera(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two truncated JPEGs of 24: skipped, counted in the camera's labelled counter and in
    the closing summary line."""
    rng = np.random.default_rng(1)
    for i in range(24):
        data = encode_jpeg(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), quality=75)
        (tmp_path / f"{i:03d}.jpg").write_bytes(data[: len(data) // 3] if i in (4, 11) else data)
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    camera = CameraConfig(id="stc", url=str(tmp_path), scene="s", replay_start_ms=0)
    with InProcessBus() as bus, caplog.at_level(logging.INFO, logger="streamer"):
        worker = IngestWorker(camera, bus.producer(), metrics, threading.Event())
        worker.run()
        published = consume_all(bus)
    assert [m.seq for m in published] == [i for i in range(24) if i not in (4, 11)]
    assert (worker.stats.read, worker.stats.published, worker.stats.corrupt) == (22, 22, 2)
    assert sample_value(registry, "vigil_ingest_frames_corrupt_total", "stc") == 2
    assert sample_value(registry, "vigil_ingest_frames_read_total", "stc") == 22
    assert 'vigil_ingest_frames_corrupt_total{camera="stc"} 2.0' in generate_latest(registry).decode()
    assert ("camera stc: ingest finished: 22 frames read, 22 published, 0 dropped, 2 skipped as corrupt, "
            "0 too large, 0 reconnect attempts") in caplog.text


def test_a_camera_without_corrupt_frames_shows_zero() -> None:
    registry = CollectorRegistry()
    IngestMetrics(registry).add_camera("clean", 10.0)
    assert sample_value(registry, "vigil_ingest_frames_corrupt_total", "clean") == 0

"""The ingest worker: one camera's frames from its :class:`~streamer.sources.Source` to ``vigil.frames``.

Each published record is a :class:`~common.messages.FrameMessage` (key = camera id, value =
JPEG, the contract's headers). How frames flow depends on the source:

* **live** (RTSP): the camera read never waits for the bus. A reader thread puts every
  frame into a one-slot "latest" buffer; the publisher (the thread that called
  :meth:`IngestWorker.run`) always takes the newest. A frame replaced before it was
  published is counted in ``vigil_ingest_frames_dropped_total`` -- there is no queue to grow.
* **replay** (file, frame folder): nothing is dropped. Frames are published synchronously,
  and before each one ``wait_for_capacity()`` (if given) is called: the embedded runner
  passes a function that blocks while the detector group's lag is over a limit, so a fast
  replay proceeds at the speed of the detector (back-pressure). A replay frame that the bus
  refuses with a :class:`~common.bus.BusError` is retried until it is stored or ``stop``.

**Delivery.** A producer's ``send`` only queues; what the bus could not store is reported by
a later ``flush`` (:class:`~common.bus.PublishError`). So the worker flushes every
``FLUSH_EVERY_FRAMES`` frames or ``FLUSH_EVERY_S`` seconds of sending (and at the end), and
keeps the frames sent since its last good flush (its *window*). A replay whose window a
flush did not confirm sends the whole window again, in order, with the shared back-off of
:mod:`common.retry`, until a flush confirms it or ``stop``: consumers drop the duplicates
this can make by ``(camera, seq)``. One producer serves every camera of a process and its
flush reports every camera's failures at once: flushes are taken in turn, and a failed one
makes every replay that had frames in flight send its window again. Each failed attempt is
counted in ``vigil_ingest_publish_errors_total``. Replay frames still unconfirmed when the
worker stops are counted in ``vigil_ingest_frames_lost_total`` and end the worker with a
:class:`FramesLostError` naming how many (``vigil ingest`` exits 1). Live frames are not
sent again (a newer frame is worth more): a failed flush is counted and logged.

A frame whose record exceeds the bus's size limit (:class:`~common.bus.MessageTooLarge`)
is re-encoded once at a lower JPEG quality; if that is still too big it is logged as an
error (camera, seq, size, limit) and counted in ``vigil_ingest_frames_too_large_total`` --
never dropped silently. The first frames after a (re)connect (``warmup``) are not published
unless ``publish_warmup=True``, in which case they carry an extra ``warmup: 1`` header
(consumers ignore headers they do not know).

Frames the source skips as corrupt (a frame-folder image that does not decode, a packet
that does not decode, a frame the decoder flags corrupt) are counted per camera in
``vigil_ingest_frames_corrupt_total`` and in the worker's closing summary line ("... 22
read, 22 published, 0 dropped, 2 skipped as corrupt ...").

Metrics (:class:`IngestMetrics`) are labelled by camera; :meth:`IngestMetrics.health` is the
``/healthz`` check of :class:`vigil.ops.OpsServer`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from common.bus import BusError, MessageTooLarge, Producer, PublishError
from common.messages import FRAMES_TOPIC, FrameMessage
from common.retry import Backoff, Stopped, call_with_retry
from streamer.camera import CameraConfig
from streamer.sources import CapturedFrame, Source, SourceError, open_source

__all__ = ["FramesLostError", "IngestMetrics", "IngestStats", "IngestWorker", "LatestSlot"]

log = logging.getLogger(__name__)

#: Extra header set on warm-up frames when they are published.
WARMUP_HEADER = "warmup"
# Retry delays of a replay frame the bus refused (seconds, doubling).
_BACKOFF = Backoff(0.5, 10.0)  # between attempts to publish a frame
# Repeated warnings/errors of one kind per camera are logged at most this often.
_LOG_EVERY_S = 10.0
#: The producer is flushed (and the frames sent since the last flush confirmed) after this
#: many frames of a camera, or once the oldest unconfirmed one was sent this long ago.
FLUSH_EVERY_FRAMES = 25
FLUSH_EVERY_S = 1.0
#: How long one flush may wait for the bus's acknowledgements: below the 10 s that
#: ``vigil.runner`` waits for a stopping worker, so a stop is answered with the frames counted.
#: A flush that times out leaves its frames unconfirmed: they are sent again, and if the first
#: copies arrive as well, consumers drop the second by ``(camera, seq)``.
FLUSH_TIMEOUT_S = 8.0


class FramesLostError(BusError):
    """Replay frames the bus never confirmed: the worker stopped while they were unconfirmed."""


# ----------------------------------------------------------------------------- metrics


@dataclass
class _CameraHealth:
    watchdog_s: float
    started: float
    last_frame: float | None = None
    throttled: bool = False
    reconnecting: bool = False  # the source lost its connection and is trying again
    finished: str = ""  # why the worker ended ("" while running)


class IngestMetrics:
    """Prometheus metrics of the ingest role, labelled by ``camera``, and its health check.

    Counters (``vigil_ingest_*_total``): ``frames_read`` (frames the source delivered, after
    sampling to the analysis fps), ``frames_published``, ``frames_dropped`` (live frames
    replaced by a newer one before publishing), ``frames_corrupt`` (skipped by the source as
    corrupt: undecodable images or packets, frames the decoder flags corrupt; not in
    ``frames_read``), ``frames_too_large`` (could not be published: over the bus's size
    limit), ``frames_warmup`` (warm-up frames not published),
    ``publish_errors`` (bus errors: failed sends, flushes that did not confirm the camera's
    frames), ``frames_lost`` (replay frames never confirmed by the bus when the worker
    stopped), ``reconnects`` (reconnect attempts). Gauge
    ``vigil_ingest_last_frame_timestamp_seconds``: wall-clock time (Unix seconds) at which
    the camera's last frame was read.

    :meth:`health` is unhealthy while a running camera has delivered no frame for its
    ``watchdog_s`` (counted from its start before the first frame); a camera whose replay
    is held up by back-pressure, or whose worker has finished, is not stalled. A camera's
    ``state``: ``starting``, ``streaming``, ``reconnecting`` (its source lost the connection and
    tries again; until the next frame), ``throttled``, ``stalled`` (past its watchdog), or why
    its worker finished.
    """

    def __init__(self, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self._lock = threading.Lock()
        self._cameras: dict[str, _CameraHealth] = {}
        reg, cam = self.registry, ["camera"]
        self.frames_read = Counter("vigil_ingest_frames_read", "Frames read from the source (after sampling)",
                                   cam, registry=reg)
        self.frames_published = Counter("vigil_ingest_frames_published", "Frames published to the bus",
                                        cam, registry=reg)
        self.frames_dropped = Counter("vigil_ingest_frames_dropped",
                                      "Live frames replaced by a newer frame before they were published",
                                      cam, registry=reg)
        self.frames_corrupt = Counter("vigil_ingest_frames_corrupt",
                                      "Frames skipped as corrupt (undecodable image or packet, frame "
                                      "flagged corrupt by the decoder)", cam, registry=reg)
        self.frames_too_large = Counter("vigil_ingest_frames_too_large",
                                        "Frames not published: record over the bus size limit",
                                        cam, registry=reg)
        self.frames_warmup = Counter("vigil_ingest_frames_warmup",
                                     "Warm-up frames after a (re)connect, not published", cam, registry=reg)
        self.publish_errors = Counter("vigil_ingest_publish_errors", "Bus errors while publishing frames "
                                      "(failed sends, flushes that did not confirm them)", cam, registry=reg)
        self.frames_lost = Counter("vigil_ingest_frames_lost", "Replay frames the bus never confirmed "
                                   "before the worker stopped", cam, registry=reg)
        self.reconnects = Counter("vigil_ingest_reconnects", "Reconnect attempts to the source",
                                  cam, registry=reg)
        self.last_frame_timestamp = Gauge("vigil_ingest_last_frame_timestamp_seconds",
                                          "Wall-clock time (Unix seconds) the camera's last frame was read",
                                          cam, registry=reg)

    def add_camera(self, camera_id: str, watchdog_s: float) -> None:
        """Start tracking a camera (its series appear at 0; its watchdog starts now)."""
        with self._lock:
            self._cameras[camera_id] = _CameraHealth(watchdog_s=watchdog_s, started=self._clock())
        for metric in (self.frames_read, self.frames_published, self.frames_dropped, self.frames_corrupt,
                       self.frames_too_large, self.frames_warmup, self.publish_errors, self.frames_lost,
                       self.reconnects):
            metric.labels(camera_id)

    def frame_read(self, camera_id: str) -> None:
        self.frames_read.labels(camera_id).inc()
        self.last_frame_timestamp.labels(camera_id).set(time.time())
        with self._lock:
            state = self._cameras.get(camera_id)
            if state is not None:
                state.last_frame = self._clock()
                state.reconnecting = False

    def set_reconnecting(self, camera_id: str) -> None:
        """Mark a camera as reconnecting (until its next frame)."""
        with self._lock:
            state = self._cameras.get(camera_id)
            if state is not None:
                state.reconnecting = True

    def set_throttled(self, camera_id: str, throttled: bool) -> None:
        """Mark a replay as held up by back-pressure (not a stall); ending it restarts the watchdog."""
        with self._lock:
            state = self._cameras.get(camera_id)
            if state is not None:
                state.throttled = throttled
                if not throttled:
                    state.last_frame = self._clock()

    def finished(self, camera_id: str, reason: str) -> None:
        with self._lock:
            state = self._cameras.get(camera_id)
            if state is not None:
                state.finished = reason or "finished"

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(ok, {"cameras": {id: {...}}})`` for ``/healthz``."""
        now = self._clock()
        cameras: dict[str, dict[str, Any]] = {}
        with self._lock:
            for cid, st in sorted(self._cameras.items()):
                since = st.last_frame if st.last_frame is not None else st.started
                age = now - since
                if st.finished:
                    state, ok = st.finished, True
                elif st.throttled:
                    state, ok = "throttled", True
                elif age > st.watchdog_s:
                    state, ok = "stalled", False
                elif st.reconnecting:
                    state, ok = "reconnecting", True
                else:
                    state, ok = ("streaming" if st.last_frame is not None else "starting"), True
                cameras[cid] = {"ok": ok, "state": state, "seconds_since_frame": round(age, 3),
                                "watchdog_s": st.watchdog_s}
        return all(c["ok"] for c in cameras.values()), {"cameras": cameras}


# ----------------------------------------------------------------------------- the latest-frame slot


class LatestSlot:
    """A one-item buffer: :meth:`put` replaces what is there (never blocks), :meth:`take`
    waits for an item. ``put`` returns True when it replaced an item nobody took (a drop)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False

    def put(self, item: Any) -> bool:
        with self._cond:
            replaced = self._full
            self._item, self._full = item, True
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Any:
        """The newest item, or None after ``timeout`` or once closed and empty."""
        with self._cond:
            if not self._full and not self._closed:
                self._cond.wait(timeout)
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed and not self._full


# ----------------------------------------------------------------------------- the worker


@dataclass
class IngestStats:
    """What one worker did (also in the metrics); ``last_seq`` is -1 before the first publish."""

    read: int = 0
    published: int = 0
    dropped: int = 0
    corrupt: int = 0
    too_large: int = 0
    reencoded: int = 0
    warmup: int = 0
    publish_errors: int = 0
    lost: int = 0
    reconnects: int = 0
    last_seq: int = -1


@dataclass(frozen=True)
class _Sent:
    """A frame record sent but not yet confirmed by a flush."""

    seq: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


class _FlushGroup:
    """The workers sharing one producer. Its flush reports the failures of every record sent
    before it, whoever sent them: flushes are taken in turn (``lock``) and the failed ones are
    counted (``failures``), so each worker can tell whether its window saw one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failures = 0


_GROUPS: weakref.WeakKeyDictionary[Any, _FlushGroup] = weakref.WeakKeyDictionary()
_GROUPS_LOCK = threading.Lock()


def _flush_group(producer: Producer) -> _FlushGroup:
    """The flush group of ``producer`` (one of its own if it cannot be weakly referenced)."""
    with _GROUPS_LOCK:
        try:
            group = _GROUPS.get(producer)
            if group is None:
                group = _GROUPS[producer] = _FlushGroup()
        except TypeError:
            group = _FlushGroup()
    return group


class _UnconfirmedError(PublishError):
    """A flush succeeded, but another one failed while this window was in flight."""


class _Throttle:
    """Lets a repeated log message through at most every ``every`` seconds, counting the rest."""

    def __init__(self, every: float = _LOG_EVERY_S) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def check(self, key: str) -> tuple[bool, int]:
        """``(log it?, messages suppressed since the last one logged)``."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)


def _suffix(suppressed: int) -> str:
    return f" ({suppressed} similar message(s) suppressed)" if suppressed else ""


class IngestWorker:
    """Reads one camera and publishes its frames to ``topic`` (see the module docstring).

    :meth:`run` blocks until the source ends (a replay) or ``stop`` is set; :meth:`start`
    runs it on a thread and :meth:`join` waits for that. A replay that cannot be opened
    raises :class:`~streamer.video.SourceError` from :meth:`run` (on a thread it is logged
    and kept in :attr:`error`). ``source`` replaces the one built from ``camera`` (tests,
    custom sources); its ``stop`` should be the same event.
    """

    def __init__(self, camera: CameraConfig, producer: Producer, metrics: IngestMetrics,
                 stop: threading.Event, topic: str = FRAMES_TOPIC, jpeg_quality: int = 90,
                 wait_for_capacity: Callable[[], None] | None = None, *,
                 source: Source | None = None, publish_warmup: bool = False,
                 fallback_quality: int | None = None) -> None:
        if not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be within 1..100, got {jpeg_quality}")
        self.camera = camera
        self.producer = producer
        self.metrics = metrics
        self.stop = stop
        self.topic = topic
        self.jpeg_quality = int(jpeg_quality)
        #: quality of the one re-encode of a frame over the size limit (< jpeg_quality to try)
        self.fallback_quality = int(fallback_quality) if fallback_quality is not None else max(
            10, self.jpeg_quality // 2)
        self.wait_for_capacity = wait_for_capacity
        self.publish_warmup = publish_warmup
        self.stats = IngestStats()
        self.error: BaseException | None = None
        self._source = source
        self._thread: threading.Thread | None = None
        self._throttle = _Throttle()
        self._halt = threading.Event()  # the publisher ended: the live reader should stop too
        self._group = _flush_group(producer)
        self._window: list[_Sent] = []  # sent since the last flush that confirmed them
        self._window_started = 0.0  # monotonic time of the window's first send
        self._epoch = 0  # the group's failed flushes when the window began (or was sent again)
        self._resend = False  # the window must be sent again before the next flush
        self._live = False  # the source is live: its frames are not sent again
        metrics.add_camera(camera.id, camera.watchdog_s)

    # -- threads

    def start(self) -> IngestWorker:
        """Run :meth:`run` on a daemon thread named after the camera."""
        if self._thread is not None:
            raise RuntimeError(f"ingest worker for camera {self.camera.id} already started")
        self._thread = threading.Thread(target=self._thread_main, name=f"ingest-{self.camera.id}",
                                        daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True if it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _thread_main(self) -> None:
        with contextlib.suppress(Exception):  # run() logged it and kept it in self.error
            self.run()

    # -- the work

    def run(self) -> None:
        cam = self.camera
        reason = "finished"
        try:
            source = self._source if self._source is not None else open_source(cam, self.stop)
            self._live = source.live
            source.on_reconnect = self._on_reconnect
            source.on_skip = self._on_skip
            log.info("camera %s: ingesting %s (%s, %s source, scene %s, fps %s) to %s",
                     cam.id, cam.display_url, cam.kind, source.source_type, cam.scene,
                     f"{cam.fps:g}" if cam.fps else "native", self.topic)
            if source.live:
                self._run_live(source)
            else:
                self._run_replay(source)
            if self.stop.is_set():
                reason = "stopped"
        except SourceError as exc:
            reason = "failed"
            self.error = exc
            log.error("camera %s: %s", cam.id, exc)
            raise
        except Exception as exc:
            reason = "failed"
            self.error = exc
            log.exception("camera %s: ingest failed", cam.id)
            raise
        finally:
            self._halt.set()
            self._confirm(resend=not self._live)
            if self.stats.lost and self.error is None:
                reason = "failed"
                self.error = FramesLostError(
                    f"camera {cam.id}: {self.stats.lost} frame(s) could not be published to {self.topic} "
                    "(not confirmed by the bus when ingest stopped)")
                log.error("%s", self.error)
            self.metrics.finished(cam.id, reason)
            log.info("camera %s: ingest %s: %s", cam.id, reason, self.summary())

    def summary(self) -> str:
        """What the worker did, in words: ``22 frames read, 22 published, 0 dropped, 2 skipped
        as corrupt, 0 too large, 0 reconnect attempts``."""
        s = self.stats
        lost = f", {s.lost} lost (never confirmed by the bus)" if s.lost else ""
        return (f"{s.read} frames read, {s.published} published, {s.dropped} dropped, {s.corrupt} skipped "
                f"as corrupt, {s.too_large} too large, {s.reconnects} reconnect attempts{lost}")

    def _on_reconnect(self, attempt: int, delay_s: float, reason: str) -> None:
        self.stats.reconnects += 1
        self.metrics.reconnects.labels(self.camera.id).inc()
        self.metrics.set_reconnecting(self.camera.id)

    def _on_skip(self, seq: int, what: str) -> None:
        self.stats.corrupt += 1
        self.metrics.frames_corrupt.labels(self.camera.id).inc()

    def _accept(self, frame: CapturedFrame) -> bool:
        """Count a frame read; False if it is a warm-up frame that is not published."""
        self.stats.read += 1
        self.metrics.frame_read(self.camera.id)
        if frame.warmup and not self.publish_warmup:
            self.stats.warmup += 1
            self.metrics.frames_warmup.labels(self.camera.id).inc()
            return False
        return True

    def _run_replay(self, source: Source) -> None:
        frames = iter(source)
        try:
            for frame in frames:
                if not self._accept(frame):
                    continue
                if self.wait_for_capacity is not None:
                    self.metrics.set_throttled(self.camera.id, True)
                    try:
                        self.wait_for_capacity()
                    finally:
                        self.metrics.set_throttled(self.camera.id, False)
                if self.stop.is_set():
                    return
                self._publish(frame, retry=True)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def _run_live(self, source: Source) -> None:
        slot = LatestSlot()
        reader = threading.Thread(target=self._read_live, args=(source, slot),
                                  name=f"ingest-read-{self.camera.id}", daemon=True)
        reader.start()
        try:
            while not self.stop.is_set():
                frame = slot.take(timeout=0.25)
                if frame is None:
                    if slot.closed:
                        break
                    continue
                self._publish(frame, retry=False)
        finally:
            self._halt.set()
            reader.join(timeout=self.camera.read_timeout_s + 2.0)
            if reader.is_alive():
                log.warning("camera %s: reader thread still blocked in a read; leaving it (daemon)",
                            self.camera.id)

    def _read_live(self, source: Source, slot: LatestSlot) -> None:
        frames = iter(source)
        try:
            for frame in frames:
                if self._halt.is_set():
                    break
                if self._accept(frame) and slot.put(frame):
                    self.stats.dropped += 1
                    self.metrics.frames_dropped.labels(self.camera.id).inc()
        except Exception as exc:
            self.error = exc
            log.exception("camera %s: reading the live source failed", self.camera.id)
        finally:
            slot.close()
            close = getattr(frames, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def _encode(self, frame: CapturedFrame, quality: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        if frame.jpeg is not None and quality == self.jpeg_quality:
            # The source's own JPEG (a frame file): no lossy re-encode, the exact bytes go on.
            w, h = frame.size
            msg = FrameMessage(camera=self.camera.id, scene=self.camera.scene, seq=frame.seq,
                               ts=frame.ts_ms, source=self.camera.source, width=w, height=h,
                               jpeg=frame.jpeg)
        else:
            msg = FrameMessage.from_image(frame.image, camera=self.camera.id, scene=self.camera.scene,
                                          seq=frame.seq, ts=frame.ts_ms, source=self.camera.source,
                                          quality=quality)
        key, value, headers = msg.to_record()
        if frame.warmup:
            headers.append((WARMUP_HEADER, b"1"))
        return key, value, headers

    def _publish(self, frame: CapturedFrame, *, retry: bool) -> bool:
        """Publish one frame; False if it could not be (too large, or a bus error without retry)."""

        def attempt() -> bool:
            key, value, headers = self._encode(frame, self.jpeg_quality)
            try:
                self._send(frame.seq, key, value, headers)
            except MessageTooLarge as first:
                return self._send_smaller(frame, first)
            return True

        try:
            sent = call_with_retry(attempt, retry_on=(BusError,), backoff=_BACKOFF, stop=self.stop,
                                   attempts=None if retry else 1,
                                   on_failure=lambda exc, _delay: self._publish_failed(frame, exc, retry))
        except BusError as exc:  # not retried
            self._publish_failed(frame, exc, retry)
            return False
        except Stopped:
            return False
        if sent:
            self.stats.published += 1
            self.stats.last_seq = frame.seq
            self.metrics.frames_published.labels(self.camera.id).inc()
        if self._window and (len(self._window) >= FLUSH_EVERY_FRAMES
                             or time.monotonic() - self._window_started >= FLUSH_EVERY_S):
            self._confirm(resend=retry)
        return sent

    def _publish_failed(self, frame: CapturedFrame, exc: BaseException, retry: bool) -> None:
        cam = self.camera
        self.stats.publish_errors += 1
        self.metrics.publish_errors.labels(cam.id).inc()
        ok, suppressed = self._throttle.check("bus")
        if ok:
            log.error("camera %s: cannot publish frame seq %d to %s: %s%s%s", cam.id, frame.seq,
                      self.topic, exc, "; retrying" if retry else "; frame lost", _suffix(suppressed))

    def _send_smaller(self, frame: CapturedFrame, first: MessageTooLarge) -> bool:
        """Re-encode a frame that was over the limit at the fallback quality; False if still too big."""
        cam = self.camera
        second: MessageTooLarge | None = None
        if self.fallback_quality < self.jpeg_quality:
            key, value, headers = self._encode(frame, self.fallback_quality)
            try:
                self._send(frame.seq, key, value, headers)
            except MessageTooLarge as exc:
                second = exc
            else:
                self.stats.reencoded += 1
                ok, suppressed = self._throttle.check("reencoded")
                if ok:
                    log.warning("camera %s: frame seq %d was %d bytes at JPEG quality %d, over the %d-byte "
                                "limit of %s; published at quality %d (%d bytes)%s", cam.id, frame.seq,
                                first.size, self.jpeg_quality, first.limit, self.topic,
                                self.fallback_quality, len(value), _suffix(suppressed))
                return True
        self.stats.too_large += 1
        self.metrics.frames_too_large.labels(cam.id).inc()
        ok, suppressed = self._throttle.check("too-large")
        if ok:
            retried = f", {second.size} bytes at quality {self.fallback_quality}" if second else ""
            log.error("camera %s: frame seq %d (%dx%d) NOT published: record is %d bytes at JPEG "
                      "quality %d%s, over the %d-byte limit of %s%s", cam.id, frame.seq, frame.size[0],
                      frame.size[1], first.size, self.jpeg_quality, retried, first.limit, self.topic,
                      _suffix(suppressed))
        return False

    # -- delivery (see "Delivery" in the module docstring)

    def _send(self, seq: int, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Queue one record and keep it in the window until a flush confirms it."""
        if not self._window:
            self._epoch = self._group.failures  # failed flushes counted from here on may be ours
            self._window_started = time.monotonic()
        self.producer.send(self.topic, key, value, headers)
        self._window.append(_Sent(seq, key, value, headers))

    def _confirm(self, *, resend: bool) -> None:
        """Flush until the window is confirmed. A replay (``resend``) sends the window again,
        in order, after each failure, with back-off, until confirmed or ``stop`` (then its
        frames are counted lost); a live camera's window is given up after one failure."""
        if not self._window:
            return

        def attempt() -> None:
            if self._resend:
                for sent in self._window:
                    self.producer.send(self.topic, sent.key, sent.value, sent.headers)
                self._resend = False
            self._flush_window()

        try:
            call_with_retry(attempt, retry_on=(BusError,), backoff=_BACKOFF, stop=self.stop,
                            attempts=None if resend else 1, on_failure=self._window_failed)
        except BusError as exc:  # live: not sent again
            self._window_failed(exc, None)
        except Stopped:
            if resend:
                lost = len(self._window)
                self.stats.lost += lost
                self.metrics.frames_lost.labels(self.camera.id).inc(lost)
                log.error("camera %s: %d frame(s) (seq %d-%d) not confirmed by the bus when ingest stopped: "
                          "they may be lost", self.camera.id, lost, self._window[0].seq, self._window[-1].seq)
            else:
                self._window_failed(BusError("stopped while waiting for the bus"), None)
        self._window.clear()
        self._resend = False

    def _flush_window(self) -> None:
        """One flush, in turn with the group's; :class:`PublishError` unless it confirms the window."""
        group = self._group
        while not group.lock.acquire(timeout=0.1):  # another camera's flush waits for the bus
            if self.stop.is_set():
                raise Stopped
        try:
            try:
                self.producer.flush(timeout=FLUSH_TIMEOUT_S)
            except BusError:
                group.failures += 1
                self._epoch, self._resend = group.failures, True  # the window goes again
                raise
            if group.failures != self._epoch:
                self._epoch, self._resend = group.failures, True
                raise _UnconfirmedError("a flush of the shared producer failed while these frames were in "
                                        "flight (another camera's, or this one's)")
        finally:
            group.lock.release()

    def _window_failed(self, exc: BaseException, delay: float | None) -> None:
        """Count a flush (or re-send) that did not confirm the window; log it, throttled."""
        cam, window = self.camera, self._window
        self.stats.publish_errors += 1
        self.metrics.publish_errors.labels(cam.id).inc()
        ok, suppressed = self._throttle.check("flush")
        if ok:
            then = (f"sending them again in {delay:.1f} s" if delay is not None
                    else "live frames are not sent again")
            log.error("camera %s: %d frame(s) (seq %d-%d) not confirmed by the bus: %s; %s%s", cam.id,
                      len(window), window[0].seq, window[-1].seq, exc, then, _suffix(suppressed))

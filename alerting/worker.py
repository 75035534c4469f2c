"""The alert role: ``vigil.frames`` + ``vigil.scores`` in, alerts (store + ``vigil.alerts``) out.

One consumer (group ``alerting.group``) reads both topics. Per camera:

* frames go into a bounded ring buffer (:class:`~alerting.ring.FrameRing`), JPEG bytes as
  received; scores are joined to their frame by ``seq``. A score waits (``join_timeout_s``,
  wall clock) for its frame unless the frame is already there or a later frame arrived (then
  it is not coming: counted as missing). Scores are de-duplicated: a score whose seq and ts
  are not past the last one processed is a redelivery; a seq going back with a newer ts is a
  source restart (the camera's open alert is ended and its state reset).
* joined scores drive the camera's :class:`~alerting.lifecycle.AlertLifecycle`; a start opens
  a clip (pre-roll from the ring, :class:`~alerting.clip.ClipRecorder`), every later frame
  is appended as its score arrives, and after the end the clip runs on for the post-roll;
  then it is stored and the ``end`` event goes out. ``start`` and ``update`` are stored (with
  the snapshot of the peak frame so far) and published at once.

Delivery: every store write is idempotent (see :mod:`alerting.store`); events the store has
not seen published are sent to ``vigil.alerts`` (key = camera), the producer is flushed, the
store is told they are published, and only then are offsets committed -- and only up to the
oldest record the in-memory state still depends on (frames that may become pre-roll, the
scores of the k-of-n window, everything since the anchor of an alert that is open, recording
its post-roll or cooling down). After a crash the uncommitted records are read again and
rebuild the same state; alert ids are deterministic, so nothing is duplicated and nothing is
lost.

A camera whose records come with another scene than before has its open alert ended and its
state started afresh (the first such record does it). A camera silent for ``idle_timeout_s``
has its open alert ended at its last frame, and once nothing of it is open its state (ring
buffer included) is dropped; at most ``max_cameras`` cameras are kept (the least recently
active one is finished and dropped first). :meth:`AlertWorker.finish_all` ends every
camera's alerts (end of a replay).

**Idle, not cut off.** A camera is silent only while the bus is heard delivering: a broker
that is frozen or unreachable silences every camera at once, and the worker cannot tell
that from the outside (polls return nothing, without error). So a camera's silence is
counted while records of other cameras keep arriving (the bus is *flowing*: something
arrived within ``idle_timeout_s / 2``); after a bus-wide quiet spell every camera's clock
restarts when records flow again. While nothing at all arrives (the only camera died, or
the broker is frozen), an alert is ended only after ``QUIET_BUS_FACTOR * idle_timeout_s``
(120 s by default) during which polls returned without error and the consumer has read
everything its partitions hold (``lag() == 0``); a poll that fails stops that clock. See
:meth:`AlertWorker.idle_for`.

**Poison records.** No single record can stop the role: a record that cannot be parsed, has
a camera id outside the contract or declares a frame over ``clip.max_frame_pixels`` is
counted (``vigil_alert_rejected{topic, reason="bad_message"}``); any unexpected exception
while handling one record (its frame, or its score and what the score sets off) is counted
as ``reason="error:<ExceptionType>"``, logged once with topic, partition and offset, and the
record is skipped; the camera's state is then finished (its open alert stored with what it
has) and started afresh, in case the failure left it inconsistent. Failures that belong to
no record (the bus, housekeeping) are not swallowed: they end the worker (``error``, logged).

**A store that cannot write** (disk full or unwritable, Redis refusing writes): the write is
kept in memory, in order, and retried with back-off (at most ``store_retry_max_writes`` /
``store_retry_max_bytes``; beyond that the worker waits for the store), while the worker
goes on consuming; one error line names the cause (then at most one a minute),
``vigil_alert_store_errors{reason}`` counts the failed attempts and
``vigil_alert_store_queued_writes`` the writes waiting. The records of an alert whose write
waits stay uncommitted, so a crash meanwhile loses nothing. A store that cannot be reached
(a full spool) is waited for, as before.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

from alerting.clip import ClipRecorder, snapshot_jpeg
from alerting.config import AlertingConfig
from alerting.events import ALERTS_TOPIC, AlertRecord, encode_event
from alerting.lifecycle import AlertLifecycle, AlertState, Transition
from alerting.region import Region, hot_region
from alerting.ring import FrameRing, RingEntry
from alerting.store import AlertStore, AlertWrite, PutResult, StoreError, StoreUnavailableError
from common.bus import BusError, CommitFailedError, Consumer, Producer, PublishError, Record
from common.messages import FRAMES_TOPIC, SCORES_TOPIC, FrameMessage, MessageError, ScoreMessage, jpeg_size
from common.retry import Backoff, Stopped, call_with_retry
from common.role_thread import RoleThread

__all__ = ["AlertMetrics", "AlertWorker"]

log = logging.getLogger(__name__)

_BACKOFF = Backoff(0.25, 5.0)  # between attempts to store an alert or its publish marks
_QUEUE_BACKOFF = Backoff(1.0, 30.0)  # between attempts to store the writes kept in memory
#: Repeated store errors are logged at most once per this many seconds.
STORE_ERROR_LOG_INTERVAL_S = 60.0
#: While the whole bus is quiet, a camera is idle only after this many ``idle_timeout_s``.
QUIET_BUS_FACTOR = 4.0


def error_reason(exc: BaseException) -> str:
    """The rejection reason of an unexpected exception: ``error:<ExceptionType>``."""
    return f"error:{type(exc).__name__}"


def store_error_reason(exc: BaseException) -> str:
    """The ``reason`` label of a failed store write: the errno name (``ENOSPC``, ``EACCES``...),
    the error's own ``reason`` (``auth``: Redis refused the credentials), ``unavailable`` or
    ``refused``."""
    own = getattr(exc, "reason", None)
    if isinstance(own, str):
        return own
    code = getattr(exc, "errno", None)
    if code is None and isinstance(exc.__cause__, OSError):
        code = exc.__cause__.errno
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    return "unavailable" if isinstance(exc, StoreUnavailableError) else "refused"


class AlertMetrics:
    """The alert role's Prometheus metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.frames_in = Counter("vigil_alert_frames_in", "frame records read", registry=registry)
        self.scores_in = Counter("vigil_alert_scores_in", "score records processed", ["camera"],
                                 registry=registry)
        self.duplicates = Counter("vigil_alert_duplicates", "redelivered score records dropped",
                                  registry=registry)
        self.rejected = Counter("vigil_alert_rejected", "records skipped, by topic and reason",
                                ["topic", "reason"], registry=registry)
        self.missing_frames = Counter("vigil_alert_missing_frames", "scores whose frame never arrived",
                                      registry=registry)
        self.unscored_frames = Counter("vigil_alert_unscored_frames",
                                       "frames that left the ring buffer without a score", registry=registry)
        self.events = Counter("vigil_alert_events", "alert events decided", ["state"], registry=registry)
        self.published = Counter("vigil_alert_events_published", "alert events published on vigil.alerts",
                                 registry=registry)
        self.store_unavailable = Counter("vigil_alert_store_unavailable",
                                         "store writes that could not be done at once", registry=registry)
        self.open_alerts = Gauge("vigil_alert_open", "alerts open or recording their post-roll",
                                 registry=registry)
        self.spooled = Gauge("vigil_alert_spooled_writes", "writes waiting in the spool", registry=registry)
        self.store_errors = Counter("vigil_alert_store_errors", "store writes that failed (disk full, "
                                    "unwritable, refused), by reason; kept and retried", ["reason"],
                                    registry=registry)
        self.store_queued = Gauge("vigil_alert_store_queued_writes", "writes kept in memory until the "
                                  "store can take them", registry=registry)
        self.cameras = Gauge("vigil_alert_cameras", "cameras whose state the worker holds", registry=registry)
        self.cameras_dropped = Counter("vigil_alert_cameras_dropped", "camera states dropped (idle, or "
                                       "beyond max_cameras)", ["why"], registry=registry)


@dataclass
class _Alert:
    """Worker-side state of one alert (its clip recorder, its peak frame)."""

    state: AlertState
    recorder: ClipRecorder
    peak: RingEntry | None = None
    ended: bool = False  # the lifecycle ended it; the clip may still be recording the post-roll


@dataclass
class _Pending:
    msg: ScoreMessage
    arrived: float  # monotonic
    where: str = "?"  # topic[partition]@offset of its record, for the log


@dataclass
class _StoreOp:
    """A store operation kept in memory because the store could not take it."""

    write: AlertWrite | None = None  # a put ...
    alert_id: str = ""  # ... or publish marks
    event_ids: list[str] = field(default_factory=list)
    camera: str | None = None  # the put's camera and alert anchor: its records stay uncommitted
    anchor_seq: int | None = None

    @property
    def nbytes(self) -> int:
        w = self.write
        return 1024 + (len(w.clip or b"") + len(w.snapshot or b"") if w is not None else 0)


@dataclass
class _Camera:
    camera: str
    scene: str
    source: str
    ring: FrameRing
    machine: AlertLifecycle
    pending: deque[_Pending] = field(default_factory=deque)
    alerts: list[_Alert] = field(default_factory=list)
    last_seq: int | None = None  # last score processed
    last_ts: int | None = None
    last_activity: float = field(default_factory=time.monotonic)
    finished: bool = False  # ended by finish/idle: nothing uncommitted is needed any more

    def low_water(self, pre_roll_ms: int) -> int | None:
        """Oldest seq (frames and scores) the state depends on; None: nothing."""
        if self.finished:
            return None
        marks: list[int] = []
        if (m := self.machine.low_water()) is not None:
            marks.append(m)
        if self.pending:
            marks.append(self.pending[0].msg.seq)
        # frames that may still become the pre-roll of an alert starting now or later
        newest = self.ring.get(self.ring.newest_seq) if self.ring.newest_seq is not None else None
        if newest is not None:
            horizon = newest.ts - pre_roll_ms
            for entry in self.ring.between(-1, newest.seq):
                if entry.ts >= horizon:
                    marks.append(entry.seq)
                    break
        for alert in self.alerts:
            marks.append(alert.state.anchor_seq)
            if alert.recorder.first_seq is not None:
                marks.append(alert.recorder.first_seq)
        return min(marks) if marks else None


class AlertWorker(RoleThread):
    """Consumes frames and scores, keeps per-camera alert state, stores and publishes alerts."""

    thread_name, role_name = "alert", "alert worker"

    def __init__(self, consumer: Consumer, producer: Producer, store: AlertStore, cfg: AlertingConfig,
                 metrics: AlertMetrics, stop: threading.Event | None = None,
                 frames_topic: str = FRAMES_TOPIC, scores_topic: str = SCORES_TOPIC,
                 alerts_topic: str = ALERTS_TOPIC) -> None:
        self.consumer, self.producer, self.store = consumer, producer, store
        self.cfg, self.metrics = cfg, metrics
        self.stop = stop or threading.Event()
        self.frames_topic, self.scores_topic, self.alerts_topic = frames_topic, scores_topic, alerts_topic
        self.cameras: dict[str, _Camera] = {}
        self._uncommitted: dict[tuple[str, int], deque[tuple[int, str | None, int]]] = {}
        self._to_publish: list[dict] = []  # events not yet flushed to the topic
        self._pre_roll_ms = int(cfg.clip.pre_roll_s * 1000)
        self._finish_requested = threading.Event()
        self.finished = threading.Event()
        self._last_housekeeping = 0.0
        self._broken: set[str] = set()  # cameras whose state a failure may have left inconsistent
        self._traced: set[str] = set()  # error reasons already logged with a traceback
        # writes the store could not take, in order, retried with back-off (see the module docstring)
        self._queue: deque[_StoreOp] = deque()
        self._queue_bytes = 0
        self._queue_failures = 0
        self._queue_retry_at = 0.0
        self._store_error_logged_at: float | None = None
        self._store_errors_quiet = 0
        # the clocks of the idle rule (idle_for)
        started = time.monotonic()
        self._heard_at: float | None = None  # when the last poll with records came back
        self._flowing_since = started  # records have arrived since, without a bus-wide quiet spell
        self._polls_ok_since: float | None = started  # polls have returned without error since

    # ------------------------------------------------------------------ thread
    def run(self) -> None:
        log.info("alert worker started (store %s)", type(self.store).__name__)
        while not self.stop.is_set():
            try:
                records = self.consumer.poll(max_records=256, timeout_ms=200)
                if self._polls_ok_since is None:
                    self._polls_ok_since = time.monotonic()
                if records:
                    self.finished.clear()
                    self.handle(records)
                elif self._finish_requested.is_set() and not self.finished.is_set() and not self._queue:
                    self.finish_all()
                    self.finished.set()
                self.housekeeping()
            except Stopped:
                break
            except BusError as exc:  # broker trouble: nothing committed, records come again
                self._polls_ok_since = None  # nobody's silence is its own while the bus fails
                log.warning("alert worker: %s", exc)
                self.stop.wait(1.0)


    def request_finish(self) -> None:
        """Ask the worker thread to end every alert once it has read everything (end of replays)."""
        self._finish_requested.set()

    # ------------------------------------------------------------------ records
    def handle(self, records: list[Record]) -> None:
        """Process one poll's records: frames first, then the scores that can be joined."""
        now = time.monotonic()
        if records:
            self._heard(now)
        touched: set[str] = set()
        for record in records:
            camera: str | None = None
            seq = -1
            try:
                msg = self._parse(record)
                if msg is not None:
                    camera, seq = msg.camera, msg.seq
                    self._take(msg, record, now, touched)
            except Stopped:
                raise
            except Exception as exc:  # noqa: BLE001 - the per-record guard: counted, logged, skipped
                self._failed(record.topic, _where(record), exc, camera)
            self._uncommitted.setdefault((record.topic, record.partition), deque()).append(
                (record.offset, camera, seq))
        for camera in touched:
            cam = self.cameras.get(camera)
            if cam is not None:
                self._process_ready(cam, now)
        self._reset_broken()
        self._deliver()

    def _parse(self, record: Record) -> FrameMessage | ScoreMessage | None:
        """The record's message; None if it is rejected (counted) or of another topic."""
        try:
            if record.topic == self.frames_topic:
                self.metrics.frames_in.inc()
                frame = FrameMessage.from_record(record.key, record.value, record.headers)
                self._check_frame(frame)
                return frame
            if record.topic == self.scores_topic:
                # the contract refuses a camera id that could not name a file or key (common.ids)
                return ScoreMessage.from_record(record.key, record.value, record.headers)
        except MessageError as exc:
            self._reject(record, exc)
        return None

    def _take(self, msg: FrameMessage | ScoreMessage, record: Record, now: float, touched: set[str]) -> None:
        """A frame goes into its camera's ring; a score waits for its frame."""
        self._follow_scene(msg.camera, msg.scene)
        if isinstance(msg, FrameMessage):
            self._on_frame(msg, now)
            if self.cameras[msg.camera].pending:  # a score was waiting for this frame
                touched.add(msg.camera)
        elif self._queue_score(msg, now, _where(record)):
            touched.add(msg.camera)

    def _check_frame(self, msg: FrameMessage) -> None:
        """A frame the ring may hold: a bounded size (its camera id the contract has checked)."""
        limit = self.cfg.clip.max_frame_pixels
        width, height = jpeg_size(msg.jpeg)
        for what, (w, h) in (("declares", (msg.width, msg.height)), ("JPEG holds", (width, height))):
            if w * h > limit:
                raise MessageError(f"frame {what} {w}x{h} pixels, over clip.max_frame_pixels ({limit})")

    def _reject(self, record: Record, exc: Exception) -> None:
        self.metrics.rejected.labels(record.topic, "bad_message").inc()
        log.warning("skipping record %s: %s", _where(record), exc)

    def _failed(self, topic: str, where: str, exc: Exception, camera: str | None) -> None:
        """An unexpected exception while handling one record: count it, log it once (the first
        of each type with its traceback), and have the camera's state started afresh."""
        reason = error_reason(exc)
        self.metrics.rejected.labels(topic, reason).inc()
        trace = reason not in self._traced
        self._traced.add(reason)
        log.warning("skipping record %s%s: %s: %s", where, f" (camera {camera})" if camera else "", reason,
                    exc, exc_info=exc if trace else None)
        if camera is not None and camera in self.cameras:
            self._broken.add(camera)

    def _reset_broken(self) -> None:
        """Start afresh the alert state of cameras a failure may have left inconsistent: their
        open alerts are ended and stored with what they have (if that fails too, their clips are
        dropped), the lifecycle starts anew; the ring and the scores still waiting are kept."""
        while self._broken:
            camera = self._broken.pop()
            cam = self.cameras.get(camera)
            if cam is None:
                continue
            waiting = list(cam.pending)
            cam.pending.clear()
            try:
                self._finish_camera(cam)
            except Stopped:
                raise
            except Exception:  # noqa: BLE001 - the state was broken: drop it rather than the role
                log.exception("camera %s: its open alerts could not be stored after an error", camera)
                for alert in cam.alerts:
                    alert.recorder.discard()
                self.metrics.open_alerts.dec(len(cam.alerts))
            cam.alerts = []
            cam.machine = AlertLifecycle(camera, cam.scene, self.cfg.lifecycle_for(camera, cam.scene),
                                         cam.source)
            cam.last_seq = cam.last_ts = None
            cam.finished = False
            cam.pending.extend(waiting)
            log.warning("camera %s: alert state started afresh after an error", camera)
            self._process_ready(cam, time.monotonic())  # a failure here comes back round, one record less

    def _follow_scene(self, camera: str, scene: str) -> None:
        """A record of ``camera`` from another scene than its state's: end its alerts and forget
        the state (the record's handling creates it afresh for the new scene)."""
        cam = self.cameras.get(camera)
        if cam is not None and cam.scene != scene:
            log.info("camera %s moved from scene %s to %s: alert state reset", camera, cam.scene, scene)
            self._reset(cam)
            del self.cameras[camera]

    def _camera(self, camera: str, scene: str, source: str) -> _Camera:
        """The camera's state, created on first sight (beyond ``max_cameras``, the least
        recently active camera is finished and dropped first)."""
        cam = self.cameras.get(camera)
        if cam is None:
            while len(self.cameras) >= self.cfg.max_cameras:
                oldest = min(self.cameras.values(), key=lambda c: c.last_activity)
                log.warning("more than %d cameras: dropping the state of %s, the least recently active",
                            self.cfg.max_cameras, oldest.camera)
                self._finish_camera(oldest)
                self._drop(oldest, "max_cameras")
            settings = self.cfg.lifecycle_for(camera, scene)
            cam = _Camera(camera, scene, source, FrameRing(self.cfg.ring.max_frames, self.cfg.ring.max_bytes),
                          AlertLifecycle(camera, scene, settings, source))
            self.cameras[camera] = cam
            self.metrics.cameras.set(len(self.cameras))
        return cam

    def _drop(self, cam: _Camera, why: str) -> None:
        """Forget a camera's state (finished first by the caller)."""
        if self.cameras.get(cam.camera) is cam:
            del self.cameras[cam.camera]
            self.metrics.cameras_dropped.labels(why).inc()
            self.metrics.cameras.set(len(self.cameras))

    def _on_frame(self, msg: FrameMessage, now: float) -> None:
        cam = self._camera(msg.camera, msg.scene, msg.source)
        newest = cam.ring.get(cam.ring.newest_seq) if cam.ring.newest_seq is not None else None
        if newest is not None and msg.seq <= newest.seq and msg.ts > newest.ts and msg.seq not in cam.ring:
            log.info("camera %s: frame seq went back from %d to %d: source restarted", msg.camera,
                     newest.seq, msg.seq)
            self._reset(cam)
        _added, evicted = cam.ring.add(RingEntry(msg.seq, msg.ts, msg.width, msg.height, msg.jpeg))
        self.metrics.unscored_frames.inc(sum(e.score is None for e in evicted))
        cam.last_activity, cam.finished = now, False

    def _queue_score(self, msg: ScoreMessage, now: float, where: str = "?") -> bool:
        cam = self._camera(msg.camera, msg.scene, msg.source)
        last_seq = cam.pending[-1].msg.seq if cam.pending else cam.last_seq
        last_ts = cam.pending[-1].msg.ts if cam.pending else cam.last_ts
        if last_seq is not None and last_ts is not None and msg.seq <= last_seq:
            if msg.ts <= last_ts:
                self.metrics.duplicates.inc()
                return False
            log.info("camera %s: score seq went back from %d to %d: source restarted", msg.camera,
                     last_seq, msg.seq)
            self._process_ready(cam, now, force=True)
            self._reset(cam, keep_ring=True)
        cam.pending.append(_Pending(msg, now, where))
        cam.last_activity, cam.finished = now, False
        return True

    def _process_ready(self, cam: _Camera, now: float, force: bool = False) -> None:
        """Process the camera's waiting scores whose frame is there or will not come."""
        timeout = self.cfg.join_timeout_s
        while cam.pending:
            p = cam.pending[0]
            seq = p.msg.seq
            have = seq in cam.ring
            gone = cam.ring.newest_seq is not None and cam.ring.newest_seq > seq
            if not (have or gone or force or now - p.arrived >= timeout):
                break
            cam.pending.popleft()
            if not have:
                self.metrics.missing_frames.inc()
            try:
                self._on_score(cam, p.msg)
            except Stopped:
                raise
            except Exception as exc:  # noqa: BLE001 - the per-record guard: counted, logged, skipped
                self._failed(self.scores_topic, p.where, exc, cam.camera)
                return  # the camera's state is started afresh (_reset_broken)

    # ------------------------------------------------------------------ the alert logic
    def _on_score(self, cam: _Camera, msg: ScoreMessage) -> None:
        self.metrics.scores_in.labels(cam.camera).inc()
        entry, evicted = cam.ring.attach(msg.seq, msg.score, msg.anomaly_map, msg.model)
        self.metrics.unscored_frames.inc(sum(e.score is None for e in evicted))
        cam.last_seq, cam.last_ts = msg.seq, msg.ts
        for alert in cam.alerts:  # clips of alerts already running take this frame
            alert.recorder.feed(cam.ring, msg.seq)
        previous_peak = cam.machine.active.peak_seq if cam.machine.active is not None else None
        for t in cam.machine.observe(msg.seq, msg.ts, msg.score, msg.model, msg.provisional):
            self._transition(cam, t)
        active = cam.machine.active
        if active is not None and cam.alerts and active.peak_seq != previous_peak:
            alert = self._open_alert(cam)
            alert.state = active
            if entry is not None and active.peak_seq == msg.seq:
                alert.peak = entry
        self._close_due(cam, msg.seq, msg.ts)

    def _open_alert(self, cam: _Camera) -> _Alert:
        return next(a for a in cam.alerts if not a.ended)

    def _transition(self, cam: _Camera, t: Transition) -> None:
        self.metrics.events.labels(t.kind).inc()
        if t.kind == "start":
            alert = _Alert(t.alert, ClipRecorder(cam.camera, t.alert.start_seq, self.cfg.clip))
            alert.recorder.start(cam.ring, t.seq, t.ts)
            alert.peak = cam.ring.get(t.alert.peak_seq)
            cam.alerts.append(alert)
            self.metrics.open_alerts.inc()
            log.info("alert %s started (camera %s, seq %d, score %.2f)", t.alert.alert_id, cam.camera,
                     t.seq, t.alert.peak_score)
            self._write(cam, alert, "start", t.seq, t.ts, version=t.seq)
        elif t.kind == "update":
            alert = self._open_alert(cam)
            alert.state = t.alert
            alert.peak = cam.ring.get(t.alert.peak_seq) or alert.peak
            self._write(cam, alert, "update", t.seq, t.ts, version=t.seq)
        else:  # end: the clip runs on for the post-roll, then the alert is stored and announced
            alert = self._open_alert(cam)
            alert.state, alert.ended = t.alert, True
            alert.recorder.end(t.ts)
            log.info("alert %s ended (seq %d, peak %.2f); recording %.1f s post-roll", t.alert.alert_id,
                     t.seq, t.alert.peak_score, self.cfg.clip.post_roll_s)

    def _close_due(self, cam: _Camera, seq: int, ts: int) -> None:
        for alert in [a for a in cam.alerts if a.ended]:
            if alert.recorder.post_roll_done(ts):
                self._close(cam, alert, seq)

    def _close(self, cam: _Camera, alert: _Alert, version: int) -> None:
        clip = alert.recorder.finish()
        end_seq, end_ts = alert.state.end_seq, alert.state.end_ts
        assert end_seq is not None and end_ts is not None
        self._write(cam, alert, "end", end_seq, end_ts, version=max(version, end_seq), clip=clip)
        cam.alerts.remove(alert)
        self.metrics.open_alerts.dec()

    def _region(self, alert: _Alert) -> Region | None:
        p = alert.peak
        if p is None or p.amap is None:
            return None
        return hot_region(p.amap, p.width, p.height, self.cfg.clip.region_level)

    def _snapshot(self, alert: _Alert) -> tuple[Region | None, bytes | None]:
        """The peak frame's region and snapshot; without them if they cannot be made."""
        try:
            region = self._region(alert)
            snapshot = (snapshot_jpeg(alert.peak, region, self.cfg.clip.snapshot_quality,
                                      max_pixels=self.cfg.clip.max_frame_pixels)
                        if alert.peak is not None else None)
        except Exception as exc:  # noqa: BLE001 - an alert without a snapshot beats no alert
            log.error("alert %s: no snapshot of frame %s (%r)", alert.state.alert_id,
                      alert.peak.seq if alert.peak is not None else None, exc)
            return None, None
        return region, snapshot

    def _write(self, cam: _Camera, alert: _Alert, state: Literal["start", "update", "end"], seq: int, ts: int,
               version: int, clip: bytes | None = None) -> None:
        region, snapshot = self._snapshot(alert)
        c = alert.recorder
        record = AlertRecord.from_state(
            alert.state, status="closed" if state == "end" else "open", version=version,
            clip_key=self.store.clip_key(alert.state.alert_id),
            snapshot_key=self.store.snapshot_key(alert.state.alert_id) if snapshot is not None else None,
            region=region, clip_ready=clip is not None, clip_frames=c.frames,
            clip_first_seq=c.first_seq, clip_last_seq=c.last_written_seq, timeline=c.timeline,
        )
        event = record.event(state, seq, ts)
        result = self._put(AlertWrite(record, event, clip, snapshot), cam.camera, alert.state.anchor_seq)
        if result is not None and result.publish:
            self._to_publish.append(event)

    def _put(self, write: AlertWrite, camera: str | None = None, anchor_seq: int | None = None
             ) -> PutResult | None:
        """Store a write; while the store cannot be reached (spool full), wait -- never drop.
        A write the store fails (disk full, unwritable, refused) is kept in memory and retried
        (None: kept; its event is published once it is stored)."""
        op = _StoreOp(write=write, camera=camera, anchor_seq=anchor_seq)
        if self._queue:  # in order: behind the writes waiting already
            self._enqueue(op)
            return None

        def failed(exc: BaseException, delay: float) -> None:
            self.metrics.store_unavailable.inc()
            log.error("alert %s cannot be stored (%s); retrying in %.1f s", write.record.alert_id, exc, delay)

        try:
            result = call_with_retry(lambda: self.store.put(write), retry_on=(StoreUnavailableError,),
                                     backoff=_BACKOFF, stop=self.stop, on_failure=failed,
                                     before_retry=self.store.drain)
        except (StoreError, OSError) as exc:
            self._store_failed(exc)
            self._enqueue(op)
            return None
        if result.spooled:
            self.metrics.store_unavailable.inc()
        return result

    # ------------------------------------------------------------------ writes kept in memory
    def _store_failed(self, exc: BaseException) -> None:
        """Count a failed store write; log it at once the first time, then once a minute."""
        self.metrics.store_errors.labels(store_error_reason(exc)).inc()
        now = time.monotonic()
        last = self._store_error_logged_at
        if last is not None and now - last < STORE_ERROR_LOG_INTERVAL_S:
            self._store_errors_quiet += 1
            return
        quiet, self._store_errors_quiet, self._store_error_logged_at = self._store_errors_quiet, 0, now
        log.error("alert store: %s; alerts are kept in memory (%d write(s) waiting) and retried, "
                  "records stay uncommitted%s", exc, len(self._queue) + 1,
                  f" ({quiet} more failure(s) since the last message)" if quiet else "")

    def _enqueue(self, op: _StoreOp) -> None:
        """Keep ``op`` for later; while the queue is full, wait for the store (back-pressure)."""
        failures = 0
        while self._queue and (len(self._queue) >= self.cfg.store_retry_max_writes
                               or self._queue_bytes + op.nbytes > self.cfg.store_retry_max_bytes):
            if self._flush_queue(force=True):
                break
            failures += 1
            if self.stop.wait(_QUEUE_BACKOFF.delay(failures)):
                raise Stopped
        self._queue.append(op)
        self._queue_bytes += op.nbytes
        self.metrics.store_queued.set(len(self._queue))

    def _flush_queue(self, force: bool = False) -> bool:
        """Apply the writes kept in memory, in order (not before their back-off, unless
        ``force``); True once none is left."""
        if not self._queue:
            return True
        if not force and time.monotonic() < self._queue_retry_at:
            return False
        applied = 0
        while self._queue:
            op = self._queue[0]
            try:
                if op.write is not None:
                    result = self.store.put(op.write)
                    if result.publish and op.write.event is not None:
                        self._to_publish.append(op.write.event)
                else:
                    self.store.mark_published(op.alert_id, op.event_ids)
            except (StoreError, OSError) as exc:
                self._store_failed(exc)
                self._queue_failures += 1
                self._queue_retry_at = time.monotonic() + _QUEUE_BACKOFF.delay(self._queue_failures)
                self.metrics.store_queued.set(len(self._queue))
                return False
            self._queue.popleft()
            self._queue_bytes -= op.nbytes
            applied += 1
        self._queue_failures, self._queue_retry_at = 0, 0.0
        self._queue_bytes = 0
        self._store_error_logged_at, self._store_errors_quiet = None, 0
        self.metrics.store_queued.set(0)
        log.info("alert store writable again: %d write(s) kept in memory are stored", applied)
        return True

    def _held_seqs(self) -> dict[str, int]:
        """Per camera, the oldest alert anchor whose write waits in memory."""
        held: dict[str, int] = {}
        for op in self._queue:
            if op.camera is not None and op.anchor_seq is not None:
                held[op.camera] = min(held.get(op.camera, op.anchor_seq), op.anchor_seq)
        return held

    @property
    def queued_writes(self) -> int:
        """Store writes kept in memory (the store could not take them yet)."""
        return len(self._queue)

    # ------------------------------------------------------------------ delivery and commits
    def _deliver(self) -> None:
        """Publish pending events, flush, mark them published, then commit what is safe."""
        if self._to_publish:
            for event in self._to_publish:
                key, value = encode_event(event)
                self.producer.send(self.alerts_topic, key, value)
            try:
                self.producer.flush()
            except PublishError as exc:
                log.warning("alert events not published (%s); retrying with the next batch", exc)
                return
            self.metrics.published.inc(len(self._to_publish))
            by_alert: dict[str, list[str]] = {}
            for event in self._to_publish:
                by_alert.setdefault(event["alert_id"], []).append(event["event_id"])
            self._to_publish = []
            for alert_id, ids in by_alert.items():
                self._mark(alert_id, ids)
        self._commit()

    def _mark(self, alert_id: str, ids: list[str]) -> None:
        op = _StoreOp(alert_id=alert_id, event_ids=ids)
        if self._queue:
            self._enqueue(op)
            return
        try:
            call_with_retry(lambda: self.store.mark_published(alert_id, ids),
                            retry_on=(StoreUnavailableError,), backoff=_BACKOFF, stop=self.stop,
                            on_failure=lambda exc, _d: log.error("publish marks of alert %s not stored (%s); "
                                                                 "retrying", alert_id, exc))
        except (StoreError, OSError) as exc:
            self._store_failed(exc)
            self._enqueue(op)

    def _commit(self) -> None:
        offsets: dict[tuple[str, int], int] = {}
        lows: dict[str, int | None] = {}
        held = self._held_seqs()
        for tp, queue in self._uncommitted.items():
            while queue:
                offset, camera, seq = queue[0]
                if camera is not None:
                    if camera not in lows:
                        cam = self.cameras.get(camera)
                        marks = [m for m in (cam.low_water(self._pre_roll_ms) if cam is not None else None,
                                             held.get(camera)) if m is not None]
                        lows[camera] = min(marks) if marks else None
                    low = lows[camera]
                    if low is not None and seq >= low:
                        break
                queue.popleft()
                offsets[tp] = offset + 1
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except CommitFailedError as exc:
            log.warning("alert offsets not committed (%s); records will be redelivered", exc)
            self._uncommitted.clear()  # the partitions moved: whoever reads them next starts over

    # ------------------------------------------------------------------ ends of streams
    def housekeeping(self, now: float | None = None) -> None:
        """Time-driven work (about once a second): join timeouts, idle cameras, the spool."""
        now = time.monotonic() if now is None else now
        if now - self._last_housekeeping < 0.5:
            return
        self._last_housekeeping = now
        changed = False
        for cam in list(self.cameras.values()):
            if cam.pending:
                self._process_ready(cam, now)
                changed = True
            silent = self.idle_for(cam.camera, now)
            if silent is None:
                continue
            if cam.alerts or cam.machine.active is not None:
                log.info("camera %s silent for %.0f s%s: ending its alerts", cam.camera, silent,
                         "" if self._flowing(now) else " (nothing at all arrived meanwhile)")
                self._finish_camera(cam)
                changed = True
            elif not cam.pending:
                self._drop(cam, "idle")  # nothing of it is open: free its ring
                changed = True  # its records need not wait any more
        self._reset_broken()
        if self._queue and self._flush_queue():
            changed = True
        if self.store.pending():
            try:
                self.store.drain()
            except (StoreError, OSError) as exc:  # the spool's disk: counted, logged, tried again
                self._store_failed(exc)
        self.metrics.spooled.set(self.store.pending())
        if changed or self._to_publish:
            self._deliver()

    def _heard(self, now: float) -> None:
        """A poll brought records: the bus flows; after a quiet spell every silence clock restarts."""
        if self._heard_at is None or now - self._heard_at > self.cfg.idle_timeout_s / 2:
            self._flowing_since = now
        self._heard_at = now
        if self._polls_ok_since is None:
            self._polls_ok_since = now

    def _flowing(self, now: float) -> bool:
        """Records arrived within the last ``idle_timeout_s / 2``."""
        return self._heard_at is not None and now - self._heard_at <= self.cfg.idle_timeout_s / 2

    def idle_for(self, camera: str, now: float | None = None) -> float | None:
        """How long ``camera`` has been silent, if that makes it idle; None if it is not (yet).

        The rule: while the bus flows (records of any camera arrived within
        ``idle_timeout_s / 2``), the camera is idle once it sent nothing for ``idle_timeout_s``,
        counted from its last record or from when records started flowing again after a
        bus-wide quiet spell, whichever is later -- a frozen or unreachable broker silences
        every camera at once, and that is no camera's silence. While nothing arrives at all,
        it is idle only after ``QUIET_BUS_FACTOR * idle_timeout_s`` of polls that returned
        without error (a poll that fails restarts this clock) and with nothing left unread
        (``consumer.lag() == 0``): the only camera of a deployment that died still has its
        alert ended, a broker frozen for less than that ends none.
        """
        cam = self.cameras.get(camera)
        if cam is None:
            return None
        now = time.monotonic() if now is None else now
        limit = self.cfg.idle_timeout_s
        if self._flowing(now):
            silent = now - max(cam.last_activity, self._flowing_since)
            return silent if silent > limit else None
        if self._polls_ok_since is None:
            return None
        silent = now - max(cam.last_activity, self._polls_ok_since)
        if silent <= QUIET_BUS_FACTOR * limit or self.consumer.lag() != 0:
            return None
        return silent

    def _finish_camera(self, cam: _Camera) -> None:
        """End the camera's open alert at its last frame and close every clip with what is there."""
        self._process_ready(cam, time.monotonic(), force=True)
        t = cam.machine.force_end()
        if t is not None:
            self.metrics.events.labels("end").inc()
            alert = self._open_alert(cam)
            alert.state, alert.ended = t.alert, True
        for alert in list(cam.alerts):
            if cam.last_seq is not None:
                alert.recorder.feed(cam.ring, cam.last_seq)
            self._close(cam, alert, cam.last_seq if cam.last_seq is not None else alert.state.start_seq)
        cam.finished = True

    def finish_all(self) -> None:
        """End every camera's alerts (the replays are over) and commit everything."""
        for cam in list(self.cameras.values()):
            self._finish_camera(cam)
        self._deliver()

    def _reset(self, cam: _Camera, keep_ring: bool = False) -> None:
        self._finish_camera(cam)
        cam.machine = AlertLifecycle(cam.camera, cam.scene, cam.machine.settings, cam.source)
        cam.last_seq = cam.last_ts = None
        cam.pending.clear()
        if not keep_ring:
            cam.ring.clear()
            cam.ring.newest_seq = None

    def close(self) -> None:
        """Discard clips being recorded (their records are read again after a restart)."""
        for cam in self.cameras.values():
            for alert in cam.alerts:
                alert.recorder.discard()
        if self._queue:
            log.error("alert store: %d write(s) could not be stored before the worker closed; their "
                      "records were not committed (a Kafka deployment reads them again)", len(self._queue))


def _where(record: Record) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"

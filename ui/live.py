"""What the camera tiles show: each camera's latest scored frame and its score line.

:class:`LiveView` is the state (pure, thread-safe, bounded): frames and scores go in as the
contracts' messages, joined by ``(camera, seq)`` in whichever order they arrive; out come
the camera list, a tile image (the latest scored frame with its heat overlay) and the score
line of the last ``history_s`` seconds of capture time. :class:`LiveFeed` is the I/O edge: a
thread that reads ``vigil.frames`` and ``vigil.scores`` into a view. A record that is not a
valid frame or score is counted by reason and skipped (it never stops the feed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from alerting.clip import render_frame
from alerting.ring import FrameRing, RingEntry
from common.bus import Consumer, Record
from common.messages import FRAMES_TOPIC, SCORES_TOPIC, FrameMessage, MessageError, ScoreMessage, encode_jpeg
from common.role_thread import RoleThread

__all__ = ["LiveFeed", "LiveView"]

log = logging.getLogger(__name__)

#: Frames held per camera while their scores are on the way (the detector is a batch behind).
RING_FRAMES = 48
RING_BYTES = 16 << 20
#: Scores held per camera whose frame has not arrived yet (the topics are read side by side).
PENDING_SCORES = 48
#: Tiles are drawn at most this wide (the page shows them small).
TILE_WIDTH = 640


@dataclass
class _Camera:
    camera: str
    scene: str
    ring: FrameRing = field(default_factory=lambda: FrameRing(RING_FRAMES, RING_BYTES))
    pending: OrderedDict[int, ScoreMessage] = field(default_factory=OrderedDict)
    points: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=20_000))
    latest: RingEntry | None = None  # the newest frame with its score and map
    last_score: ScoreMessage | None = None
    frame_seen: float | None = None  # monotonic time of the last frame received
    tile: tuple[int, bytes] | None = None  # (seq, JPEG) of the last tile drawn


class LiveView:
    """The latest frame, map and score line of up to ``max_cameras`` cameras.

    >>> view = LiveView(history_s=60)
    >>> view.cameras()
    []
    """

    def __init__(self, history_s: float = 300.0, max_cameras: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.history_ms = int(history_s * 1000)
        self.max_cameras = max_cameras
        self._clock = clock
        self._lock = threading.Lock()
        self._cams: OrderedDict[str, _Camera] = OrderedDict()

    def _camera(self, camera: str, scene: str) -> _Camera:
        cam = self._cams.get(camera)
        if cam is None:
            while len(self._cams) >= self.max_cameras:  # the least recently active goes
                self._cams.popitem(last=False)
            cam = self._cams[camera] = _Camera(camera, scene)
        self._cams.move_to_end(camera)
        return cam

    def add_frame(self, msg: FrameMessage) -> None:
        with self._lock:
            cam = self._camera(msg.camera, msg.scene)
            cam.frame_seen = self._clock()
            entry = RingEntry(msg.seq, msg.ts, msg.width, msg.height, msg.jpeg)
            added, _ = cam.ring.add(entry)
            score = cam.pending.pop(msg.seq, None)
            if added and score is not None:
                self._attach(cam, score)

    def add_score(self, msg: ScoreMessage) -> None:
        with self._lock:
            cam = self._camera(msg.camera, msg.scene)
            cam.scene = msg.scene
            if msg.seq not in cam.ring:
                cam.pending[msg.seq] = msg
                while len(cam.pending) > PENDING_SCORES:
                    cam.pending.popitem(last=False)
            else:
                self._attach(cam, msg)
            if cam.last_score is None or msg.seq > cam.last_score.seq:
                cam.last_score = msg
            if not cam.points or msg.ts > cam.points[-1][0]:
                cam.points.append((msg.ts, float(msg.score)))
            while cam.points and cam.points[0][0] < cam.points[-1][0] - self.history_ms:
                cam.points.popleft()

    @staticmethod
    def _attach(cam: _Camera, msg: ScoreMessage) -> None:
        entry, _ = cam.ring.attach(msg.seq, msg.score, msg.anomaly_map, msg.model)
        if entry is not None and (cam.latest is None or entry.seq > cam.latest.seq):
            cam.latest = entry

    def cameras(self) -> list[dict[str, Any]]:
        """One summary per camera, by id: scene, last score and its time, model, whether a
        tile exists, seconds since its last frame (None: none received)."""
        now = self._clock()
        with self._lock:
            out = []
            for cam in sorted(self._cams.values(), key=lambda c: c.camera):
                s = cam.last_score
                out.append({
                    "camera": cam.camera, "scene": cam.scene,
                    "score": None if s is None else round(float(s.score), 4),
                    "ts": None if s is None else s.ts, "seq": None if s is None else s.seq,
                    "model": None if s is None else s.model,
                    "provisional": bool(s is not None and s.provisional),
                    "tile": cam.latest is not None or len(cam.ring) > 0,
                    "seconds_since_frame": None if cam.frame_seen is None else round(now - cam.frame_seen, 3),
                })
            return out

    def points(self, camera: str) -> list[tuple[int, float]]:
        """``(ts, score)`` of the camera's last ``history_s`` seconds (capture time)."""
        with self._lock:
            cam = self._cams.get(camera)
            return list(cam.points) if cam is not None else []

    def tile(self, camera: str) -> bytes | None:
        """The camera's latest scored frame with its heat overlay as JPEG (the newest frame
        without one before its first score); None for a camera not seen."""
        with self._lock:
            cam = self._cams.get(camera)
            if cam is None:
                return None
            entry = cam.latest
            if entry is None and cam.ring.newest_seq is not None:
                entry = cam.ring.get(cam.ring.newest_seq)
            if entry is None:
                return None
            if cam.tile is not None and cam.tile[0] == entry.seq and entry.amap is not None:
                return cam.tile[1]
        width = min(TILE_WIDTH, entry.width)
        size = (width, max(1, round(entry.height * width / entry.width)))
        image = render_frame(entry, overlay=True, size=size)
        if image is None:
            return None
        jpeg = encode_jpeg(image, 85)
        with self._lock:
            if camera in self._cams and entry.amap is not None:
                self._cams[camera].tile = (entry.seq, jpeg)
        return jpeg


class LiveFeed(RoleThread):
    """Reads ``vigil.frames`` and ``vigil.scores`` into a :class:`LiveView` on a thread.

    ``vigil_ui_records_skipped_total{reason}`` counts records that are no valid frame or
    score (``bad_message``) or failed otherwise (``error:<type>``); each is logged and skipped.
    A failure of the bus itself ends the feed with its ``error`` set (logged)."""

    thread_name, role_name = "ui-feed", "ui: the live feed"

    def __init__(self, consumer: Consumer, view: LiveView, stop: threading.Event,
                 registry: CollectorRegistry | None = None) -> None:
        self.consumer, self.view, self.stop = consumer, view, stop
        self.skipped = Counter("vigil_ui_records_skipped", "Frame and score records the review page could "
                               "not use", ["reason"], registry=registry)

    def handle(self, records: list[Record]) -> None:
        for record in records:
            try:
                if record.topic == FRAMES_TOPIC:
                    self.view.add_frame(FrameMessage.from_record(record.key, record.value, record.headers))
                elif record.topic == SCORES_TOPIC:
                    self.view.add_score(ScoreMessage.from_record(record.key, record.value, record.headers))
            except MessageError as exc:
                self.skipped.labels("bad_message").inc()
                log.warning("ui: skipping record %s[%d]@%d: %s", record.topic, record.partition,
                            record.offset, exc)
            except Exception as exc:  # noqa: BLE001 - the per-record guard: counted, logged, skipped
                self.skipped.labels(f"error:{type(exc).__name__}").inc()
                log.warning("ui: skipping record %s[%d]@%d: %r", record.topic, record.partition,
                            record.offset, exc)
        if records:
            self.consumer.commit(records)

    def run(self) -> None:
        while not self.stop.is_set():
            self.handle(self.consumer.poll(max_records=256, timeout_ms=200))


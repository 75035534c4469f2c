"""The detector worker: frames in from ``vigil.frames``, maps and scores out to ``vigil.scores``.

Per micro-batch:

1. poll up to ``max_batch`` frame records, waiting at most ``max_wait_ms`` for the batch to
   fill (frames of all cameras share a batch);
2. parse each record and decode its JPEG (the batch's JPEGs on ``decode_threads`` threads);
   a record that cannot be used (garbage, undecodable JPEG, unsupported schema, a
   malformed or unknown scene) is counted by reason (``vigil_detector_rejected``), logged
   once, skipped and committed with its batch, so it can never stop the worker (a scene
   without a usable checkpoint is logged at most once a minute, with the frames skipped
   since). A live frame older than ``live_max_age_ms`` is skipped too (counted): when
   cameras send more than the detector can take, it scores the newest frames instead of a
   backlog;
3. one encoder pass for the whole batch, then each scene's flow head on its own frames
   (heads come from the scene registry through a memory-bounded cache);
4. publish one :class:`~common.messages.ScoreMessage` per frame, flush, and only then
   commit the batch's offsets (at-least-once: after a crash the batch is scored again and a
   downstream consumer drops duplicates by ``(camera, seq)``).

**Poison records.** Any unexpected exception while handling one record -- parsing it,
loading its scene, decoding its JPEG, its motion features, its score, building its score
message -- is counted as ``error:<ExceptionType>`` in ``vigil_detector_rejected``, logged
once with topic, partition and offset (the first of each type with its traceback), and the
record is skipped and committed. When a batch's model pass fails, its frames are scored one
by one to find the frames that fail alone; if every one does, a synthetic reference frame
tells the record from the model: if the model cannot score that either, the failure is the
model's, not a record's, and it propagates (the worker stops, nothing of the batch is
committed). A batch that fails together but whose frames all succeed alone is logged and
counted (``vigil_detector_batch_failures``). Failures of the bus (poll, publish, commit) are
never attributed to a record.

Steps 3 and 4 run on the thread that calls :meth:`DetectorWorker.run`. With a prefetch
(``prefetch_batches``, by default on CUDA), steps 1, 2 and the commit run on a fetch thread
that owns the consumer, so the next batch is fetched and decoded while the current one is
scored; without, the calling thread does everything in turn.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.bus import BusError, CommitFailedError, Consumer, Producer, Record
from common.ids import InvalidSceneIdError
from common.messages import (
    FRAMES_TOPIC,
    SCORES_TOPIC,
    BadSceneIdError,
    FrameMessage,
    MessageError,
    ScoreMessage,
    jpeg_size,
)
from common.retry import Backoff, Stopped, call_with_retry
from detector.checkpoint import from_checkpoint, model_id
from detector.encoders import Encoder
from detector.learning import LearningPeriod, SiteStore
from detector.model import SceneModel, resize_for_model, to_input
from detector.motion import FlowPair, MotionTracker
from detector.scorer import EncoderMismatchError, check_encoder
from detector.settings import DetectorSettings
from detector.temporal import ScoreHistory
from scenes.checkpoint import CheckpointError
from scenes.registry import SceneRegistry, UnknownSceneError

log = logging.getLogger(__name__)

_BACKOFF = Backoff(0.5, 10.0)  # between attempts to publish a scored batch

#: A scene without a usable checkpoint is warned about at most once per this many seconds.
SCENE_WARNING_INTERVAL_S = 60.0


def error_reason(exc: BaseException) -> str:
    """The rejection reason of an unexpected exception: ``error:<ExceptionType>``."""
    return f"error:{type(exc).__name__}"


class SceneWarnings:
    """Rate limit of the per-scene warnings: the first at once, then at most one per
    ``interval_s`` and scene, carrying the number of frames skipped silently since.
    Thread-safe; remembers at most ``max_scenes`` scenes (least recently warned dropped)."""

    def __init__(self, interval_s: float = SCENE_WARNING_INTERVAL_S, max_scenes: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s, self.max_scenes, self.clock = interval_s, max_scenes, clock
        self._lock = threading.Lock()
        self._last: OrderedDict[tuple[str, str], list[float]] = OrderedDict()  # [logged at, skipped since]

    def due(self, scene: str, reason: str) -> int | None:
        """None: stay quiet (the frame is counted as skipped silently); otherwise log now,
        with this many frames skipped silently since the previous warning."""
        key = (scene, reason)
        with self._lock:
            now = self.clock()
            state = self._last.get(key)
            if state is not None and now - state[0] < self.interval_s:
                state[1] += 1
                return None
            self._last[key] = [now, 0]
            self._last.move_to_end(key)
            while len(self._last) > self.max_scenes:
                self._last.popitem(last=False)
            return 0 if state is None else int(state[1])


class DetectorMetrics:
    """The detector's Prometheus metrics, on the role's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.frames_in = Counter("vigil_detector_frames_in", "frame records polled", registry=registry)
        self.frames_scored = Counter("vigil_detector_frames_scored", "score records published",
                                     ["camera"], registry=registry)
        self.rejected = Counter("vigil_detector_rejected", "frame records skipped, by reason",
                                ["reason"], registry=registry)
        self.provisional = Counter("vigil_detector_provisional_scores",
                                   "scores published during the camera's learning period", ["camera"],
                                   registry=registry)
        self.stale = Counter("vigil_detector_stale_live_frames",
                             "live frames skipped because the detector was behind", ["camera"],
                             registry=registry)
        self.batch_size = Histogram("vigil_detector_batch_size", "frames per micro-batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=registry)
        self.latency = Histogram("vigil_detector_latency_seconds", "frame capture to score published",
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=registry)
        self.batch_seconds = Histogram("vigil_detector_batch_seconds", "model time per micro-batch",
                                       registry=registry)
        self.models_loaded = Gauge("vigil_detector_models_loaded", "scene heads in the cache",
                                   registry=registry)
        self.last_batch = Gauge("vigil_detector_last_batch_timestamp", "time of the last batch",
                                registry=registry)
        self.publish_errors = Counter("vigil_detector_publish_errors", "failed attempts to publish a "
                                      "scored batch (retried)", registry=registry)
        self.batch_failures = Counter("vigil_detector_batch_failures", "model passes that failed for a "
                                      "batch whose frames then scored one by one", registry=registry)
        self.consumer_lag = Gauge("vigil_detector_consumer_lag", "frame records waiting in this "
                                  "worker's partitions", registry=registry)


@dataclass
class LoadedScene:
    model: SceneModel
    model_id: str
    bytes: int


class SceneCache:
    """Scene heads loaded from the registry, least recently used evicted beyond the bounds."""

    def __init__(self, registry: SceneRegistry, encoder: Encoder, device: torch.device,
                 max_models: int, max_bytes: int) -> None:
        self.registry, self.encoder, self.device = registry, encoder, device
        self.max_models, self.max_bytes = max_models, max_bytes
        self.loaded: OrderedDict[str, LoadedScene] = OrderedDict()

    def get(self, scene: str) -> LoadedScene:
        if scene in self.loaded:
            self.loaded.move_to_end(scene)
            return self.loaded[scene]
        stored = self.registry.load(scene)
        model = from_checkpoint(stored)
        check_encoder(model, self.encoder, scene)
        model.head.to(self.device).eval()
        size = sum(p.numel() * p.element_size() for p in model.head.parameters())
        entry = LoadedScene(model, model_id(scene, stored), size)
        self.loaded[scene] = entry
        while len(self.loaded) > 1 and (
            len(self.loaded) > self.max_models or sum(e.bytes for e in self.loaded.values()) > self.max_bytes
        ):
            evicted, _ = self.loaded.popitem(last=False)
            log.info("scene %s evicted from the model cache", evicted)
        return entry


def _resize_map(amap: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(amap, (size, size), interpolation=cv2.INTER_AREA)


class BatchScorer:
    """The detector's model step: decoded frames of any scenes -> score messages."""

    def __init__(self, encoder: Encoder, registry: SceneRegistry, settings: DetectorSettings) -> None:
        self.settings = settings
        self.device = torch.device(settings.device)
        self.encoder = encoder.to(self.device).eval()
        self.half = settings.half and self.device.type == "cuda"
        self.cache = SceneCache(registry, self.encoder, self.device, settings.cache_models,
                                settings.cache_mb * 2**20)
        # Streaming state of scenes with a motion channel: per loaded model, each camera's
        # last frame (MotionTracker). Dropped with the model when the cache evicts it.
        self.motion: dict[str, MotionTracker] = {}
        # Likewise, per loaded model with a score window, each camera's run of scores.
        self.history: dict[str, ScoreHistory] = {}
        # Each camera's learning period (detector.learning): its scale and provisional flag.
        state_dir = settings.learning.state_dir
        self.learning = LearningPeriod(settings.learning, SiteStore(state_dir) if state_dir else None)
        self.batch_failures = 0  # model passes that failed for a batch but not for its frames
        self._flow_pool: ThreadPoolExecutor | None = None  # motion features' optical flow; made on first use

    def _motion(self, frames: list[tuple[FrameMessage, np.ndarray, LoadedScene]]
                ) -> list[np.ndarray | Future | None | Exception]:
        """Each frame's motion features, pending: None (no motion channel, or a gap), the
        features or a future of them (their optical flow runs on ``flow_threads`` threads,
        during the encoder pass where ``flow_overlap`` says so), or the exception that
        stopped them. The cameras' runs are updated here, in record order: a camera's frames
        are in order within a partition and a batch keeps that order. :meth:`_resolve`
        waits for the futures."""
        out: list[np.ndarray | Future | None | Exception] = []
        for msg, image, scene in frames:
            motion = scene.model.motion
            if motion is None:
                out.append(None)
                continue
            tracker = self.motion.setdefault(scene.model_id, MotionTracker(motion.settings))
            try:
                pair = tracker.pair(msg.camera, msg.seq, image, msg.ts)
                out.append(None if pair is None else self._flow(pair))
            except Exception as exc:  # noqa: BLE001 - this frame's failure, reported with its record
                out.append(exc)
        return out

    def _flow(self, pair: FlowPair) -> Future | np.ndarray:
        """A frame's motion features computed on the flow threads (here, when there is one
        and it would be waited for at once)."""
        if self.settings.flow_workers == 1 and not self.settings.overlap_flow:
            return pair.features()
        if self._flow_pool is None:
            self._flow_pool = ThreadPoolExecutor(self.settings.flow_workers,
                                                 thread_name_prefix="detector-flow")
        return self._flow_pool.submit(pair.features)

    @staticmethod
    def _resolve(motion: list[np.ndarray | Future | None | Exception], idx: Iterable[int],
                 out: list[ScoreMessage | Exception | None]) -> None:
        """Wait for the pending motion features of frames ``idx``: each becomes its features,
        or, if its flow failed, that frame's exception in ``out``."""
        for i in idx:
            pending = motion[i]
            if isinstance(pending, Future):
                try:
                    motion[i] = pending.result()
                except Exception as exc:  # noqa: BLE001 - this frame's failure, reported with its record
                    motion[i], out[i] = exc, exc

    def close(self) -> None:
        """Stop the flow threads (the scorer can still be used: they start again when needed)."""
        if self._flow_pool is not None:
            self._flow_pool.shutdown(wait=True)
            self._flow_pool = None

    def _forget_evicted(self) -> None:
        """Drop the per-camera state (motion, score runs) of models the cache has evicted."""
        loaded = {e.model_id for e in self.cache.loaded.values()}
        for state in (self.motion, self.history):
            for gone in [m for m in state if m not in loaded]:
                del state[gone]

    def _encode(self, size: int, images_bgr: list[np.ndarray]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One encoder pass over images of one input size: the input batch and its features."""
        images = to_input(images_bgr, size).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.half):
            features = [f.float() for f in self.encoder(images)]
        return images, features

    def _heads(self, images: torch.Tensor, features: list[torch.Tensor],
               items: list[tuple[np.ndarray, LoadedScene, np.ndarray | None]]
               ) -> list[tuple[float, float, np.ndarray]]:
        """Each scene's head on its rows of an encoded batch: ``(score, raw, map)`` per item."""
        by_scene: dict[str, list[int]] = defaultdict(list)
        for j, (_image, scene, _motion) in enumerate(items):
            by_scene[scene.model_id].append(j)
        out: list[tuple[float, float, np.ndarray]] = [(0.0, 0.0, np.zeros(0))] * len(items)
        for rows in by_scene.values():
            loaded = items[rows[0]][1]
            result = loaded.model.score([f[rows] for f in features],
                                        images[rows] if loaded.model.needs_images else None,
                                        [items[j][2] for j in rows])
            maps = result.maps.float().cpu().numpy()
            for r, j in enumerate(rows):
                out[j] = (float(result.scores[r]), float(result.raw[r]), maps[r])
        return out

    def _model_pass(self, size: int, items: list[tuple[np.ndarray, LoadedScene, np.ndarray | None]]
                    ) -> list[tuple[float, float, np.ndarray]]:
        """One encoder pass over images of one input size, then each scene's head on its
        rows: ``(score, raw, map)`` per item."""
        return self._heads(*self._encode(size, [image for image, _scene, _motion in items]), items)

    def _message(self, msg: FrameMessage, scene: LoadedScene, scored: tuple[float, float, np.ndarray]
                 ) -> ScoreMessage:
        score, raw, amap = scored
        settings = scene.model.settings
        if settings.window > 1:  # the camera's run of scores (detector.temporal), in record order
            history = self.history.get(scene.model_id)
            if history is None:
                history = self.history[scene.model_id] = settings.history()
            score = history.smooth(msg.camera, msg.seq, score, msg.ts)
        cal = scene.model.calibration
        scale, provisional = self.learning.observe(
            msg.camera, scene.model_id, msg.seq, msg.ts, score, cal.false_alarm_rate if cal else 0.001)
        if scale != 1.0:  # a learned camera threshold; otherwise nothing to rescale per frame
            score, amap = score / scale, amap / scale
        return ScoreMessage(
            camera=msg.camera, scene=msg.scene, seq=msg.seq, ts=msg.ts, source=msg.source,
            score=score, raw=raw, model=scene.model_id,
            latency_ms=max(0.0, time.time() * 1000 - msg.ts),
            anomaly_map=_resize_map(amap, self.settings.map_size),
            map_encoding=self.settings.map_encoding, provisional=provisional,
        )

    def _model_works(self, size: int, scenes: list[LoadedScene]) -> bool:
        """Whether each scene's model still scores a plain grey reference frame (no motion)."""
        grey = np.full((size, size, 3), 128, np.uint8)
        try:
            self._model_pass(size, [(grey, scene, None) for scene in scenes])
        except Exception:  # noqa: BLE001 - the answer is "no"; the caller raises the frames' error
            log.exception("detector: the model cannot score a reference frame either")
            return False
        return True

    @torch.no_grad()
    def score(self, frames: list[tuple[FrameMessage, np.ndarray, LoadedScene]]
              ) -> list[ScoreMessage | Exception]:
        """One encoder pass per input size, then each scene's head on its frames. Returns, in
        the frames' order, each frame's score message or the exception that stopped that
        frame alone (see the module's "Poison records"); raises when the model itself fails."""
        self._forget_evicted()
        motion = self._motion(frames)  # their flows run on the flow threads
        out: list[ScoreMessage | Exception | None] = [m if isinstance(m, Exception) else None
                                                      for m in motion]
        if not self.settings.overlap_flow:  # wait now, not during the encoder pass
            self._resolve(motion, range(len(frames)), out)
        by_size: dict[int, list[int]] = defaultdict(list)
        for i, (_msg, _img, scene) in enumerate(frames):
            if out[i] is None:
                by_size[scene.model.input_size].append(i)

        def item(i: int) -> tuple[np.ndarray, LoadedScene, np.ndarray | None]:
            m = motion[i]
            return frames[i][1], frames[i][2], m if isinstance(m, np.ndarray) else None

        for size, idx in by_size.items():
            encoded: tuple[torch.Tensor, list[torch.Tensor]] | Exception
            try:
                encoded = self._encode(size, [frames[i][1] for i in idx])
            except Exception as exc:  # noqa: BLE001 - retried frame by frame below
                encoded = exc
            self._resolve(motion, idx, out)
            keep = [r for r, i in enumerate(idx) if out[i] is None]  # a failed flow drops its frame
            idx = [idx[r] for r in keep]
            if not idx:
                continue
            try:
                if isinstance(encoded, Exception):
                    raise encoded
                images, features = encoded
                if len(keep) < len(images):
                    images, features = images[keep], [f[keep] for f in features]
                results = self._heads(images, features, [item(i) for i in idx])
            except Exception as exc:
                results = self._one_by_one(size, idx, item, exc, out)
            for i, scored in zip(idx, results, strict=True):
                if scored is None:
                    continue
                try:
                    out[i] = self._message(frames[i][0], frames[i][2], scored)
                except Exception as exc:  # noqa: BLE001 - e.g. a non-finite score: this frame's failure
                    out[i] = exc
        return [o if o is not None else RuntimeError("frame not scored") for o in out]

    def _one_by_one(self, size: int, idx: list[int],
                    item: Callable[[int], tuple[np.ndarray, LoadedScene, np.ndarray | None]],
                    batch_exc: Exception, out: list[ScoreMessage | Exception | None]
                    ) -> list[tuple[float, float, np.ndarray] | None]:
        """After a failed model pass: each frame alone. Frames that fail alone get their
        exception in ``out``; if all do and the model cannot score a reference frame either,
        ``batch_exc`` propagates (the model is broken, not a record)."""
        results: list[tuple[float, float, np.ndarray] | None] = []
        failed: list[int] = []
        for i in idx:
            try:
                (scored,) = self._model_pass(size, [item(i)])
            except Exception as exc:  # noqa: BLE001 - decided below: the record's or the model's
                out[i] = exc
                failed.append(i)
                results.append(None)
            else:
                results.append(scored)
        if not failed:
            self.batch_failures += 1
            log.error("detector: the model pass over %d frames failed (%r), each frame alone succeeded",
                      len(idx), batch_exc)
        elif len(failed) == len(idx):
            scenes = list({item(i)[1].model_id: item(i)[1] for i in idx}.values())
            if not self._model_works(size, scenes):
                raise batch_exc
        return results


@dataclass
class PreparedBatch:
    """Polled records (all of them, for the commit) and the frames among them to score, with
    the record each frame came from (``sources``, to report a frame's failure)."""

    records: list[Record]
    frames: list[tuple[FrameMessage, np.ndarray, LoadedScene]]
    sources: list[Record] = field(default_factory=list)


class DetectorWorker:
    """Consumes frame records, scores them per scene, publishes score records.

    With a prefetch (``prefetch_batches``; by default on CUDA), :meth:`run` overlaps the bus
    with the model: a fetch thread that owns the consumer polls, parses and decodes the next
    micro-batch and commits finished ones while the calling thread scores the current one
    and publishes its scores. Without (by default on a CPU, where the model's own threads
    already keep every core busy and a third busy thread only stalls them), the calling
    thread runs the steps one after the other (:meth:`process`).
    """

    def __init__(self, consumer: Consumer, producer: Producer, encoder: Encoder, registry: SceneRegistry,
                 settings: DetectorSettings, metrics: DetectorMetrics, stop: threading.Event | None = None,
                 frames_topic: str = FRAMES_TOPIC, scores_topic: str = SCORES_TOPIC) -> None:
        self.consumer, self.producer = consumer, producer
        self.settings, self.metrics = settings, metrics
        self.stop = stop or threading.Event()
        self.frames_topic, self.scores_topic = frames_topic, scores_topic
        self.scorer = BatchScorer(encoder, registry, settings)
        self.cache = self.scorer.cache
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._decoder_pool: ThreadPoolExecutor | None = None  # made on first use
        self.scene_warnings = SceneWarnings()
        self._traced: set[str] = set()  # error reasons already logged with a traceback
        self._batch_failures_seen = 0

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        """Score until ``stop`` is set. The model step runs on the calling thread: give it the
        thread that first used torch (the main thread of ``vigil detect``). libgomp runs the
        many small operations of a flow head markedly slower on a thread that starts its
        parallel regions after another thread has (1.4 instead of 2 busy cores measured on
        two cores), so the fetching, not the model, goes to a new thread."""
        self._running = True
        log.info("detector worker started (device %s, batch %d, wait %d ms, prefetch %d)",
                 self.scorer.device, self.settings.batch_size, self.settings.max_wait_ms,
                 self.settings.prefetch)
        try:
            if self.settings.prefetch == 0:
                while not self.stop.is_set():
                    records = self.poll_batch()
                    if records:
                        self.process(records, retry=True)
            else:
                self._run_pipelined()
        finally:
            if self._decoder_pool is not None:
                self._decoder_pool.shutdown(wait=True)
                self._decoder_pool = None
            self.scorer.close()
            self._running = False

    def _run_pipelined(self) -> None:
        ready: queue.Queue[PreparedBatch] = queue.Queue(maxsize=self.settings.prefetch)
        published: queue.Queue[list[Record]] = queue.Queue()
        model_done = threading.Event()
        fetch_errors: list[BaseException] = []
        fetch = threading.Thread(target=self._fetch_loop, args=(ready, published, model_done, fetch_errors),
                                 name="detector-fetch", daemon=True)
        fetch.start()
        try:
            while not self.stop.is_set() and fetch.is_alive():
                try:
                    batch = ready.get(timeout=0.05)
                except queue.Empty:
                    continue
                if self.publish(batch, retry=True):
                    published.put(batch.records)
        finally:
            # Batches still queued are not committed: they are redelivered (at-least-once).
            model_done.set()
            fetch.join()
        if fetch_errors:
            raise fetch_errors[0]

    def _fetch_loop(self, ready: queue.Queue[PreparedBatch], published: queue.Queue[list[Record]],
                    model_done: threading.Event, errors: list[BaseException]) -> None:
        """Owns the consumer: polls, prepares and queues batches, commits published ones."""
        try:
            while not self.stop.is_set() and not model_done.is_set():
                self._commit_published(published)
                records = self.poll_batch()
                if not records:
                    continue
                batch = self.prepare(records)
                while not self.stop.is_set() and not model_done.is_set():
                    try:
                        ready.put(batch, timeout=0.05)
                        break
                    except queue.Full:
                        self._commit_published(published)  # the model finished one meanwhile
            model_done.wait()  # the model step may still be publishing its last batch
            self._commit_published(published)
        except Exception as exc:  # the bus failed: the model loop stops too
            errors.append(exc)
            log.exception("detector: fetching frames failed; the worker stops")

    def _commit_published(self, published: queue.Queue[list[Record]]) -> None:
        records: list[Record] = []
        while True:
            try:
                records += published.get_nowait()
            except queue.Empty:
                break
        if records:
            self.commit(records)

    def start(self) -> DetectorWorker:
        """Run the worker on a background thread (embedded use, tests); see :meth:`run`."""
        self._thread = threading.Thread(target=self._thread_main, name="detector", daemon=True)
        self._running = True
        self._thread.start()
        return self

    def _thread_main(self) -> None:
        try:
            self.run()
        except Exception as exc:
            self.error = exc
            log.exception("detector worker failed")
        finally:
            self._running = False

    @property
    def alive(self) -> bool:
        """The worker runs (it ends when stopped or when its model step or bus failed)."""
        return self._running

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def poll_batch(self) -> list[Record]:
        """Up to ``batch_size`` records, waiting at most ``max_wait_ms`` once the first arrived."""
        s = self.settings
        records = self.consumer.poll(max_records=s.batch_size, timeout_ms=200)
        deadline = time.monotonic() + s.max_wait_ms / 1000
        while records and len(records) < s.batch_size and not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            records += self.consumer.poll(max_records=s.batch_size - len(records), timeout_ms=left * 1000)
        return records

    def _reject(self, reason: str, record: Record, detail: object, scene: str | None = None) -> None:
        """Count a skipped record by reason and log it: once per record, except for a scene
        without a usable checkpoint (``scene`` given): once per scene and minute."""
        self.metrics.rejected.labels(reason).inc()
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        if scene is not None:
            since = self.scene_warnings.due(scene, reason)
            if since is None:
                return
            log.warning("skipping frames of scene %s (record %s): %s: %s; %s", scene, where, reason, detail,
                        f"{since} more frame(s) skipped since the last warning" if since
                        else f"repeated at most once per {self.scene_warnings.interval_s:.0f} s")
            return
        trace = reason.startswith("error:") and reason not in self._traced
        if trace:
            self._traced.add(reason)
        log.warning("skipping record %s: %s: %s", where, reason, detail,
                    exc_info=detail if trace and isinstance(detail, BaseException) else None)

    def _stale(self, msg: FrameMessage) -> bool:
        """A live frame the detector reaches too late is skipped: a live view wants the newest
        frames with bounded delay, not a growing backlog. Replays are never skipped."""
        limit = self.settings.live_max_age_ms
        if msg.source != "live" or limit is None or time.time() * 1000 - msg.ts <= limit:
            return False
        self.metrics.stale.labels(msg.camera).inc()
        return True

    def prepare(self, records: list[Record]) -> PreparedBatch:
        """Parse and decode polled records; bad and stale ones are counted and left out.
        The JPEGs of a batch are decoded and resized to the model input in parallel
        (``decode_threads``)."""
        self.metrics.frames_in.inc(len(records))
        accepted: list[tuple[Record, FrameMessage, LoadedScene]] = []
        for record in records:
            try:
                item = self._accept(record)
            except Exception as exc:  # noqa: BLE001 - the per-record guard: counted, logged, skipped
                self._reject(error_reason(exc), record, exc)
                continue
            if item is not None:
                accepted.append(item)
        self.metrics.models_loaded.set(len(self.cache.loaded))
        frames: list[tuple[FrameMessage, np.ndarray, LoadedScene]] = []
        sources: list[Record] = []
        for (record, msg, scene), image in zip(accepted, self._decode_all(accepted), strict=True):
            if isinstance(image, MessageError):
                self._reject("bad_message", record, image)
            elif isinstance(image, Exception):
                self._reject(error_reason(image), record, image)
            else:
                frames.append((msg, image, scene))
                sources.append(record)
        return PreparedBatch(records, frames, sources)

    def _accept(self, record: Record) -> tuple[Record, FrameMessage, LoadedScene] | None:
        """Parse one record and find its scene's model; None if it is skipped (counted)."""
        try:
            msg = FrameMessage.from_record(record.key, record.value, record.headers)
        except BadSceneIdError as exc:
            self._reject("bad_scene", record, exc)
            return None
        except MessageError as exc:
            self._reject("bad_message", record, exc)
            return None
        if self._stale(msg):
            return None
        try:
            scene = self.cache.get(msg.scene)
        except InvalidSceneIdError as exc:  # the frame contract refuses these first
            self._reject("bad_scene", record, exc)
            return None
        except UnknownSceneError as exc:
            self._reject("unknown_scene", record, exc, scene=msg.scene)
            return None
        except (CheckpointError, EncoderMismatchError) as exc:
            self._reject("bad_checkpoint", record, exc, scene=msg.scene)
            return None
        except Exception as exc:  # noqa: BLE001 - a scene that cannot be loaded: per scene, like the above
            self._reject(error_reason(exc), record, exc, scene=msg.scene)
            return None
        return record, msg, scene

    def _decode_all(self, accepted: list[tuple[Record, FrameMessage, LoadedScene]]
                    ) -> list[np.ndarray | Exception]:
        def decode(item: tuple[Record, FrameMessage, LoadedScene]) -> np.ndarray | Exception:
            _record, msg, scene = item
            try:
                width, height = jpeg_size(msg.jpeg)
                if width * height > self.settings.max_frame_pixels:
                    return MessageError(f"JPEG declares {width}x{height} pixels, over max_frame_pixels "
                                        f"({self.settings.max_frame_pixels}): not decoded")
                # Resized here, off the model step (the same function the model step would use).
                return resize_for_model(msg.image(), scene.model.input_size)
            except Exception as exc:  # noqa: BLE001 - this record's failure, reported with it
                return exc

        if len(accepted) < 2 or self.settings.decoders < 2:
            return [decode(item) for item in accepted]
        if self._decoder_pool is None:
            self._decoder_pool = ThreadPoolExecutor(self.settings.decoders,
                                                    thread_name_prefix="detector-decode")
        return list(self._decoder_pool.map(decode, accepted))

    def publish(self, batch: PreparedBatch, *, retry: bool = False) -> bool:
        """Score a prepared batch and publish its scores (flushed). On a bus failure it raises
        :class:`~common.bus.BusError`, or with ``retry`` publishes the same scores again with
        capped back-off until it succeeds (True) or the worker is stopped (False)."""
        if not batch.frames:
            return True
        t0 = time.perf_counter()
        results = self.scorer.score(batch.frames)
        self.metrics.batch_seconds.observe(time.perf_counter() - t0)
        self.metrics.batch_size.observe(len(batch.frames))
        if self.scorer.batch_failures != self._batch_failures_seen:
            self.metrics.batch_failures.inc(self.scorer.batch_failures - self._batch_failures_seen)
            self._batch_failures_seen = self.scorer.batch_failures
        sources = batch.sources or [None] * len(batch.frames)  # type: ignore[list-item]
        scored: list[ScoreMessage] = []
        wire: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
        for record, result in zip(sources, results, strict=True):
            failure: Exception
            if isinstance(result, Exception):
                failure = result
            else:
                try:
                    wire.append(result.to_record())
                except Exception as exc:  # noqa: BLE001 - the per-record guard: counted, logged, skipped
                    failure = exc
                else:
                    scored.append(result)
                    continue
            if record is None:  # a batch built without its records: nothing to attribute it to
                raise failure
            self._reject(error_reason(failure), record, failure)

        def send_all() -> None:
            for out in wire:
                self.producer.send(self.scores_topic, *out)
            self.producer.flush()

        def failed(exc: BaseException, delay: float) -> None:
            self.metrics.publish_errors.inc()
            log.error("detector: publishing %d scores to %s failed (%s); retrying in %.1f s",
                      len(scored), self.scores_topic, exc, delay)

        try:
            call_with_retry(send_all, retry_on=(BusError,), backoff=_BACKOFF, stop=self.stop,
                            attempts=None if retry else 1, on_failure=failed)
        except Stopped:
            return False
        now_ms = time.time() * 1000
        for out in scored:
            self.metrics.frames_scored.labels(out.camera).inc()
            if out.provisional:
                self.metrics.provisional.labels(out.camera).inc()
            self.metrics.latency.observe(max(0.0, now_ms - out.ts) / 1000)
        return True

    def commit(self, records: list[Record]) -> None:
        """Commit offsets of records whose scores are published (and refresh the lag gauge)."""
        try:
            self.consumer.commit(records)
        except CommitFailedError as exc:  # partitions moved; the batch will be redelivered
            log.warning("offset commit failed (%s); records will be redelivered", exc)
        self.metrics.last_batch.set_to_current_time()
        lag = self.consumer.lag()
        if lag is not None:
            self.metrics.consumer_lag.set(lag)

    def process(self, records: list[Record], *, retry: bool = False) -> int:
        """Score, publish, flush and commit one micro-batch, one step after the other; returns
        frames scored. A publishing failure raises and commits nothing, or with ``retry``
        publishes again until it succeeds (nothing is committed if the worker is stopped
        meanwhile; 0 is returned then)."""
        batch = self.prepare(records)
        if not self.publish(batch, retry=retry):
            return 0
        self.commit(records)
        return len(batch.frames)

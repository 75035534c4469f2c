"""The detector worker: frames in from ``vigil.frames``, maps and scores out to ``vigil.scores``.

Per micro-batch:

1. poll up to ``max_batch`` frame records, waiting at most ``max_wait_ms`` for the batch to
   fill (frames of all cameras share a batch);
2. parse each record and decode its JPEG (the batch's JPEGs on ``decode_threads`` threads);
   a record that cannot be used (garbage, undecodable JPEG, unsupported schema, a
   malformed or unknown scene) is counted by reason (``vigil_detector_rejected``), logged
   once, skipped and committed with its batch, so it can never stop the worker;
   A live frame older than ``live_max_age_ms`` is skipped too (counted): when cameras send
   more than the detector can take, it scores the newest frames instead of a backlog;
3. one encoder pass for the whole batch, then each scene's flow head on its own frames
   (heads come from the scene registry through a memory-bounded cache);
4. publish one :class:`~common.messages.ScoreMessage` per frame, flush, and only then
   commit the batch's offsets (at-least-once: after a crash the batch is scored again and a
   downstream consumer drops duplicates by ``(camera, seq)``).

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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
)
from common.retry import Backoff, Stopped, call_with_retry
from detector.checkpoint import from_checkpoint, model_id
from detector.encoders import Encoder
from detector.model import SceneModel, resize_for_model, to_input
from detector.motion import MotionTracker
from detector.scorer import EncoderMismatchError, check_encoder
from detector.settings import DetectorSettings
from scenes.checkpoint import CheckpointError
from scenes.registry import SceneRegistry, UnknownSceneError

log = logging.getLogger(__name__)

_BACKOFF = Backoff(0.5, 10.0)  # between attempts to publish a scored batch


class DetectorMetrics:
    """The detector's Prometheus metrics, on the role's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.frames_in = Counter("vigil_detector_frames_in", "frame records polled", registry=registry)
        self.frames_scored = Counter("vigil_detector_frames_scored", "score records published",
                                     ["camera"], registry=registry)
        self.rejected = Counter("vigil_detector_rejected", "frame records skipped, by reason",
                                ["reason"], registry=registry)
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

    def _motion(self, frames: list[tuple[FrameMessage, np.ndarray, LoadedScene]]) -> list[np.ndarray | None]:
        """Each frame's motion features (None: no motion channel, or a gap), in record order:
        a camera's frames are in order within a partition and a batch keeps that order."""
        loaded = {e.model_id for e in self.cache.loaded.values()}
        for gone in [m for m in self.motion if m not in loaded]:
            del self.motion[gone]
        out: list[np.ndarray | None] = []
        for msg, image, scene in frames:
            motion = scene.model.motion
            if motion is None:
                out.append(None)
                continue
            tracker = self.motion.setdefault(scene.model_id, MotionTracker(motion.settings))
            out.append(tracker.features(msg.camera, msg.seq, image, msg.ts))
        return out

    @torch.no_grad()
    def score(self, frames: list[tuple[FrameMessage, np.ndarray, LoadedScene]]) -> list[ScoreMessage]:
        """One encoder pass per input size, then each scene's head on its frames."""
        motion = self._motion(frames)
        by_size: dict[int, list[int]] = defaultdict(list)
        for i, (_msg, _img, scene) in enumerate(frames):
            by_size[scene.model.input_size].append(i)
        out: list[ScoreMessage | None] = [None] * len(frames)
        for size, idx in by_size.items():
            images = to_input([frames[i][1] for i in idx], size).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.half):
                features = [f.float() for f in self.encoder(images)]
            by_scene: dict[str, list[int]] = defaultdict(list)
            for j, i in enumerate(idx):
                by_scene[frames[i][2].model_id].append(j)
            for rows in by_scene.values():
                loaded = frames[idx[rows[0]]][2]
                result = loaded.model.score([f[rows] for f in features],
                                            images[rows] if loaded.model.needs_images else None,
                                            [motion[idx[j]] for j in rows])
                maps = result.maps.float().cpu().numpy()
                for r, j in enumerate(rows):
                    msg = frames[idx[j]][0]
                    out[idx[j]] = ScoreMessage(
                        camera=msg.camera, scene=msg.scene, seq=msg.seq, ts=msg.ts, source=msg.source,
                        score=float(result.scores[r]), raw=float(result.raw[r]), model=loaded.model_id,
                        latency_ms=max(0.0, time.time() * 1000 - msg.ts),
                        anomaly_map=_resize_map(maps[r], self.settings.map_size),
                        map_encoding=self.settings.map_encoding,
                    )
        return [o for o in out if o is not None]


@dataclass
class PreparedBatch:
    """Polled records (all of them, for the commit) and the frames among them to score."""

    records: list[Record]
    frames: list[tuple[FrameMessage, np.ndarray, LoadedScene]]


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

    def _reject(self, reason: str, record: Record, detail: object) -> None:
        self.metrics.rejected.labels(reason).inc()
        log.warning("skipping record %s[%d]@%d: %s: %s", record.topic, record.partition, record.offset,
                    reason, detail)

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
                msg = FrameMessage.from_record(record.key, record.value, record.headers)
            except BadSceneIdError as exc:
                self._reject("bad_scene", record, exc)
                continue
            except MessageError as exc:
                self._reject("bad_message", record, exc)
                continue
            if self._stale(msg):
                continue
            try:
                scene = self.cache.get(msg.scene)
            except InvalidSceneIdError as exc:  # the frame contract refuses these first
                self._reject("bad_scene", record, exc)
                continue
            except UnknownSceneError as exc:
                self._reject("unknown_scene", record, exc)
                continue
            except (CheckpointError, EncoderMismatchError) as exc:
                self._reject("bad_checkpoint", record, exc)
                continue
            accepted.append((record, msg, scene))
        self.metrics.models_loaded.set(len(self.cache.loaded))
        frames: list[tuple[FrameMessage, np.ndarray, LoadedScene]] = []
        for (record, msg, scene), image in zip(accepted, self._decode_all(accepted), strict=True):
            if isinstance(image, MessageError):
                self._reject("bad_message", record, image)
            else:
                frames.append((msg, image, scene))
        return PreparedBatch(records, frames)

    def _decode_all(self, accepted: list[tuple[Record, FrameMessage, LoadedScene]]
                    ) -> list[np.ndarray | MessageError]:
        def decode(item: tuple[Record, FrameMessage, LoadedScene]) -> np.ndarray | MessageError:
            _record, msg, scene = item
            try:
                # Resized here, off the model step (the same function the model step would use).
                return resize_for_model(msg.image(), scene.model.input_size)
            except MessageError as exc:
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
        scored = self.scorer.score(batch.frames)
        self.metrics.batch_seconds.observe(time.perf_counter() - t0)
        self.metrics.batch_size.observe(len(batch.frames))

        def send_all() -> None:
            for out in scored:
                self.producer.send(self.scores_topic, *out.to_record())
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

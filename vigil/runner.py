"""Wiring the roles together: which bus, which workers, metrics and shutdown.

`vigil run` starts every role (ingest per camera, detector, score recorder, alerting) as
threads on one bus -- the in-process bus by default, Kafka when ``bus.kind: kafka``.
`vigil ingest`, `vigil detect` and `vigil alert` start one role each. The roles themselves
live in their packages (:mod:`streamer.ingest`, :mod:`detector.worker`,
:mod:`vigil.recorder`, :mod:`alerting.worker`); this module only connects them.

Before any role starts, :meth:`Pipeline.start` checks the set-up and refuses a broken one
with a :class:`~vigil.config.SetupError` (one line, naming the camera and scene):

* every replay (video file, frame folder) is opened: a missing file or one that is no
  video is a :class:`~streamer.video.SourceError` naming the camera;
* a process that detects checks every camera's scene against the scene registry and every
  checkpoint in it (:func:`scene_problems`): a missing, broken or mismatched scene is an
  error, unless ``detector.allow_missing_scenes`` says to start anyway (then each is a
  warning, and the frames of such a scene are skipped and counted by the detector).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from alerting.events import ALERTS_TOPIC
from alerting.store import AlertStore, open_store
from alerting.worker import AlertMetrics, AlertWorker
from common.bus import Bus, InProcessBus, KafkaBus
from common.messages import FRAMES_TOPIC, SCORES_TOPIC
from common.redact import redact_url
from streamer.ingest import IngestMetrics, IngestWorker
from streamer.sources import Source, open_source
from ui.health import HealthSource, UrlHealth, from_ingest_detail
from ui.live import LiveFeed, LiveView
from ui.server import UiApp, UiServer
from vigil.config import SetupError, VigilConfig
from vigil.ops import OpsServer
from vigil.recorder import ScoreRecorder

if TYPE_CHECKING:  # the model stack is imported only by a process that detects (see start)
    from detector.encoders import Encoder
    from detector.worker import DetectorMetrics, DetectorWorker
    from scenes.registry import SceneRegistry

log = logging.getLogger(__name__)

ROLES = ("ingest", "detect", "record", "alert")
#: What `vigil run` runs: every role and the review page (when ``ui.enabled``).
RUN_ROLES = (*ROLES, "ui")
#: What a Pipeline runs unless told otherwise (`vigil run` adds "alert" and "ui").
DEFAULT_ROLES = ("ingest", "detect", "record")


def _cameras(ids: list[str]) -> str:
    return f"camera {ids[0]}" if len(ids) == 1 else f"cameras {', '.join(ids)}"


def scene_problems(cfg: VigilConfig, registry: SceneRegistry, encoder: Encoder) -> list[str]:
    """What is wrong with the scenes a detector of ``cfg`` serves, one line each: a
    camera's scene without a checkpoint, a checkpoint folder that is broken (the registry's
    :meth:`~scenes.registry.SceneRegistry.health`), or one that does not load as a scene
    model for ``encoder``. Every scene folder is checked, used by a camera here or not (a
    detector serves every camera of the deployment). Empty: all is well."""
    from detector.checkpoint import from_checkpoint
    from detector.scorer import EncoderMismatchError, check_encoder
    from scenes.checkpoint import CheckpointError

    users: dict[str, list[str]] = {}
    for cam in cfg.cameras:
        users.setdefault(cam.scene, []).append(cam.id)
    health = {h.scene: h for h in registry.health()}
    known = ", ".join(s for s, h in health.items() if h.ok) or "none"
    problems = []
    for scene, ids in users.items():
        if scene not in health:
            problems.append(f"{_cameras(ids)}: scene {scene!r} has no checkpoint in {registry.root} "
                            f"(known scenes: {known}); train it with `vigil train --scene {scene} ...`")
    for scene, h in health.items():
        where = f"{_cameras(users[scene])}: " if scene in users else ""
        if not h.ok:
            problems.append(f"{where}scene {scene!r}: checkpoint {registry.root / scene} is broken: "
                            f"{h.status}")
            continue
        try:
            check_encoder(from_checkpoint(registry.load(scene)), encoder, scene)
        except EncoderMismatchError as exc:
            problems.append(f"{where}{exc}")
        except CheckpointError as exc:
            problems.append(f"{where}scene {scene!r}: {exc}")
    return problems


def check_scenes(cfg: VigilConfig, registry: SceneRegistry, encoder: Encoder) -> None:
    """Refuse to detect with broken scenes (:func:`scene_problems`): a :class:`SetupError`
    listing them, or with ``detector.allow_missing_scenes`` a warning for each."""
    problems = scene_problems(cfg, registry, encoder)
    if problems and not cfg.detector.allow_missing_scenes:
        raise SetupError("; ".join(problems) + " (detector.allow_missing_scenes: true starts anyway)")
    for problem in problems:
        log.warning("%s; starting anyway (detector.allow_missing_scenes): its frames are skipped", problem)
    scenes = set(registry.scenes())
    if not scenes and not cfg.cameras:
        log.warning("no scene checkpoints in %s: every frame is skipped (unknown_scene) until a scene is "
                    "trained there", registry.root)
    for scene in sorted(set(cfg.alerting.scenes) - scenes):
        log.warning("alerting.scenes.%s: no such scene in %s (a typo?)", scene, registry.root)


def _error_line(exc: BaseException, limit: int = 500) -> str:
    """A role's error as one line for a health report: type and text, redacted, cut to ``limit``."""
    text = " ".join(redact_url(f"{type(exc).__name__}: {exc}").split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def make_bus(cfg: VigilConfig) -> Bus:
    if cfg.bus.kind == "kafka":
        assert cfg.bus.kafka is not None  # checked by the config validator
        return KafkaBus(cfg.bus.kafka)
    return InProcessBus(partitions=cfg.bus.partitions, max_bytes_per_message=cfg.bus.max_message_bytes)


@dataclass
class Pipeline:
    """The roles of one process, started on one bus."""

    cfg: VigilConfig
    roles: tuple[str, ...] = DEFAULT_ROLES
    bus: Bus | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    #: False: :meth:`start` leaves the detector to the caller, who runs ``detector.run()`` on
    #: its own thread (the main thread of a `vigil` process; see :func:`run_roles`).
    detector_thread: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.roles) - set(RUN_ROLES)
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; known: {RUN_ROLES}")
        self.bus = self.bus or make_bus(self.cfg)
        self.ingest: list[IngestWorker] = []
        self.detector: DetectorWorker | None = None
        self.recorder: ScoreRecorder | None = None
        self.alerter: AlertWorker | None = None
        self.alert_store: AlertStore | None = None
        self.ops: OpsServer | None = None
        self.ui: UiServer | None = None
        self.ui_feed: LiveFeed | None = None
        self._ui_store: AlertStore | None = None  # the page's own store (a process that does not alert)
        self.ingest_metrics = IngestMetrics(self.registry) if "ingest" in self.roles else None
        self.detector_metrics: DetectorMetrics | None = None
        if "detect" in self.roles:
            # imported here: the model stack (torch, timm) is only loaded by a process that detects
            from detector.worker import DetectorMetrics

            self.detector_metrics = DetectorMetrics(self.registry)
        self.alert_metrics = AlertMetrics(self.registry) if "alert" in self.roles else None
        self._producer = None
        # The ingest workers' own producer: a Kafka producer reports a failed record to
        # whichever flush comes next, so a detector or alert flush on a shared one could
        # swallow a replay frame's failure that ingest must see to send it again.
        self._ingest_producer = None

    # ------------------------------------------------------------------ start / stop
    def start(self) -> Pipeline:
        """Check the set-up (see the module docstring), then start the roles."""
        assert self.bus is not None
        # Set-up checks first, before any thread runs: every replay opens, every scene loads.
        replays = self._open_replays() if "ingest" in self.roles else {}
        encoder, scenes = None, None
        if "detect" in self.roles:
            import torch

            from detector.encoders import Encoder
            from scenes.registry import SceneRegistry

            if self.cfg.detector.threads:
                torch.set_num_threads(self.cfg.detector.threads)
            encoder = Encoder(self.cfg.encoder.name, self.cfg.encoder.weights)
            scenes = SceneRegistry(self.cfg.scenes.root)
            check_scenes(self.cfg, scenes, encoder)
        self.bus.ensure_topics([FRAMES_TOPIC, SCORES_TOPIC, ALERTS_TOPIC])
        self._producer = self.bus.producer()
        if "alert" in self.roles and self.cfg.alerting.enabled:
            assert self.alert_metrics is not None
            self.alert_store = open_store(self.cfg.alerting.store)
            self.alerter = AlertWorker(
                self.bus.consumer(self.cfg.alerting.group, [FRAMES_TOPIC, SCORES_TOPIC]), self._producer,
                self.alert_store, self.cfg.alerting, self.alert_metrics, self.stop,
            ).start()
        if encoder is not None and scenes is not None:
            from detector.worker import DetectorWorker

            assert self.detector_metrics is not None
            self.detector = DetectorWorker(
                self.bus.consumer(self.cfg.detector.group, [FRAMES_TOPIC]), self._producer,
                encoder, scenes, self.cfg.detector, self.detector_metrics, self.stop,
            )
            if self.detector_thread:
                self.detector.start()
        if "record" in self.roles and self.cfg.recorder.enabled:
            rec = self.cfg.recorder
            self.recorder = ScoreRecorder(
                self.bus.consumer(rec.group, [SCORES_TOPIC]), rec.dir, self.registry, self.stop,
                max_cameras=rec.max_cameras, max_open_files=rec.max_open_files,
            ).start()
        if "ingest" in self.roles:
            assert self.ingest_metrics is not None
            self._ingest_producer = self.bus.producer() if set(self.roles) - {"ingest"} else self._producer
            for camera in self.cfg.cameras:
                self.ingest.append(IngestWorker(
                    camera, self._ingest_producer, self.ingest_metrics, self.stop,
                    wait_for_capacity=self._replay_capacity() if camera.source == "replay" else None,
                    source=replays.get(camera.id),
                ).start())
        if "ui" in self.roles and self.cfg.ui.enabled:
            self._start_ui()
        if self.cfg.ops.port is not None:
            self.ops = OpsServer(self.registry, self.health, self.cfg.ops.host, self.cfg.ops.port).start()
        return self

    def _start_ui(self) -> None:
        """The review page: the alert store (this process's, when it alerts), a live view fed
        from the bus, and the cameras' health (this process's ingest, else ``ui.health_urls``)."""
        assert self.bus is not None
        u = self.cfg.ui
        live = LiveView(u.history_s, u.max_cameras)
        store = self.alert_store if self.alert_store is not None else open_store(self.cfg.alerting.store)
        self._ui_store = store if self.alert_store is None else None
        health: HealthSource | None = None
        if self.ingest_metrics is not None:
            metrics = self.ingest_metrics
            health = lambda: from_ingest_detail(metrics.health()[1])  # noqa: E731
        elif u.health_urls:
            health = UrlHealth(u.health_urls)
        self.ui_feed = LiveFeed(self.bus.consumer(u.group, [FRAMES_TOPIC, SCORES_TOPIC]), live, self.stop,
                                self.registry).start()
        app = UiApp(store, u, live, health, self.registry, ready=self.health)
        self.ui = UiServer(app, u.host, u.port).start()
        log.info("review page: %s", self.ui.url)

    def _open_replays(self) -> dict[str, Source]:
        """Every replay camera's source, opened now: one that cannot be (a missing file, a
        file that is no video, an empty folder) raises :class:`SourceError` naming the
        camera. RTSP cameras connect (and reconnect) on their own threads."""
        return {c.id: open_source(c, self.stop) for c in self.cfg.cameras if c.source == "replay"}

    def ingest_failures(self) -> list[tuple[str, BaseException]]:
        """``(camera, error)`` of every ingest worker that failed (a replay that broke off)."""
        return [(w.camera.id, w.error) for w in self.ingest if w.error is not None]

    def _replay_capacity(self) -> Callable[[], None] | None:
        """Embedded mode: a replay waits while the detector has too many unscored frames.
        (On Kafka the producer's own buffer bounds it.)"""
        bus = self.bus
        if not isinstance(bus, InProcessBus) or "detect" not in self.roles:
            return None
        limit, group = self.cfg.bus.replay_max_lag, self.cfg.detector.group

        def wait() -> None:
            while not self.stop.is_set() and bus.lag(group, [FRAMES_TOPIC]) >= limit:
                time.sleep(0.005)

        return wait

    def health(self) -> tuple[bool, dict]:
        """``(ok, detail)`` for ``/healthz``: every camera streaming (or finished), and every
        role of this process alive and without an ``error`` (what ended its thread; shown as one
        redacted line). The alert role also shows its spooled writes (Redis away) and its
        ``queued_writes`` (kept in memory while the store refuses them); those alone do not make
        it unhealthy: it is waiting for its store, which its log and metrics name."""
        detail: dict = {"roles": list(self.roles)}
        ok = True
        if self.ingest_metrics is not None:
            ingest_ok, ingest_detail = self.ingest_metrics.health()
            ok &= ingest_ok
            detail["ingest"] = ingest_detail
        for name, role in (("detector", self.detector), ("recorder", self.recorder), ("alert", self.alerter),
                           ("ui", self.ui_feed)):
            if role is None:
                continue
            alive, error = role.alive, role.error
            ok &= alive and error is None
            detail[name] = {"alive": alive, "error": None if error is None else _error_line(error)}
        if self.alerter is not None:
            detail["alert"].update(spooled=self.alerter.store.pending(),
                                   queued_writes=self.alerter.queued_writes)
        return ok, detail

    def ingest_done(self) -> bool:
        return all(not w.alive for w in self.ingest)

    def drained(self) -> bool:
        """All ingest finished and every published frame scored (and recorded)."""
        if not self.ingest_done():
            return False
        bus = self.bus
        if isinstance(bus, InProcessBus):
            if "detect" in self.roles and bus.lag(self.cfg.detector.group, [FRAMES_TOPIC]) > 0:
                return False
            if self.recorder is not None and bus.lag(self.cfg.recorder.group, [SCORES_TOPIC]) > 0:
                return False
            if self.alerter is not None:
                # the replays are over: the alert role ends open alerts once it has read everything
                self.alerter.request_finish()
                if not self.alerter.finished.is_set() or bus.lag(self.cfg.alerting.group,
                                                                 [FRAMES_TOPIC, SCORES_TOPIC]) > 0:
                    return False
        return True

    def wait(self, timeout: float | None = None, until_drained: bool = True) -> bool:
        """Block until drained (replays) or stopped; returns whether it drained."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.stop.is_set():
            if until_drained and self.drained():
                return True
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.stop.set()
        for worker in self.ingest:
            worker.join(timeout=10)
        for role in (self.detector, self.recorder, self.alerter, self.ui_feed):
            if role is not None:
                role.join(timeout=30)
        if self.alerter is not None and isinstance(self.bus, InProcessBus) and not self.alerter.alive:
            # nothing will be redelivered after this process: store what the open alerts have
            try:
                self.alerter.finish_all()
            except Exception:  # noqa: BLE001 - shutting down; the cause is logged
                log.exception("alert role: open alerts could not be stored at shutdown")
        if self.ui is not None:
            self.ui.close()
        for role in (self.detector, self.recorder, self.alerter, self.ui_feed):
            consumer = getattr(role, "consumer", None)
            if consumer is not None:
                consumer.close()
        if self.recorder is not None:
            self.recorder.close()
        if self.alerter is not None:
            self.alerter.close()
        if self.alert_store is not None:
            self.alert_store.close()
        if self._ui_store is not None:
            self._ui_store.close()
        if self._ingest_producer is not None and self._ingest_producer is not self._producer:
            self._ingest_producer.close()
        if self._producer is not None:
            self._producer.close()
        if self.ops is not None:
            self.ops.close()
        if self.bus is not None:
            self.bus.close()

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_roles(cfg: VigilConfig, roles: Iterable[str], until_drained: bool) -> Pipeline:
    """Start ``roles`` and block until drained (when asked) or interrupted (Ctrl-C / SIGTERM)."""
    import signal

    # The detector's model step runs on this (the main) thread, which loaded the encoder:
    # torch's small operations run faster there than on a thread started later.
    pipeline = Pipeline(cfg, tuple(roles), detector_thread=False)
    previous = signal.signal(signal.SIGTERM, lambda *_: pipeline.stop.set())
    try:
        pipeline.start()
        if pipeline.detector is None:
            pipeline.wait(until_drained=until_drained)
        else:
            def stop_when_drained() -> None:
                if pipeline.wait(until_drained=until_drained):
                    pipeline.stop.set()

            threading.Thread(target=stop_when_drained, name="drain-watch", daemon=True).start()
            pipeline.detector.run()
    except KeyboardInterrupt:
        log.info("interrupted; stopping")
    finally:
        pipeline.close()
        signal.signal(signal.SIGTERM, previous)
    return pipeline

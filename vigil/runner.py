"""Wiring the roles together: which bus, which workers, metrics and shutdown.

`vigil run` starts every role (ingest per camera, detector, score recorder, alerting) as
threads on one bus -- the in-process bus by default, Kafka when ``bus.kind: kafka``.
`vigil ingest`, `vigil detect` and `vigil alert` start one role each. The roles themselves
live in their packages (:mod:`streamer.ingest`, :mod:`detector.worker`,
:mod:`vigil.recorder`, :mod:`alerting.worker`); this module only connects them.
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
from streamer.ingest import IngestMetrics, IngestWorker
from vigil.config import VigilConfig
from vigil.ops import OpsServer
from vigil.recorder import ScoreRecorder

if TYPE_CHECKING:  # the model stack is imported only by a process that detects (see start)
    from detector.worker import DetectorMetrics, DetectorWorker

log = logging.getLogger(__name__)

ROLES = ("ingest", "detect", "record", "alert")
#: What a Pipeline runs unless told otherwise (`vigil run` adds "alert").
DEFAULT_ROLES = ("ingest", "detect", "record")


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
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; known: {ROLES}")
        self.bus = self.bus or make_bus(self.cfg)
        self.ingest: list[IngestWorker] = []
        self.detector: DetectorWorker | None = None
        self.recorder: ScoreRecorder | None = None
        self.alerter: AlertWorker | None = None
        self.alert_store: AlertStore | None = None
        self.ops: OpsServer | None = None
        self.ingest_metrics = IngestMetrics(self.registry) if "ingest" in self.roles else None
        self.detector_metrics: DetectorMetrics | None = None
        if "detect" in self.roles:
            # imported here: the model stack (torch, timm) is only loaded by a process that detects
            from detector.worker import DetectorMetrics

            self.detector_metrics = DetectorMetrics(self.registry)
        self.alert_metrics = AlertMetrics(self.registry) if "alert" in self.roles else None
        self._producer = None

    # ------------------------------------------------------------------ start / stop
    def start(self) -> Pipeline:
        assert self.bus is not None
        self.bus.ensure_topics([FRAMES_TOPIC, SCORES_TOPIC, ALERTS_TOPIC])
        self._producer = self.bus.producer()
        if "alert" in self.roles and self.cfg.alerting.enabled:
            assert self.alert_metrics is not None
            self.alert_store = open_store(self.cfg.alerting.store)
            self.alerter = AlertWorker(
                self.bus.consumer(self.cfg.alerting.group, [FRAMES_TOPIC, SCORES_TOPIC]), self._producer,
                self.alert_store, self.cfg.alerting, self.alert_metrics, self.stop,
            ).start()
        if "detect" in self.roles:
            from detector.encoders import Encoder
            from detector.worker import DetectorWorker
            from scenes.registry import SceneRegistry

            assert self.detector_metrics is not None
            self.detector = DetectorWorker(
                self.bus.consumer(self.cfg.detector.group, [FRAMES_TOPIC]), self._producer,
                Encoder(self.cfg.encoder.name, self.cfg.encoder.weights), SceneRegistry(self.cfg.scenes.root),
                self.cfg.detector, self.detector_metrics, self.stop,
            )
            if self.detector_thread:
                self.detector.start()
        if "record" in self.roles and self.cfg.recorder.enabled:
            self.recorder = ScoreRecorder(self.bus.consumer(self.cfg.recorder.group, [SCORES_TOPIC]),
                                          self.cfg.recorder.dir, self.registry, self.stop).start()
        if "ingest" in self.roles:
            assert self.ingest_metrics is not None
            for camera in self.cfg.cameras:
                self.ingest.append(IngestWorker(
                    camera, self._producer, self.ingest_metrics, self.stop,
                    wait_for_capacity=self._replay_capacity() if camera.source == "replay" else None,
                ).start())
        if self.cfg.ops.port is not None:
            self.ops = OpsServer(self.registry, self.health, self.cfg.ops.host, self.cfg.ops.port).start()
        return self

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
        detail: dict = {"roles": list(self.roles)}
        ok = True
        if self.ingest_metrics is not None:
            ingest_ok, ingest_detail = self.ingest_metrics.health()
            ok &= ingest_ok
            detail["ingest"] = ingest_detail
        if self.detector is not None:
            alive = self.detector.alive
            ok &= alive
            detail["detector"] = {"alive": alive}
        if self.alerter is not None:
            ok &= self.alerter.alive
            detail["alert"] = {"alive": self.alerter.alive, "spooled": self.alerter.store.pending()}
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
        for role in (self.detector, self.recorder, self.alerter):
            if role is not None:
                role.join(timeout=30)
        if self.alerter is not None and isinstance(self.bus, InProcessBus) and not self.alerter.alive:
            # nothing will be redelivered after this process: store what the open alerts have
            try:
                self.alerter.finish_all()
            except Exception:  # noqa: BLE001 - shutting down; the cause is logged
                log.exception("alert role: open alerts could not be stored at shutdown")
        for role in (self.detector, self.recorder, self.alerter):
            consumer = getattr(role, "consumer", None)
            if consumer is not None:
                consumer.close()
        if self.recorder is not None:
            self.recorder.close()
        if self.alerter is not None:
            self.alerter.close()
        if self.alert_store is not None:
            self.alert_store.close()
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

"""The fault suite's deployment: tansu, redis-server and the ``vigil`` roles as processes.

* :class:`Broker`: a tansu broker with in-memory storage at a fixed loopback address, which
  a test may freeze (SIGSTOP), resume, kill (SIGKILL) and bring back, empty, at that address.
* :class:`Role`: one ``python -m vigil --config CFG ROLE`` process with ``/metrics`` and
  ``/healthz`` on a free port, one torch/BLAS thread (:data:`CHILD_ENV`).
* :class:`Observer`: a subscriber in the test process that reads ``vigil.frames``,
  ``vigil.scores`` and ``vigil.alerts`` like any consumer and keeps every record it saw:
  what was lost, what came twice, when traffic resumed.
* :func:`paced_folder`: a camera replay as a frame folder, paced at real time, made of the
  checkerboard clip's JPEGs (symbolic links: nothing is re-encoded).

Everything is sized for 2 CPU cores: the session's tiny trained scene, frames of 256x192,
a few dozen frames per camera at 1-2 frames per second.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from alerting.events import ALERTS_TOPIC
from common.bus import BusError, KafkaBus, KafkaConfig
from common.messages import FRAMES_TOPIC, SCORES_TOPIC, MessageError, ScoreMessage
from tests.conftest import REPO, TINY_SCENE
from tests.rtsp import RtspServer, free_tcp_port
from tests.servers import KAFKA_TEST_TIMEOUTS, RedisServer, _accepts, _redis_ping, find_tansu, stop_process

#: Every child process: one thread for torch, OpenMP and BLAS (2 shared cores).
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
             "PYTHONUNBUFFERED": "1"}
TOPICS = (FRAMES_TOPIC, SCORES_TOPIC, ALERTS_TOPIC)
#: The tiny test model scores the checkerboard 2.5-4.2 and the clip's normal frames under 2.0
#: (tests/alerting/streams.py), so the alert thresholds lie between.
LIFECYCLE = {"enter": 2.3, "exit": 2.0, "k": 3, "n": 5, "m": 4, "min_duration_s": 0.2, "cooldown_s": 2.0}
#: Checkerboard frames of the clip that every model run scores well above ``enter``.
CHECKER = list(range(62, 78))
NORMAL = [*range(0, 58), *range(82, 120)]


# ----------------------------------------------------------------------------- the broker


class Broker:
    """tansu with in-memory storage, reached by the clients at a fixed loopback address.

    :meth:`freeze` / :meth:`resume` stop and continue the process (SIGSTOP / SIGCONT).
    :meth:`kill` (SIGKILL) loses everything it held: topics, records, committed offsets,
    groups. :meth:`restart_empty` brings a new, empty broker up behind the same address with
    the deployment's topics provisioned before any client reaches it. (A restarted tansu
    takes records for a topic it does not know yet, cannot index them, and refuses every
    later record of that partition with UnknownError: a tansu bug a provisioned broker does
    not meet. So the new broker listens on a fresh port, advertised as such; the topics are
    created there; only then does a proxy on the old address forward the clients, whose
    next metadata refresh points them to the new port.)
    """

    def __init__(self, workdir: Path) -> None:
        self.binary = find_tansu()
        self.port = free_tcp_port()
        self.log = workdir / "tansu.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self._proxy: _Proxy | None = None
        self._listen_port = self.port

    @property
    def address(self) -> str:
        """What the clients are configured with (the first broker's address)."""
        return f"127.0.0.1:{self.port}"

    def kafka(self, **overrides: object) -> KafkaConfig:
        """Client settings for this broker: api_version pinned, short group timeouts, 4 partitions."""
        # tansu answers no InitProducerId: the idempotent producer of the deployment stays off here
        settings: dict = {"bootstrap_servers": self.address, "api_version": (2, 0),
                          "enable_idempotence": False, "client_id": "vigil-faults", "partitions": 4,
                          **KAFKA_TEST_TIMEOUTS}
        return KafkaConfig(**(settings | overrides))

    def start(self, timeout: float = 20.0) -> Broker:
        url = f"tcp://127.0.0.1:{self._listen_port}"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if _accepts(self._listen_port):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"tansu did not listen on 127.0.0.1:{self._listen_port}; its log:\n"
                           + self.log.read_text(errors="replace")[-2000:])

    def restart_empty(self, topics: Iterable[str] = TOPICS) -> None:
        """After :meth:`kill`: a new empty broker with ``topics`` (4 partitions) behind the address."""
        assert self.proc is None, "kill the broker first"
        self._listen_port = free_tcp_port()
        self.start()
        KafkaBus(self.kafka(bootstrap_servers=f"127.0.0.1:{self._listen_port}")).ensure_topics(topics)
        self._proxy = _Proxy(self.port, self._listen_port)

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.frozen = False

    def kill(self) -> None:
        """SIGKILL: the in-memory storage is gone with the process."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self._proxy is not None:
            self._proxy.close()
            self._proxy = None
        if self.proc is None:
            return
        if self.frozen:
            self.resume()
        stop_process(self.proc, timeout=5)
        self.proc = None


class _Proxy:
    """Forwards TCP connections from a loopback port to another, a thread pair per connection."""

    def __init__(self, port: int, target: int) -> None:
        import socket

        self.target = target
        self.server = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="broker-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst) -> None:
        with contextlib.suppress(OSError):
            src.settimeout(None)
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(2)

    def close(self) -> None:
        self._stop.set()
        self.server.close()
        self._thread.join(5)


class PersistentRedis(RedisServer):
    """A redis-server that keeps an append-only file (fsync on every write), as the compose
    deployment does: a SIGKILL loses nothing it acknowledged."""

    def start(self, timeout: float = 20) -> PersistentRedis:
        if self.running:
            return self
        log = self.workdir / "redis.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir),
                 "--protected-mode", "no"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            if _redis_ping(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{self.port}; its output:\n"
                           + log.read_text(errors="replace")[-2000:])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None


# ----------------------------------------------------------------------------- the roles


class Role:
    """One ``python -m vigil --config CFG ROLE`` process; ``/metrics`` and ``/healthz`` on a free port."""

    def __init__(self, work: Path, name: str, role: str, cfg: dict) -> None:
        self.name, self.role, self.port = name, role, free_tcp_port()
        self.config = work / f"{name}.yaml"
        self.config.write_text(yaml.safe_dump({**cfg, "ops": {"host": "127.0.0.1", "port": self.port}}))
        self.log = work / f"{name}.log"
        self.started = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "vigil", "--config", str(self.config), role],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=REPO, env={**os.environ, **CHILD_ENV})

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _get(self, path: str) -> tuple[int, bytes] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:  # /healthz answers 503 when unhealthy
            return exc.code, exc.read()
        except OSError:
            return None

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Current samples by (name, sorted labels); empty if the process does not serve."""
        got = self._get("/metrics")
        if got is None:
            return {}
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(got[1].decode()) for s in family.samples}

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
        want = set(labels.items())
        return sum(v for (n, lab), v in self.metrics().items() if n == name and want <= set(lab))

    def health(self) -> dict | None:
        """``/healthz`` as JSON (with ``status``: 200 or 503), None if it does not answer."""
        got = self._get("/healthz")
        if got is None:
            return None
        return {"status": got[0], **json.loads(got[1])}

    def wait_serving(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            if self._get("/metrics") is not None:
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not serve /metrics within {timeout:.0f} s:\n{self.tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait()

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.log.name} (last {lines} lines)\n" + "\n".join(text.splitlines()[-lines:])

    def grep(self, needle: str) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if needle in line]


# ----------------------------------------------------------------------------- the observer


@dataclass
class Event:
    """An alert event as the observer received it."""

    at: float  # monotonic
    camera: str
    alert_id: str
    event_id: str
    state: str
    partition: int
    start_seq: int


@dataclass
class Observer:
    """Reads the three topics in a thread of the test process (its own consumer group) and
    keeps what it saw. It commits what it read, so a rebalance of its own group does not
    read everything again (that would look like redelivery). It survives a broker that is
    frozen, killed or restarted empty (then it reads the new topics from the beginning)."""

    kafka: KafkaConfig
    frames: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    scores: dict[tuple[str, int], list[float]] = field(default_factory=lambda: defaultdict(list))
    score_arrivals: list[tuple[float, str, int]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    partitions: dict[tuple[str, str], set[int]] = field(default_factory=lambda: defaultdict(set))
    errors: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self._stop = threading.Event()
        group = f"faults-observer-{uuid.uuid4().hex[:8]}"
        self._consumer = KafkaBus(self.kafka).consumer(group, list(TOPICS))
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                records = self._consumer.poll(max_records=500, timeout_ms=200)
            except BusError:
                self.errors += 1
                self._stop.wait(0.5)
                continue
            now = time.monotonic()
            with self.lock:
                for r in records:
                    self._take(r, now)
            if records:
                with contextlib.suppress(BusError):  # a refused commit: a few records come again
                    self._consumer.commit(records)

    def _take(self, r, now: float) -> None:
        if r.topic == FRAMES_TOPIC:
            headers = dict(r.headers)
            try:
                camera, seq = headers["camera"].decode(), int(headers["seq"])
            except (KeyError, ValueError):
                return
            self.frames[(camera, seq)] += 1
        elif r.topic == SCORES_TOPIC:
            try:
                msg = ScoreMessage.from_record(r.key, r.value, r.headers)
            except MessageError:
                return
            camera, seq = msg.camera, msg.seq
            self.scores[(camera, seq)].append(msg.score)
            self.score_arrivals.append((now, camera, seq))
        else:
            e = json.loads(r.value)
            camera = e["camera"]
            self.events.append(Event(now, camera, e["alert_id"], e["event_id"], e["state"], r.partition,
                                     int(e["start_seq"])))
        self.partitions[(r.topic, camera)].add(r.partition)

    def wait(self, done: Callable[[], bool], timeout: float, what: str,
             roles: Iterable[Role] = ()) -> float:
        """Wait until ``done()`` (checked under the lock); returns when (monotonic)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if done():
                    return time.monotonic()
            time.sleep(0.1)
        logs = "\n".join(r.tail(25) for r in roles)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; {self.summary()}\n{logs}")

    # -- what was seen

    def scored(self) -> set[tuple[str, int]]:
        with self.lock:
            return set(self.scores)

    def published(self) -> set[tuple[str, int]]:
        with self.lock:
            return set(self.frames)

    def first_score_after(self, t: float) -> float | None:
        with self.lock:
            return next((at for at, _c, _s in self.score_arrivals if at > t), None)

    def redelivered(self) -> int:
        """Score records beyond the first of each (camera, seq): dropped by de-duplication."""
        with self.lock:
            return sum(len(v) - 1 for v in self.scores.values())

    def conflicting(self) -> int:
        """Frames whose scores disagree: de-duplicating by (camera, seq) would hide a difference."""
        with self.lock:
            return sum(max(v) - min(v) > 1e-4 for v in self.scores.values())

    def states(self, alert_id: str) -> list[str]:
        """The alert's event states, de-duplicated by event id, in arrival order."""
        seen: dict[str, str] = {}
        with self.lock:
            for e in self.events:
                if e.alert_id == alert_id:
                    seen.setdefault(e.event_id, e.state)
        return list(seen.values())

    def summary(self) -> str:
        with self.lock:
            return (f"observer: {len(self.frames)} frames, {len(self.scores)} scored frames "
                    f"({sum(len(v) for v in self.scores.values())} score records), {len(self.events)} alert "
                    f"events, {self.errors} poll errors")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
        with contextlib.suppress(BusError):
            self._consumer.close()


# ----------------------------------------------------------------------------- cameras and configs


def paced_folder(folder: Path, checker_folder: Path, content: list[int | None], step: int = 25) -> list[int]:
    """A camera replay: frame ``k`` is the checkerboard clip's frame ``content[k]`` (a link to
    its JPEG), named ``k * step`` so a real-time replay paces it at ``25 / step`` frames/s
    (frame folders are timed at 25 fps); ``None`` is a pause of one frame. Returns the seqs
    the replay publishes."""
    folder.mkdir(parents=True, exist_ok=True)
    seqs = []
    for k, c in enumerate(content):
        if c is None:
            continue
        seq = k * step
        (folder / f"{seq:05d}.jpg").symlink_to(checker_folder / f"{c:03d}.jpg")
        seqs.append(seq)
    return seqs


def replay_content(before: int, anomaly: int, after: int, offset: int = 0) -> list[int]:
    """``before`` normal frames, ``anomaly`` checkerboard frames, ``after`` normal frames."""
    normal = NORMAL[offset:] + NORMAL[:offset]
    return ([normal[i % len(normal)] for i in range(before)]
            + [CHECKER[i % len(CHECKER)] for i in range(anomaly)]
            + [normal[(before + i) % len(normal)] for i in range(after)])


def partition_counts(kafka: KafkaConfig, topics: Iterable[str] = TOPICS) -> dict[str, int]:
    """Partitions of each topic, as the broker describes it (0: no such topic)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(**kafka.client_kwargs())
    try:
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(topics))}
    finally:
        admin.close()


def camera(cid: str, folder: Path, **extra: object) -> dict:
    return {"id": cid, "url": str(folder), "scene": TINY_SCENE, "realtime": True, **extra}


def role_config(registry_root: Path, kafka: KafkaConfig, redis_url: str, spool: Path,
                cameras: list[dict] | None = None, **alerting: object) -> dict:
    """The config every role of a test shares (the alert role's spool is per process)."""
    return {
        "scenes": {"root": str(registry_root)},
        "detector": {"batch_size": 8, "max_wait_ms": 20, "map_size": 32},
        "bus": {"kind": "kafka", "kafka": kafka.model_dump(mode="json") | {"sasl_plain_password": None}},
        "cameras": cameras or [],
        "alerting": {
            "lifecycle": LIFECYCLE,
            "clip": {"pre_roll_s": 1.0, "post_roll_s": 1.0},
            "store": {"kind": "redis", "url": redis_url, "retention_s": 3600, "spool_dir": str(spool),
                      "socket_timeout_s": 1.0},
            **alerting,
        },
    }


def wait_for(done: Callable[[], bool], timeout: float, what: str, roles: Iterable[Role] = ()) -> float:
    """Poll ``done()`` until true; returns when (monotonic); fails with the roles' logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return time.monotonic()
        time.sleep(0.1)
    logs = "\n".join(r.tail(25) for r in roles)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


def tracebacks(roles: Iterable[Role]) -> list[str]:
    """Roles whose log holds a Python traceback of their own (kafka-python logs the socket
    errors of a broker that went away with theirs: those are not a role's failure)."""
    found = []
    for r in roles:
        lines = r.log.read_text(errors="replace").splitlines() if r.log.exists() else []
        if any(line.startswith("Traceback") and not (i and " kafka." in lines[i - 1])
               for i, line in enumerate(lines)):
            found.append(r.name)
    return found


class Deployment:
    """The processes of one test: a broker, the roles it starts, an observer. :meth:`close`
    stops them all (SIGTERM, then SIGKILL) and keeps their logs in ``work``."""

    def __init__(self, work: Path, registry_root: Path, redis_url: str, cameras: list[dict] | None = None,
                 **alerting: object) -> None:
        self.work = work
        self.broker = Broker(work).start()
        self.kafka = self.broker.kafka()
        KafkaBus(self.kafka).ensure_topics(TOPICS)
        self.registry_root, self.redis_url = registry_root, redis_url
        self.cameras, self.alerting = cameras or [], alerting
        self.roles: list[Role] = []
        self.observer: Observer | None = None

    def config(self, name: str, **overrides: object) -> dict:
        cfg = role_config(self.registry_root, self.kafka, self.redis_url, self.work / f"spool-{name}",
                          self.cameras, **self.alerting)
        return cfg | overrides

    def start(self, name: str, role: str, wait: bool = True, **overrides: object) -> Role:
        r = Role(self.work, name, role, self.config(name, **overrides))
        self.roles.append(r)
        if wait:
            r.wait_serving()
        return r

    def start_roles(self, *roles: str) -> list[Role]:
        """Start one process per role (named after it) at once; return when all serve."""
        started = [self.start(role, role, wait=False) for role in roles]
        for r in started:
            r.wait_serving()
        return started

    def observe(self) -> Observer:
        self.observer = Observer(self.kafka)
        return self.observer

    def close(self) -> None:
        for r in reversed(self.roles):
            if r.alive:
                r.stop()
        if self.observer is not None:
            self.observer.close()
        self.broker.stop()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- measuring


@dataclass
class Stored:
    """What Redis holds for the test's cameras, compared with the anomalies replayed."""

    lost: int  # anomalies without a complete alert (closed, clip and snapshot stored)
    duplicates: int  # alerts beyond one per anomaly, plus events stored twice in the stream
    alerts: dict[str, list]  # camera -> its AlertRecords
    problems: list[str]


def check_store(redis_url: str, spool: Path, anomalies: dict[str, list[tuple[int, int]]]) -> Stored:
    """Each camera's stored alerts against its anomalies (seq ranges, inclusive): one
    complete alert per anomaly, starting inside it, none more; the event stream of the
    store holds each event once."""
    from alerting.config import RedisStoreConfig
    from alerting.store import RedisStore

    store = RedisStore(RedisStoreConfig(url=redis_url, spool_dir=spool))
    lost = duplicates = 0
    problems: list[str] = []
    alerts: dict[str, list] = {}
    try:
        for cam, ranges in anomalies.items():
            records = sorted(store.list(cam), key=lambda r: r.start_seq)
            alerts[cam] = records
            for first, last in ranges:
                inside = [r for r in records if first <= r.start_seq <= last]
                complete = [r for r in inside if r.status == "closed" and r.clip_ready
                            and (store.clip(r.alert_id) or b"")[4:8] == b"ftyp"
                            and (store.snapshot(r.alert_id) or b"")[:2] == b"\xff\xd8"]
                if not complete:
                    lost += 1
                    problems.append(f"{cam}: no complete alert for frames {first}-{last} "
                                    f"(stored: {[(r.alert_id, r.status, r.clip_ready) for r in inside]})")
            extra = len(records) - len(ranges)
            if extra > 0:
                duplicates += extra
                problems.append(f"{cam}: {len(records)} alerts stored for {len(ranges)} anomalies: "
                                f"{[(r.alert_id, r.start_seq, r.end_seq) for r in records]}")
        events = [e for _id, e in store.events(None, count=100_000)]
        ids = [e["event_id"] for e in events]
        twice = len(ids) - len(set(ids))
        if twice:
            duplicates += twice
            problems.append(f"{twice} events stored twice in the stream")
    finally:
        store.close()
    return Stored(lost, duplicates, alerts, problems)


def event_problems(observer: Observer, stored: Stored) -> list[str]:
    """Every stored alert's events on ``vigil.alerts``: one start first, one end last."""
    problems = []
    for cam, records in stored.alerts.items():
        for r in records:
            states = observer.states(r.alert_id)
            if not states or states[0] != "start" or states[-1] != "end" or states.count("start") != 1 \
                    or states.count("end") != 1:
                problems.append(f"{cam}: events of {r.alert_id} on {ALERTS_TOPIC}: {states}")
    return problems


def committed(kafka: KafkaConfig, group: str, topic: str = FRAMES_TOPIC) -> int:
    """Records of ``topic`` the group has committed, over all partitions (read with a
    consumer that does not join the group)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(group_id=group, enable_auto_commit=False, **kafka.client_kwargs())
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in parts)
    finally:
        consumer.close(autocommit=False)


def one_per_partition(prefix: str, partitions: int = 4) -> list[str]:
    """Camera ids whose Kafka keys land in partitions 0, 1, ... (kafka-python's murmur2)."""
    from kafka.partitioner.default import murmur2

    found: dict[int, str] = {}
    i = 0
    while len(found) < partitions:
        cid = f"{prefix}{i}"
        found.setdefault((murmur2(cid.encode()) & 0x7FFFFFFF) % partitions, cid)
        i += 1
    return [found[p] for p in range(partitions)]


def start_damaged_publisher(server: RtspServer, path: str, damaged_packets: int, amount: int = 30,
                            timeout: float = 15.0) -> int:
    """Publish the clip at ``path`` as :meth:`RtspServer.start_publisher` does, its first
    ``damaged_packets`` H.264 packets damaged by ffmpeg's ``noise`` bitstream filter (about
    one byte in ``amount`` changed): a camera that returns with a burst of corrupt data.

    The RTSP server is restarted first (same ports): with no stream mounted it falls back to
    RTP port 20000, which another server on the machine may hold, and the publisher's RECORD
    then fails. A publisher that dies anyway is retried on a restarted server. Returns the
    attempts it took."""
    noise = f"noise=amount='if(lt(n,{damaged_packets}),{amount},0)'"
    cmd = [server.ffmpeg_bin, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
           "-i", str(server.clip), "-an", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
           "-g", "10", "-pix_fmt", "yuv420p", "-bsf:v", noise, "-f", "rtsp", server.publish_url(path)]
    log = server.workdir / f"ffmpeg-{path}-damaged.log"
    for _attempt in range(3):
        server.restart()
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server._publishers[path] = proc  # stop_publisher() and the fixture's teardown stop it
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None and server.describe(path) != 200:
            time.sleep(0.05)
        time.sleep(0.5)  # a refused RECORD ends ffmpeg at once
        if proc.poll() is None and server.describe(path) == 200:
            return _attempt + 1
        stop_process(proc, timeout=5)
    raise AssertionError(f"the damaged publisher of /{path} did not start: {log.read_text(errors='replace')}")

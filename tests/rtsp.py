"""A real RTSP server for the streamer tests: Debian's ``rtsp-server-perl`` fed by ``ffmpeg``.

``rtsp-server-perl`` (package ``rtsp-server-perl``, binary ``/usr/bin/rtsp-server-perl``) is a
small RTSP relay: a publisher ANNOUNCEs and RECORDs a stream on the *source* port, clients
DESCRIBE/SETUP/PLAY it on the *client* port. It relays RTP over UDP only, so clients must use
``rtsp_transport=udp``. Every port is configurable on its command line:

* ``--clientport`` / ``--serverport``: the TCP ports for clients and publishers (free
  loopback ports picked at start, both bound to 127.0.0.1);
* ``--rtp_start_port``: the first of the UDP ports it binds for RTP/RTCP, two per stream and
  per client; picked at random in 30000-59000 so parallel runs rarely meet. (The server goes
  back to its built-in 20000 once no stream is mounted; a clash there costs one failed
  SETUP, which the RTSP source retries.)

The publisher is ``ffmpeg -re -stream_loop -1 -i CLIP -c:v libx264 -f rtsp
rtsp://127.0.0.1:SERVERPORT/PATH``: the test clip looped forever at its native rate,
re-encoded with a short GOP so a reader that (re)joins gets a key frame within a second.

The server only unmounts a stream on the publisher's RTSP TEARDOWN, which ffmpeg sends when
it gets SIGTERM; a publisher killed with SIGKILL leaves a stale mount that makes the server
refuse the next publisher (403). :meth:`RtspServer.stop_publisher` therefore terminates ffmpeg
with SIGTERM and, if the mount is still there afterwards, restarts the server on the same
ports. For a reader, either way the stream is gone: no more packets, then the read timeout.

Missing binaries fail the test with instructions (``bash scripts/bootstrap-system.sh``); they
are never skipped.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

SERVER_BIN = "rtsp-server-perl"
FFMPEG_BIN = "ffmpeg"
CLIP = Path(__file__).resolve().parents[1] / "vigil" / "data" / "campus_clip.mp4"


def require_binary(name: str, package: str) -> str:
    """Path of ``name``; ``pytest.fail`` (not skip) with how to install it if it is missing."""
    found = shutil.which(name)
    if not found:
        pytest.fail(f"the RTSP tests need `{name}` (Debian package {package}); "
                    "install it with `bash scripts/bootstrap-system.sh` (as root) or your package manager",
                    pytrace=False)
    return found


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _rtp_start_port() -> int:
    for _ in range(50):
        port = random.randrange(30000, 59000, 2)
        if all(_udp_free(port + i) for i in range(16)):
            return port
    return 40000


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.3):
        return True
    return False


def _terminate(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RtspServer:
    """One ``rtsp-server-perl`` on free loopback ports, plus ffmpeg publishers by mount path."""

    def __init__(self, workdir: Path, clip: Path = CLIP) -> None:
        self.server_bin = require_binary(SERVER_BIN, "rtsp-server-perl")
        self.ffmpeg_bin = require_binary(FFMPEG_BIN, "ffmpeg")
        self.workdir = Path(workdir)
        self.clip = Path(clip)
        self.client_port = free_tcp_port()
        self.source_port = free_tcp_port()
        while self.source_port == self.client_port:
            self.source_port = free_tcp_port()
        self.rtp_start_port = _rtp_start_port()
        self.server_log = self.workdir / "rtsp-server.log"
        self._server: subprocess.Popen[bytes] | None = None
        self._publishers: dict[str, subprocess.Popen[bytes]] = {}

    # -- URLs

    def url(self, path: str = "cam1") -> str:
        """What a client reads (over UDP)."""
        return f"rtsp://127.0.0.1:{self.client_port}/{path}"

    def publish_url(self, path: str = "cam1") -> str:
        return f"rtsp://127.0.0.1:{self.source_port}/{path}"

    # -- the server

    def start(self, timeout: float = 15.0) -> RtspServer:
        cmd = [self.server_bin, "--clientport", str(self.client_port), "--serverport", str(self.source_port),
               "--client_listen_address", "127.0.0.1", "--source_listen_address", "127.0.0.1",
               "--rtp_start_port", str(self.rtp_start_port), "--loglevel", "3"]
        with open(self.server_log, "ab") as out:
            self._server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                break
            if _accepts(self.client_port) and _accepts(self.source_port):
                return self
            time.sleep(0.05)
        self._fail(f"{SERVER_BIN} did not listen on 127.0.0.1:{self.client_port}/{self.source_port}")
        raise AssertionError("unreachable")

    def restart(self) -> None:
        """Restart the server on the same ports (drops every mount and client)."""
        _terminate(self._server)
        self.start()

    def close(self) -> None:
        for path in list(self._publishers):
            self.stop_publisher(path, check_unmounted=False)
        _terminate(self._server)
        self._server = None

    # -- publishers

    def start_publisher(self, path: str = "cam1", timeout: float = 15.0) -> None:
        """Start ffmpeg publishing the clip at ``path``; returns once clients can DESCRIBE it."""
        if self.publisher_running(path):
            raise RuntimeError(f"a publisher for /{path} is already running")
        cmd = [self.ffmpeg_bin, "-hide_banner", "-nostdin", "-loglevel", "warning", "-re",
               "-stream_loop", "-1", "-i", str(self.clip), "-an", "-c:v", "libx264", "-preset", "ultrafast",
               "-tune", "zerolatency", "-g", "10", "-pix_fmt", "yuv420p",
               "-f", "rtsp", self.publish_url(path)]
        log_path = self.workdir / f"ffmpeg-{path}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._publishers[path] = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if self.describe(path) == 200:
                return
            time.sleep(0.05)
        _terminate(proc)
        self._publishers.pop(path, None)
        self._fail(f"ffmpeg did not publish /{path} (exit {proc.poll()}); its log:\n"
                   + log_path.read_text(errors="replace")[-2000:])

    def publisher_running(self, path: str = "cam1") -> bool:
        proc = self._publishers.get(path)
        return proc is not None and proc.poll() is None

    def stop_publisher(self, path: str = "cam1", *, check_unmounted: bool = True) -> None:
        """Terminate the publisher of ``path`` (SIGTERM: ffmpeg tears its session down).

        If the server still has the mount afterwards (a publisher that died without a
        TEARDOWN), the server is restarted so the next publisher is accepted.
        """
        _terminate(self._publishers.pop(path, None))
        if not check_unmounted:
            return
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            if self.describe(path) == 404:
                return
            time.sleep(0.05)
        self.restart()

    # -- probing

    def describe(self, path: str = "cam1") -> int:
        """Status code of an RTSP DESCRIBE of ``path`` on the client port (0 if no answer)."""
        request = f"DESCRIBE {self.url(path)} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
        try:
            with socket.create_connection(("127.0.0.1", self.client_port), timeout=2.0) as s:
                s.sendall(request.encode())
                line = s.recv(1024).split(b"\r\n", 1)[0].decode("latin-1")
        except OSError:
            return 0
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 and parts[0].startswith("RTSP/") and parts[1].isdigit() else 0

    def _fail(self, what: str) -> None:
        text = self.server_log.read_text(errors="replace")[-2000:] if self.server_log.exists() else ""
        pytest.fail(f"{what}\n{SERVER_BIN} log ({self.server_log}):\n{text}", pytrace=False)



class RtspStream:
    """One mount path of an :class:`RtspServer` whose ffmpeg publisher can be stopped and restarted."""

    def __init__(self, server: RtspServer, path: str) -> None:
        self.server, self.path = server, path

    @property
    def url(self) -> str:
        return self.server.url(self.path)

    @property
    def running(self) -> bool:
        return self.server.publisher_running(self.path)

    def start(self) -> None:
        self.server.start_publisher(self.path)

    def stop(self) -> None:
        self.server.stop_publisher(self.path)

"""Operations endpoints of a role: Prometheus ``/metrics`` and ``/healthz`` over HTTP.

Every role builds its metrics on its own :class:`prometheus_client.CollectorRegistry`
(never the process-global one), so several roles can share a process (``vigil run``) or a
test without their counters mixing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

HealthCheck = Callable[[], tuple[bool, dict]]


class OpsServer:
    """Serves ``/metrics`` from ``registry`` and ``/healthz`` from ``health`` (200 when
    healthy, 503 otherwise, JSON body either way) on a background thread."""

    def __init__(self, registry: CollectorRegistry, health: HealthCheck, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.registry, self.health = registry, health
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.startswith("/metrics"):
                    body, ctype, code = generate_latest(server.registry), CONTENT_TYPE_LATEST, 200
                elif self.path.startswith("/healthz"):
                    ok, detail = server.health()
                    body = json.dumps({"ok": ok, **detail}).encode()
                    ctype, code = "application/json", 200 if ok else 503
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                log.debug("ops: " + format, *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="ops-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> OpsServer:
        self.thread.start()
        log.info("metrics on http://%s:%d/metrics, health on /healthz", *self.httpd.server_address[:2])
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

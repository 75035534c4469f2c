"""The ops HTTP server: /metrics in Prometheus text format, /healthz as JSON with 200/503."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from vigil.ops import OpsServer


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("healthy", [True, False])
def test_metrics_and_health(healthy: bool) -> None:
    registry = CollectorRegistry()
    Counter("vigil_test_things", "things", registry=registry).inc(3)
    server = OpsServer(registry, lambda: (healthy, {"why": "test"})).start()
    try:
        code, body = get(server.port, "/metrics")
        assert code == 200 and b"vigil_test_things_total 3.0" in body
        code, body = get(server.port, "/healthz")
        assert code == (200 if healthy else 503)
        assert json.loads(body) == {"ok": healthy, "why": "test"}
        assert get(server.port, "/nope")[0] == 404
    finally:
        server.close()

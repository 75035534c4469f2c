"""Cameras' health on the page, from the ingest roles' health data (a real /healthz over HTTP)."""

from __future__ import annotations

import socket

from prometheus_client import CollectorRegistry

from streamer.ingest import IngestMetrics
from ui.health import UrlHealth, from_ingest_detail
from vigil.ops import OpsServer


def test_ingest_states_reach_the_page_from_a_real_healthz() -> None:
    clock = [0.0]
    metrics = IngestMetrics(CollectorRegistry(), clock=lambda: clock[0])
    for cam in ("gate", "door", "yard"):
        metrics.add_camera(cam, watchdog_s=10)
    metrics.frame_read("gate")
    metrics.frame_read("door")
    metrics.set_reconnecting("door")
    ops = OpsServer(CollectorRegistry(), lambda: (lambda ok, d: (ok, {"ingest": d}))(*metrics.health()),
                    port=0).start()
    try:
        url = f"http://127.0.0.1:{ops.port}/healthz"
        assert UrlHealth([url])() == {"gate": "streaming", "door": "reconnecting", "yard": "starting"}
        clock[0] = 30.0  # past the watchdog: unhealthy (503), its body still names the states
        assert UrlHealth([url])() == {"gate": "stalled", "door": "stalled", "yard": "stalled"}
        metrics.frame_read("door")  # a frame ends the reconnect
        assert UrlHealth([url])()["door"] == "streaming"
    finally:
        ops.close()


def test_a_health_url_that_does_not_answer_is_no_report_and_never_logged_with_its_password(caplog) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    health = UrlHealth([f"http://admin:hunter2@127.0.0.1:{port}/healthz"], timeout_s=0.5)
    assert health() is None
    assert "hunter2" not in caplog.text and "does not answer" in caplog.text


def test_detail_of_another_shape_is_left_out() -> None:
    assert from_ingest_detail({"ingest": {"cameras": {"a": {"state": "streaming"}, "b": {"x": 1}, "c": 3}}}) \
        == {"a": "streaming"}
    assert from_ingest_detail([1, 2]) == {} and from_ingest_detail({"cameras": "no"}) == {}

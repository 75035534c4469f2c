"""The review page in a real headless Chromium against a running pipeline.

Embedded: the shipped campus clip with a composited object (the alert tests' footage), the
tiny trained scene, every role on the in-process bus with the local store, and the page
(`vigil run`'s roles). A second camera is a dead RTSP URL with a password in it: its tile
says it is reconnecting, and the password appears nowhere the page or its API shows.
Deployment: the same through Kafka (tansu) and Redis, the page reading both.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from alerting.store import LocalStore, RedisStore
from common.bus import KafkaConfig
from tests.alerting.store.records import record, write
from tests.alerting.test_pipeline_alerts import config_data
from vigil.config import parse_config
from vigil.runner import RUN_ROLES, Pipeline

SECRET = "s3cret-pw"


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def closed_alert(store, camera: str):
    """The camera's closed alert (the session's broker and Redis may hold other tests' alerts)."""
    return next((r for r in store.list(camera) if r.status == "closed" and r.clip_ready), None)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def review_alert_in_browser(browser, base: str, alert_id: str, camera: str, shots: Path, name: str) -> None:
    """The operator's path: the list shows the alert, its page opens, the clip plays, the
    snapshot loads, and a false-alarm mark survives a reload."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base)
    row = page.wait_for_selector(f'tr.alert-row[data-alert="{alert_id}"]', timeout=20_000)
    assert camera in row.inner_text()
    tile = page.wait_for_selector(f'article.tile[data-camera="{camera}"] img', timeout=20_000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=tile, timeout=20_000)
    thumb = page.wait_for_selector(f'tr.alert-row[data-alert="{alert_id}"] img.thumb')
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb, timeout=20_000)
    page.screenshot(path=str(shots / f"{name}-cameras-and-alerts.png"), full_page=True)

    page.click(f'tr.alert-row[data-alert="{alert_id}"] a.alert-link')
    page.wait_for_url(f"**/alert/{alert_id}")
    page.wait_for_function("() => document.getElementById('facts').children.length > 0", timeout=20_000)
    video = page.wait_for_selector("#clip")
    page.wait_for_function("v => v.readyState >= 2", arg=video, timeout=30_000)
    page.evaluate("v => v.play()", video)
    page.wait_for_function("v => v.currentTime > 0.3", arg=video, timeout=30_000)
    page.evaluate("v => { v.pause(); v.currentTime = 1.0; }", video)
    snap = page.wait_for_selector("#snapshot")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=snap, timeout=20_000)
    assert page.inner_text("#review-state") == "not reviewed"
    page.click("#mark-false")
    page.wait_for_function("() => document.getElementById('review-state').textContent === 'false alarm'")
    page.reload()
    page.wait_for_function("() => document.getElementById('review-state').textContent === 'false alarm'",
                           timeout=20_000)
    page.wait_for_function("v => v.readyState >= 2", arg=page.query_selector("#clip"), timeout=30_000)
    page.screenshot(path=str(shots / f"{name}-alert.png"), full_page=True)
    assert SECRET not in page.content()
    assert errors == [], errors
    page.close()


def assert_no_secret_anywhere(base: str, alert_id: str) -> None:
    for path in ("", "api/cameras", "api/alerts", f"api/alerts/{alert_id}", "metrics", "healthz",
                 f"alert/{alert_id}", "api/cameras/door/scores"):
        try:
            body = fetch(base + path)
        except urllib.error.HTTPError as exc:  # /healthz is 503 while the dead camera stalls
            body = exc.read()
        assert SECRET.encode() not in body, path


def test_embedded_pipeline_review_page_in_a_browser(browser, registry, anomaly_folder, tmp_path,
                                                    shots) -> None:
    data = config_data(registry.root, tmp_path, anomaly_folder, "cam-emb",
                       {"kind": "local", "dir": str(tmp_path / "alerts")})
    data["cameras"].append({"id": "door", "url": f"rtsp://viewer:{SECRET}@127.0.0.1:9/stream",
                            "scene": data["cameras"][0]["scene"], "watchdog_s": 60})
    data["ui"] = {"port": 0}
    cfg = parse_config(data)
    store = LocalStore(cfg.alerting.store)
    with Pipeline(cfg, RUN_ROLES) as pipeline:
        assert pipeline.ui is not None and pipeline.ui.url.startswith("http://127.0.0.1:")
        rec = wait_for(lambda: closed_alert(store, "cam-emb"), 180, "a closed alert")
        base = pipeline.ui.url
        cameras = {c["camera"]: c for c in json.loads(fetch(base + "api/cameras"))["cameras"]}
        assert cameras["cam-emb"]["live"] and cameras["cam-emb"]["scene"] == data["cameras"][0]["scene"]
        assert wait_for(lambda: {c["camera"]: c for c in json.loads(fetch(base + "api/cameras"))["cameras"]}
                        ["door"]["health"] == "reconnecting", 30, "the dead camera to show reconnecting")
        scores = json.loads(fetch(base + "api/cameras/cam-emb/scores"))
        assert len(scores["points"]) > 50 and scores["threshold"] == 1.0
        # HTML in an alert's text fields is shown as text, never run (the model string is free text)
        store.put(write(record("cam-emb-000009999", version=9999, start_seq=9999, camera="cam-emb",
                               model='<img src=x onerror="window.__pwned=1">', status="closed",
                               start_ts=0, peak_ts=0, snapshot_key=None)))
        review_alert_in_browser(browser, base, rec.alert_id, "cam-emb", shots, "embedded")
        page = browser.new_page()
        page.goto(base + "alert/cam-emb-000009999")
        page.wait_for_function("() => document.getElementById('facts').textContent.includes('onerror')",
                               timeout=20_000)
        assert page.evaluate("() => window.__pwned") is None
        assert page.query_selector("#facts img") is None
        page.close()
        door = browser.new_page(viewport={"width": 1280, "height": 900})
        door.goto(base)
        badge = door.wait_for_selector('article.tile[data-camera="door"] .health', timeout=20_000)
        door.wait_for_function("b => b.textContent === 'reconnecting'", arg=badge, timeout=20_000)
        door.close()
        assert_no_secret_anywhere(base, rec.alert_id)
    assert store.reviews([rec.alert_id])[rec.alert_id]["mark"] == "false_alarm"


@pytest.mark.kafka
def test_deployment_review_page_on_kafka_and_redis(browser, registry, anomaly_folder, tmp_path, shots,
                                                   kafka_config: KafkaConfig, redis_url: str) -> None:
    bus = {"kind": "kafka", "kafka": kafka_config.model_dump(mode="json") | {"sasl_plain_password": None}}
    store_cfg = {"kind": "redis", "url": redis_url, "retention_s": 3600, "spool_dir": str(tmp_path / "spool")}
    data = config_data(registry.root, tmp_path, anomaly_folder, "cam-ui-kafka", store_cfg, bus)
    data["ui"] = {"port": 0, "group": "vigil-ui-test"}
    cfg = parse_config(data)
    store = RedisStore(cfg.alerting.store)
    with Pipeline(cfg, ("ingest", "detect", "alert")) as roles, Pipeline(cfg, ("ui",)) as page_process:
        # the page runs as its own "process" (its own pipeline): everything it shows comes through
        # Kafka and Redis
        assert page_process.ui is not None and roles.ui is None
        rec = wait_for(lambda: closed_alert(store, "cam-ui-kafka"), 240, "a closed alert in Redis")
        base = page_process.ui.url
        wait_for(lambda: any(c["camera"] == "cam-ui-kafka" and c["live"]
                             for c in json.loads(fetch(base + "api/cameras"))["cameras"]), 60,
                 "the camera's frames through Kafka")
        review_alert_in_browser(browser, base, rec.alert_id, "cam-ui-kafka", shots, "kafka")
    assert store.reviews([rec.alert_id])[rec.alert_id]["mark"] == "false_alarm"
    store.close()

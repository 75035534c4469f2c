"""``/healthz`` of a process's roles (the score recorder and the alert role here, on the
in-process bus): each role's ``alive`` and ``error``, the alert role's spooled and queued
writes; and the recorder's bounds from the config."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from alerting.store import StoreWriteError
from common.messages import FRAMES_TOPIC, SCORES_TOPIC
from tests.alerting.poison import good_frame, good_score, total
from vigil.config import ConfigError, parse_config
from vigil.runner import Pipeline

IMAGE = np.random.default_rng(2).integers(0, 255, (48, 64, 3), dtype=np.uint8)


def config(tmp_path: Path, **recorder):
    """The recorder and an eager alert role (one hot score starts an alert), ops on a free port."""
    return parse_config({
        "ops": {"port": 0},
        "recorder": {"dir": str(tmp_path / "scores"), **recorder},
        "alerting": {
            "lifecycle": {"enter": 1.0, "exit": 0.8, "k": 1, "n": 1, "m": 1, "min_duration_s": 0.0,
                          "cooldown_s": 0.0, "update_min_interval_s": 0.0},
            "clip": {"pre_roll_s": 0.0, "post_roll_s": 0.0, "tmp_dir": str(tmp_path / "tmp")},
            "store": {"kind": "local", "dir": str(tmp_path / "alerts")}, "join_timeout_s": 0.0,
        },
    })


def healthz(pipeline: Pipeline) -> tuple[int, dict]:
    assert pipeline.ops is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{pipeline.ops.port}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503: unhealthy, same JSON body
        return exc.code, json.loads(exc.read())


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_role_whose_thread_failed_makes_health_not_ok_and_shows_its_error(tmp_path) -> None:
    with Pipeline(config(tmp_path), roles=("record", "alert")) as pipeline:
        code, body = healthz(pipeline)
        assert code == 200 and body["ok"] is True
        assert body["recorder"] == {"alive": True, "error": None}
        assert body["alert"] == {"alive": True, "error": None, "spooled": 0, "queued_writes": 0}

        def broken_bus(**_kw):  # a failure of no record: it ends the role's thread
            raise RuntimeError("broker at kafka://vigil:hunter2@broker:9092 went away\nfor good")

        assert pipeline.recorder is not None and pipeline.alerter is not None
        pipeline.recorder.consumer.poll = broken_bus  # type: ignore[method-assign]
        wait_for(lambda: not pipeline.recorder.alive)
        code, body = healthz(pipeline)
        assert code == 503 and body["ok"] is False
        assert body["recorder"] == {
            "alive": False, "error": "RuntimeError: broker at kafka://***@broker:9092 went away for good"}
        assert body["alert"]["error"] is None  # the other role is fine, and says so

        pipeline.alerter.consumer.poll = broken_bus  # type: ignore[method-assign]
        wait_for(lambda: not pipeline.alerter.alive)
        code, body = healthz(pipeline)
        assert code == 503 and body["alert"]["alive"] is False
        assert body["alert"]["error"].startswith("RuntimeError: broker at kafka://***@broker")
        assert "hunter2" not in json.dumps(body)


def test_an_error_alone_makes_health_not_ok(tmp_path) -> None:
    """A role that recorded an error is unhealthy even while its thread still runs."""
    with Pipeline(config(tmp_path), roles=("record",)) as pipeline:
        assert pipeline.health()[0]
        assert pipeline.recorder is not None
        pipeline.recorder.error = OSError(28, "No space left on device")
        ok, detail = pipeline.health()
        assert not ok and detail["recorder"] == {"alive": True,
                                                 "error": "OSError: [Errno 28] No space left on device"}


def test_health_shows_the_writes_the_alert_store_refuses(tmp_path, monkeypatch) -> None:
    with Pipeline(config(tmp_path), roles=("alert",)) as pipeline:
        assert pipeline.alerter is not None and pipeline.bus is not None
        store = pipeline.alerter.store
        put = store.put

        def disk_full(write):
            raise StoreWriteError(tmp_path / "alerts" / "x.json", OSError(28, "No space left on device"))

        monkeypatch.setattr(store, "put", disk_full)
        producer = pipeline.bus.producer()
        producer.send(FRAMES_TOPIC, *good_frame(IMAGE, "gate", 0))
        producer.send(SCORES_TOPIC, *good_score("gate", 0, score=2.0))  # hot: an alert starts
        wait_for(lambda: pipeline.alerter.queued_writes > 0)
        ok, detail = pipeline.health()
        assert detail["alert"]["queued_writes"] == pipeline.alerter.queued_writes >= 1
        assert ok and detail["alert"]["error"] is None  # waiting for its store is not a crash
        monkeypatch.setattr(store, "put", put)  # the disk has room again: the writes go through
        wait_for(lambda: pipeline.alerter.queued_writes == 0, timeout=60)
        assert pipeline.health()[1]["alert"]["queued_writes"] == 0
        assert [r.camera for r in store.list("gate")] == ["gate"]


def test_the_recorder_bounds_come_from_the_config(tmp_path) -> None:
    cfg = config(tmp_path, max_cameras=2, max_open_files=1)
    assert (cfg.recorder.max_cameras, cfg.recorder.max_open_files) == (2, 1)
    with Pipeline(cfg, roles=("record",)) as pipeline:
        recorder = pipeline.recorder
        assert recorder is not None and (recorder.max_cameras, recorder.max_open_files) == (2, 1)
        assert pipeline.bus is not None
        producer = pipeline.bus.producer()
        for seq in range(3):
            for camera in ("a", "b", "c"):
                producer.send(SCORES_TOPIC, *good_score(camera, seq))
        wait_for(lambda: total(pipeline.registry, "vigil_recorder_rejected_total") == 3)
        assert (recorder.count("a"), recorder.count("b"), recorder.count("c")) == (3, 3, 0)
        assert total(pipeline.registry, "vigil_recorder_rejected_total", reason="too_many_cameras") == 3
        assert len(recorder._files) == 1  # one CSV open at a time
    for camera in ("a", "b"):  # reopened for appending, not truncated
        rows = (tmp_path / "scores" / f"{camera}.csv").read_text().splitlines()
        assert [r.split(",")[0] for r in rows] == ["seq", "0", "1", "2"]
    defaults = parse_config({}).recorder
    assert (defaults.max_cameras, defaults.max_open_files) == (1024, 64)


@pytest.mark.parametrize(("recorder", "message"), [
    ({"max_camera": 5}, "recorder.max_camera: unknown key"),
    ({"max_cameras": 0}, "recorder.max_cameras: Input should be greater than or equal to 1"),
    ({"max_open_files": "many"}, "recorder.max_open_files: "),
])
def test_recorder_settings_are_strict(recorder: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"recorder": recorder})

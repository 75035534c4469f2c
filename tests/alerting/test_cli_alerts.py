"""`vigil run` with the alert role, `vigil alerts` against Redis, and the alerting config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from alerting.config import AlertingConfig, RedisStoreConfig
from tests.alerting.streams import clip_images, composite, messages, publish
from tests.alerting.test_worker import CAMERA, EVENT, Harness, alerting_config, redis
from tests.conftest import TINY_SCENE
from tests.vigil.test_cli import vigil
from vigil.cli import build_parser
from vigil.config import ConfigError, parse_config


def test_vigil_run_starts_the_alert_role(registry, anomaly_folder, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "scenes": {"root": str(registry.root)},
        "detector": {"batch_size": 8, "max_wait_ms": 20, "map_size": 32},
        "cameras": [{"id": "cli-cam", "url": str(anomaly_folder), "scene": TINY_SCENE, "replay_start_ms": 0}],
        "recorder": {"dir": str(tmp_path / "scores")},
        "alerting": {"lifecycle": {"enter": 2.3, "exit": 2.0}, "store": {"dir": str(tmp_path / "alerts")}},
    }))
    run = vigil("--config", config, "run")
    assert run.code == 0, run.err
    summary = json.loads(run.out.strip().splitlines()[-1])
    assert summary["scores_recorded"] == {"cli-cam": 120}
    assert summary["alerts_started"] == 1 and summary["alert_store"] == str(tmp_path / "alerts")
    listed = vigil("--config", config, "alerts", "list")
    [alert] = [json.loads(line) for line in listed.out.splitlines()]
    assert alert["camera"] == "cli-cam" and alert["status"] == "closed"


def test_alerts_commands_on_redis(redis_url: str, tmp_path: Path) -> None:
    cfg = alerting_config(redis(redis_url, tmp_path))
    h = Harness(cfg)
    publish(h.producer, messages(composite(clip_images(), EVENT), CAMERA, EVENT, seqs=range(0, 75)))
    h.drain()  # the alert is open: no clip yet
    config = tmp_path / "redis.yaml"
    config.write_text(yaml.safe_dump({"alerting": cfg.model_dump(mode="json")}))
    tail = vigil("--config", config, "alerts", "tail", "--from-beginning", "--count", "1")
    assert tail.code == 0, tail.err
    [start] = [json.loads(line) for line in tail.out.splitlines()]
    assert start["state"] == "start" and start["camera"] == CAMERA
    none = vigil("--config", config, "alerts", "tail", "--from-beginning", "--camera", "other",
                 "--timeout", "1")
    assert none.code == 0 and none.out == ""
    listed = vigil("--config", config, "alerts", "list", "--camera", CAMERA)
    assert [json.loads(line)["status"] for line in listed.out.splitlines()] == ["open"]
    early = vigil("--config", config, "alerts", "get", start["alert_id"], "-o", tmp_path / "c.mp4")
    assert early.code == 2 and "no clip yet" in early.err
    snap = vigil("--config", config, "alerts", "get", start["alert_id"], "--snapshot", tmp_path / "s.jpg")
    assert snap.code == 0 and (tmp_path / "s.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    down = tmp_path / "down.yaml"
    down.write_text(yaml.safe_dump({"alerting": {"store": {"kind": "redis", "url": "redis://127.0.0.1:1/0",
                                                            "socket_timeout_s": 0.5}}}))
    unreachable = vigil("--config", down, "alerts", "list")
    assert unreachable.code == 2 and "unreachable" in unreachable.err and "Traceback" not in unreachable.err


def test_parser_knows_the_alert_commands() -> None:
    p = build_parser()
    assert p.parse_args(["alert"]).func.__name__ == "cmd_alert"
    a = p.parse_args(["alerts", "tail", "--from-beginning", "--camera", "c"])
    assert a.from_beginning and a.camera == "c" and a.source == "auto"
    g = p.parse_args(["alerts", "get", "x", "-o", "clip.mp4", "--snapshot", "snap.jpg"])
    assert (g.alert_id, g.out, g.snapshot) == ("x", Path("clip.mp4"), Path("snap.jpg"))


@pytest.mark.parametrize(("data", "message"), [
    ({"alerting": {"lifecycle": {"kk": 1}}}, "alerting.lifecycle.kk: unknown key"),
    ({"alerting": {"store": {"kind": "redis", "urll": "x"}}}, "urll: unknown key"),
    ({"alerting": {"store": {"kind": "s3"}}}, "alerting.store"),
    ({"alerting": {"lifecycle": {"k": 9}}}, "k (9) must be <= n (5)"),
    ({"alerting": {"scenes": {"01": {"exit": 3.0}}}}, "scenes.01: exit (3.0) must be <= enter"),
])
def test_alerting_config_is_strict(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(data)


def test_redis_settings_hide_the_password() -> None:
    cfg = RedisStoreConfig(url="rediss://cache:6380/1", username="vigil", password="hunter2")
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(AlertingConfig(store=cfg))
    assert parse_config({"alerting": {"store": {"kind": "redis", "tls": True}}}).alerting.store.tls
    assert np.isclose(parse_config(None).alerting.lifecycle.enter, 1.0)

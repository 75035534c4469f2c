"""Credentials Redis refuses are a set-up error, not an outage: on a real ``redis-server
--requirepass`` (a second one, on its own free port), a wrong or missing password fails when
the store is opened -- ``vigil alert`` exits 2 with one line naming the redacted URL and the
config key -- and is never spooled as if Redis were away."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import yaml
from prometheus_client import CollectorRegistry

from alerting.config import AlertingConfig, RedisStoreConfig
from alerting.store import RedisStore, StoreAuthError, StoreUnavailableError, open_store
from alerting.worker import AlertMetrics, AlertWorker
from common.bus import InProcessBus
from common.messages import FRAMES_TOPIC, SCORES_TOPIC
from tests.alerting.poison import good_frame, good_score, total
from tests.alerting.store.records import record, write
from tests.servers import RedisServer
from tests.vigil.test_cli import vigil

PASSWORD = "Redis-PW-9"
WRONG = "Wrong-PW-1"
IMAGE = np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A second redis-server (the session's has no password), started like it, then locked
    with ``requirepass``."""
    server = RedisServer(tmp_path_factory.mktemp("redis-auth"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        with redis.Redis(port=server.port) as admin:
            admin.config_set("requirepass", PASSWORD)
        yield server
    finally:
        server.stop()


def url(server: RedisServer, userinfo: str = "") -> str:
    return f"redis://{userinfo}127.0.0.1:{server.port}/0"


@pytest.mark.parametrize(("userinfo", "settings", "hint"), [
    (f":{WRONG}@", {}, "check the user:password in alerting.store.url"),
    ("", {"password": WRONG}, "check alerting.store.password"),
    ("", {"username": "nobody", "password": PASSWORD},
     "check alerting.store.username / alerting.store.password"),
    ("", {}, "no password is configured and this server requires one: set alerting.store.password"),
])
def test_refused_credentials_fail_when_the_store_opens(locked_redis: RedisServer, tmp_path: Path,
                                                       userinfo: str, settings: dict, hint: str) -> None:
    cfg = RedisStoreConfig(url=url(locked_redis, userinfo), spool_dir=tmp_path / "spool", **settings)
    with pytest.raises(StoreAuthError) as info:
        open_store(cfg)
    text = str(info.value)
    shown = f"redis://{'***@' if userinfo else ''}127.0.0.1:{locked_redis.port}/0"
    assert text.startswith(f"Redis at {shown} refused the credentials (the connection check: ")
    assert hint in text
    assert WRONG not in text and PASSWORD not in text
    assert not isinstance(info.value, StoreUnavailableError)  # not an outage: nothing to spool
    assert not (tmp_path / "spool").exists()


def test_the_right_password_in_the_url_or_the_password_key(locked_redis: RedisServer) -> None:
    for cfg in (RedisStoreConfig(url=url(locked_redis, f":{PASSWORD}@")),
                RedisStoreConfig(url=url(locked_redis), password=PASSWORD)):
        store = RedisStore(cfg)
        try:
            assert store.ping() and store.put(write(record())).stored
            assert store.get(record().alert_id) is not None
        finally:
            store.close()


def test_vigil_alert_exits_2_with_one_line(locked_redis: RedisServer, tmp_path: Path) -> None:
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump({"alerting": {"store": {
        "kind": "redis", "url": url(locked_redis, f":{WRONG}@"), "spool_dir": str(tmp_path / "spool")}}}))
    run = vigil("--config", config, "alert")
    assert run.code == 2 and "Traceback" not in run.err
    [line] = [line for line in run.err.splitlines() if line.startswith("vigil: error:")]
    assert line.startswith(f"vigil: error: Redis at redis://***@127.0.0.1:{locked_redis.port}/0 refused the "
                           "credentials (the connection check: invalid username-password pair")
    assert line.endswith("check the user:password in alerting.store.url")
    assert WRONG not in run.err and not (tmp_path / "spool").exists()
    # `vigil alerts` reads through the same check
    run = vigil("--config", config, "alerts", "list")
    assert run.code == 2 and "refused the credentials" in run.err and WRONG not in run.err


def test_credentials_refused_later_are_not_spooled_and_the_alert_role_says_why(
        locked_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The password changes on the server while the role runs: its writes fail with the reason
    ``auth``, are kept in memory (bounded, records uncommitted) and never reach the spool."""
    cfg = RedisStoreConfig(url=url(locked_redis), password=PASSWORD, spool_dir=tmp_path / "spool",
                           socket_timeout_s=1.0)
    store = open_store(cfg)
    admin = redis.Redis(port=locked_redis.port, password=PASSWORD)
    try:
        assert store.put(write(record())).stored
        admin.config_set("requirepass", "Rotated-PW-2")
        admin.client_kill_filter(_type="normal", skipme=True)  # every other client must log in again
        with pytest.raises(StoreAuthError, match="refused the credentials"):
            store.put(write(record("cam-000000001", start_seq=1, version=1)))
        assert store.pending() == 0

        bus = InProcessBus(partitions=1)
        bus.ensure_topics([FRAMES_TOPIC, SCORES_TOPIC])
        producer = bus.producer()
        alerting = AlertingConfig.model_validate({
            "lifecycle": {"enter": 1.0, "exit": 0.8, "k": 1, "n": 1, "m": 1, "min_duration_s": 0.0,
                          "cooldown_s": 0.0, "update_min_interval_s": 0.0},
            "clip": {"pre_roll_s": 0.0, "post_roll_s": 0.0, "tmp_dir": str(tmp_path / "tmp")},
            "join_timeout_s": 0.0})
        metrics = AlertMetrics(CollectorRegistry())
        worker = AlertWorker(bus.consumer("alert", [FRAMES_TOPIC, SCORES_TOPIC]), producer, store, alerting,
                             metrics, threading.Event())
        producer.send(FRAMES_TOPIC, *good_frame(IMAGE, "gate", 0))
        producer.send(SCORES_TOPIC, *good_score("gate", 0, score=2.0))  # an alert starts: a write
        with caplog.at_level(logging.ERROR, logger="alerting.worker"):
            while records := worker.consumer.poll(max_records=64, timeout_ms=0):
                worker.handle(records)
        assert total(metrics.registry, "vigil_alert_store_errors_total", reason="auth") == 1
        assert worker.queued_writes == 1 and store.pending() == 0
        assert bus.lag("alert", [FRAMES_TOPIC, SCORES_TOPIC]) > 0  # the alert's records stay uncommitted
        [line] = [r.getMessage() for r in caplog.records]
        assert "refused the credentials" in line and "alerting.store.password" in line
        assert PASSWORD not in line and "Rotated-PW-2" not in line
    finally:
        admin.config_set("requirepass", PASSWORD)
        admin.close()
        store.close()


def test_the_url_password_never_shows(locked_redis: RedisServer) -> None:
    cfg = RedisStoreConfig(url=url(locked_redis, f"vigil:{PASSWORD}@"))
    for text in (repr(cfg), str(cfg), repr(AlertingConfig(store=cfg)), str(AlertingConfig(store=cfg))):
        assert PASSWORD not in text and f"redis://***@127.0.0.1:{locked_redis.port}/0" in text
    for bad in (f"http://vigil:{PASSWORD}@cache:6379/0", f"vigil:{PASSWORD}@cache:6379"):
        with pytest.raises(ValueError, match="url must start with redis://, rediss:// or unix://") as info:
            RedisStoreConfig(url=bad)
        assert PASSWORD not in str(info.value)
    with pytest.raises(ValueError) as info:  # an error about the whole section does not echo it
        AlertingConfig.model_validate({"store": {"kind": "redis-cluster", "url": cfg.url}})
    assert PASSWORD not in str(info.value)

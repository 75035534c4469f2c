"""The ``vigil`` command's logging set-up: no library's log line shows a secret, at DEBUG."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.admin.client import KafkaAdminClient

from vigil import cli
from vigil.cli import main
from vigil.config import ConfigError


@contextlib.contextmanager
def bare_root() -> Iterator[None]:
    """The root logger as a fresh process has it (no handlers, level WARNING), restored
    afterwards. A context, not a fixture: pytest adds its own handlers for the test call."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        root.handlers.extend(handlers)
        root.setLevel(level)


def test_library_log_lines_are_redacted_at_debug(tmp_path: Path) -> None:
    err = io.StringIO()
    with bare_root(), contextlib.redirect_stderr(err):  # basicConfig's handler writes to err
        assert main(["-v", "scenes", "--registry", str(tmp_path)]) == 0
        # kafka-python's own line, with its own configuration dict
        config = {**KafkaAdminClient.DEFAULT_CONFIG, "bootstrap_servers": "kafka:9093",
                  "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
                  "sasl_plain_username": "vigil", "sasl_plain_password": "Kafka-PW-1",
                  "ssl_password": "Key-PW-2"}
        logging.getLogger("kafka.admin.client").debug(
            "Starting KafkaAdminClient with configuration: %s", config)
        logging.getLogger("redis.connection").debug(
            "connecting with %s", "redis://:Redis-PW-3@redis:6379/0")
        logging.getLogger("kafka.conn").debug("sasl: password=Kafka-PW-4 user=vigil")
        try:
            raise OSError("cannot open rtsp://admin:p@ss w/rd#5@cam.local/live")
        except OSError:
            logging.getLogger("streamer").exception("camera down")
    out = err.getvalue()
    assert "Starting KafkaAdminClient with configuration" in out  # DEBUG is on
    assert "'sasl_plain_password': '***'" in out and "'sasl_plain_username': 'vigil'" in out
    assert "redis://***@redis:6379/0" in out and "rtsp://***@cam.local/live" in out
    for secret in ("Kafka-PW-1", "Key-PW-2", "Redis-PW-3", "Kafka-PW-4", "p@ss w/rd#5"):
        assert secret not in out


def test_error_messages_are_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(args, cfg) -> int:
        raise ConfigError("alerting.store.url: cannot reach redis://:Redis-PW-7@redis:6379/0")

    monkeypatch.setattr(cli, "cmd_scenes", fails)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main(["scenes", "--registry", str(tmp_path)]) == 2
    assert err.getvalue() == "vigil: error: alerting.store.url: cannot reach redis://***@redis:6379/0\n"

"""Delivery defaults: the Apache Kafka deployment configs use the idempotent producer with
acks=all; the bus hands those settings to kafka-python (tansu, in the tests, cannot)."""

from __future__ import annotations

import kafka
import pytest
from pydantic import ValidationError

from common.bus import KafkaBusProducer, KafkaConfig
from tests.conftest import REPO
from vigil.config import load_config


@pytest.mark.parametrize("name", ["kafka.yaml", "compose.yaml"])
def test_deployment_configs_use_the_idempotent_producer_with_acks_all(name: str) -> None:
    cfg = load_config(REPO / "configs" / name).bus.kafka
    assert cfg is not None and cfg.api_version is None  # Apache Kafka: probed, not pinned for tansu
    assert cfg.acks == "all" and cfg.enable_idempotence is True
    assert cfg.partitions == 4


def test_idempotence_needs_acks_all() -> None:
    with pytest.raises(ValidationError, match="enable_idempotence needs acks 'all'"):
        KafkaConfig(enable_idempotence=True, acks="1")
    with pytest.raises(ValidationError, match="delivery_timeout_ms"):
        KafkaConfig(delivery_timeout_ms=1000)  # below request_timeout_ms: nothing could be retried
    assert KafkaConfig().enable_idempotence is False  # what tansu can do; deployments turn it on


def test_the_producer_gets_the_delivery_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    class FakeProducer:
        def __init__(self, **kw: object) -> None:
            seen.update(kw)

    monkeypatch.setattr(kafka, "KafkaProducer", FakeProducer)
    KafkaBusProducer(load_config(REPO / "configs" / "compose.yaml").bus.kafka)
    assert seen["acks"] == "all" and seen["enable_idempotence"] is True
    assert seen["delivery_timeout_ms"] == 120_000 and seen["reconnect_backoff_max_ms"] == 1_000
    assert "api_version" not in seen

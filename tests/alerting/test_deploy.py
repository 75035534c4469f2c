"""The deployment files: docker-compose.yml (Docker does not run here) and its config."""

from __future__ import annotations

import yaml

from tests.conftest import REPO
from vigil.config import load_config


def test_compose_file_has_the_services_and_a_gpu_for_the_detector() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"kafka", "redis", "ingest", "detect", "alert"}
    for role in ("ingest", "detect", "alert"):
        command = services[role]["command"]
        assert command[:2] == ["vigil", "--config"] and command[-1] == role
        config = command[2]
        mounts = [v.split(":") for v in services[role]["volumes"]]
        host = next(h for h, container, *_ in mounts if config.startswith(container + "/"))
        cfg = load_config(REPO / host / config.rsplit("/", 1)[1])
        assert cfg.bus.kind == "kafka" and cfg.bus.kafka.bootstrap_servers == ["kafka:9092"]
        assert cfg.alerting.store.kind == "redis" and "redis:6379" in cfg.alerting.store.url
        assert set(services[role]["depends_on"]) == {"kafka", "redis"}
    devices = services["detect"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "--appendonly" in services["redis"]["command"]
    assert set(compose["volumes"]) == {"redis-data", "alert-spool"}


def test_bootstrap_installs_redis() -> None:
    assert "redis-server" in (REPO / "scripts" / "bootstrap-system.sh").read_text()

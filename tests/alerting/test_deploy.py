"""The deployment files: docker-compose.yml (Docker does not run here) and its config."""

from __future__ import annotations

import tomllib
import yaml

from tests.conftest import REPO
from vigil.config import load_config


def test_compose_file_has_the_services_and_a_gpu_for_the_detector() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"kafka", "redis", "ingest", "detect", "alert", "ui"}
    for role in ("ingest", "detect", "alert", "ui"):
        command = services[role]["command"]
        assert command[:2] == ["vigil", "--config"] and role in command[3:]
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
    # the review page: published on the host's loopback only, camera health from the ingest role
    assert services["ui"]["ports"] == ["127.0.0.1:8765:8765"]
    cfg = load_config(REPO / "configs" / "compose.yaml")
    assert cfg.ui.health_urls == ["http://ingest:9100/healthz"] and cfg.ops.port == 9100


def test_bootstrap_installs_redis() -> None:
    assert "redis-server" in (REPO / "scripts" / "bootstrap-system.sh").read_text()


def _pip_targets(text: str) -> set[str]:
    """The package specs of every `pip install` in a Makefile or Dockerfile text."""
    targets: set[str] = set()
    for line in text.splitlines():
        if "pip install" in line:
            words = line.split("pip install", 1)[1].split()
            targets |= {w.strip("'\"") for w in words if not w.startswith("-") and w not in ("&&", "\\")}
    return targets


def test_compose_builds_the_dockerfile_which_installs_what_make_installs() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for role in ("ingest", "detect", "alert", "ui"):
        assert compose["services"][role]["build"] == "."
    dockerfile = (REPO / "Dockerfile").read_text()
    (base,) = [ln for ln in dockerfile.splitlines() if ln.startswith("FROM ")]
    assert base.startswith("FROM nvidia/cuda:") and "runtime" in base
    make = _pip_targets((REPO / "Makefile").read_text())
    assert make == {".[dev]"} and _pip_targets(dockerfile) == make
    # every package the install needs is copied into the image
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {p.rstrip("*") for p in include["include"]} <= copied
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "models" in ignored

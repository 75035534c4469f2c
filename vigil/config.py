"""The vigilflow configuration file: strictly validated YAML.

Unknown keys are rejected and every error names the key it is about, e.g.
``configs/default.yaml: training.epochs: Input should be a valid integer``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator

from alerting.config import AlertingConfig
from common.bus import KafkaConfig
from common.config import Strict
from detector.settings import DetectorSettings
from streamer.camera import CameraConfig
from training.settings import TrainSettings
from ui.config import UiConfig

UNKNOWN_KEY_ERRORS = {"extra_forbidden", "unexpected_keyword_argument"}


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid."""


class SetupError(ConfigError):
    """The config is valid but what it points at is not usable: a camera's scene has no
    checkpoint, a checkpoint is broken (see :func:`vigil.runner.check_scenes`)."""


class EncoderConfig(Strict):
    """The shared feature encoder."""

    name: str = "tf_efficientnet_lite0"
    weights: Path | None = Field(
        default=None, description="weights file; required for encoders that ship no weights"
    )


class ScenesConfig(Strict):
    """Where scene checkpoints live."""

    root: Path = Path("models")


class BusConfig(Strict):
    """Transport between the roles: the in-process bus (embedded mode) or Kafka."""

    kind: Literal["inprocess", "kafka"] = "inprocess"
    partitions: int = Field(default=4, ge=1, description="in-process bus partitions")
    max_message_bytes: int = Field(default=1_048_576, gt=0, description="in-process message limit")
    replay_max_lag: int = Field(
        default=64, ge=1, description="embedded mode: a replay waits while this many frames are unscored"
    )
    kafka: KafkaConfig | None = None

    @model_validator(mode="after")
    def _kafka_needs_settings(self) -> BusConfig:
        if self.kind == "kafka" and self.kafka is None:
            raise ValueError("bus.kind is 'kafka' but there is no bus.kafka section")
        return self


class OpsConfig(Strict):
    """Prometheus /metrics and /healthz of each role."""

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535, description="None: no HTTP server")


class RecorderConfig(Strict):
    """Where `vigil run` writes the score stream (one CSV per camera), and its bounds."""

    enabled: bool = True
    dir: Path = Path("runs/scores")
    group: str = "vigil-recorder"
    max_cameras: int = Field(default=1024, ge=1, description="cameras recorded at most; the records of "
                             "further cameras are skipped and counted (too_many_cameras)")
    max_open_files: int = Field(default=64, ge=1, description="CSV files open at once; the least recently "
                                "written is closed, and reopened for appending when needed")


class VigilConfig(Strict):
    """The whole config file. Validation errors never echo the input (camera and Redis URLs may
    hold passwords); :func:`parse_config` names each key instead."""

    model_config = ConfigDict(hide_input_in_errors=True)

    encoder: EncoderConfig = EncoderConfig()
    scenes: ScenesConfig = ScenesConfig()
    detector: DetectorSettings = DetectorSettings()
    training: TrainSettings = Field(default_factory=TrainSettings)
    cameras: list[CameraConfig] = Field(default_factory=list)
    bus: BusConfig = BusConfig()
    ops: OpsConfig = OpsConfig()
    recorder: RecorderConfig = RecorderConfig()
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    ui: UiConfig = Field(default_factory=UiConfig)

    @model_validator(mode="after")
    def _unique_cameras(self) -> VigilConfig:
        ids = [c.id for c in self.cameras]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"camera ids must be unique; repeated: {dupes}")
        return self


def _format(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] in UNKNOWN_KEY_ERRORS else err["msg"]
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config") -> VigilConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return VigilConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, source)) from None


def load_config(path: str | Path | None) -> VigilConfig:
    """Load and validate a YAML config; ``None`` gives the built-in defaults."""
    if path is None:
        return VigilConfig()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {_without_snippets(exc)}") from None
    return parse_config(data, str(path))


def _without_snippets(exc: BaseException) -> BaseException:
    """A YAML error without its copies of the offending line: PyYAML cuts that line at a
    fixed width, and a URL cut inside its password no longer reads as a URL that redaction
    can find. Line and column stay in the message."""
    if isinstance(exc, yaml.MarkedYAMLError):
        for mark in (exc.context_mark, exc.problem_mark):
            if mark is not None:
                mark.buffer = None
    return exc

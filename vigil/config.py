"""The vigilflow configuration file: strictly validated YAML.

Unknown keys are rejected and every error names the key it is about, e.g.
``configs/default.yaml: training.epochs: Input should be a valid integer``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from training.train import TrainSettings

UNKNOWN_KEY_ERRORS = {"extra_forbidden", "unexpected_keyword_argument"}


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncoderConfig(Strict):
    """The shared feature encoder."""

    name: str = "tf_efficientnet_lite0"
    weights: Path | None = Field(
        default=None, description="weights file; required for encoders that ship no weights"
    )


class ScenesConfig(Strict):
    """Where scene checkpoints live."""

    root: Path = Path("models")


class DetectorConfig(Strict):
    device: str = "cpu"
    batch_size: int = Field(default=8, ge=1)


class VigilConfig(Strict):
    encoder: EncoderConfig = EncoderConfig()
    scenes: ScenesConfig = ScenesConfig()
    detector: DetectorConfig = DetectorConfig()
    training: TrainSettings = Field(default_factory=TrainSettings)


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
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    return parse_config(data, str(path))

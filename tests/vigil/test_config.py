"""The configuration file: strict validation with errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO
from vigil.config import ConfigError, VigilConfig, load_config, parse_config


@pytest.mark.parametrize(("data", "key"), [
    ({"encoders": {}}, "encoders"),
    ({"training": {"epoch": 3}}, "training.epoch"),
    ({"encoder": {"nme": "resnet18"}}, "encoder.nme"),
    ({"scenes": {"root": "m", "extra": 1}}, "scenes.extra"),
])
def test_unknown_key_is_named(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"config: {key}: unknown key"):
        parse_config(data)


@pytest.mark.parametrize(("data", "key"), [
    ({"training": {"epochs": "many"}}, "training.epochs"),
    ({"training": {"reduction": "mean"}}, "training.reduction"),
    ({"detector": {"batch_size": 0}}, "detector.batch_size"),
    ({"encoder": "resnet18"}, "encoder"),
])
def test_wrong_type_names_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"config: {key}: "):
        parse_config(data)


def test_zero_epochs_are_rejected() -> None:
    with pytest.raises(ConfigError, match="training.epochs"):
        parse_config({"training": {"epochs": 0}})


def test_error_names_the_source_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: training\.epoch: unknown key"):
        load_config(path)


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        parse_config([1, 2])
    assert parse_config(None) == VigilConfig()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(path)


def test_defaults_and_values() -> None:
    assert load_config(None) == VigilConfig()
    cfg = parse_config({"training": {"epochs": 2, "input_size": 128}, "detector": {"device": "cuda"}})
    assert cfg.training.epochs == 2 and cfg.training.input_size == 128
    assert cfg.training.coupling_blocks == VigilConfig().training.coupling_blocks
    assert cfg.detector.device == "cuda"


CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.skipif(not CONFIGS, reason="no configs/*.yaml")
@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path: Path) -> None:
    assert isinstance(load_config(path), VigilConfig)

"""The scene registry: listing, lookup errors, scene ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.ids import validate_scene_id
from detector.checkpoint import load_scene, save_scene
from detector.model import SceneModel
from scenes.registry import SceneRegistry, UnknownSceneError
from tests.conftest import TINY_SCENE


def test_lists_saved_scenes(registry: SceneRegistry) -> None:
    assert registry.scenes() == [TINY_SCENE]
    assert TINY_SCENE in registry
    assert "other" not in registry


def test_unknown_scene_names_the_scene_and_known_scenes(registry: SceneRegistry) -> None:
    with pytest.raises(UnknownSceneError) as info:
        load_scene(registry, "lobby")
    message = str(info.value)
    assert "'lobby'" in message
    assert f"known scenes: {TINY_SCENE}" in message
    assert isinstance(info.value, KeyError)


def test_unknown_scene_in_an_empty_registry(tmp_path: Path) -> None:
    reg = SceneRegistry(tmp_path / "does-not-exist")
    assert reg.scenes() == []
    with pytest.raises(UnknownSceneError, match="known scenes: none"):
        load_scene(reg, "lobby")


def test_save_second_scene(scene_model: SceneModel, tmp_path: Path) -> None:
    reg = SceneRegistry(tmp_path)
    save_scene(reg, "b-2", scene_model)
    save_scene(reg, "a.1", scene_model, {"note": "x"})
    (tmp_path / "not-a-scene").mkdir()
    assert reg.scenes() == ["a.1", "b-2"]
    _model, meta = load_scene(reg, "a.1")
    assert meta["scene"] == "a.1" and meta["note"] == "x"


@pytest.mark.parametrize("scene", ["", "../evil", "a/b", "-lead", "x" * 65, "sp ace"])
def test_invalid_scene_ids(scene: str) -> None:
    with pytest.raises(ValueError, match="invalid scene id"):
        validate_scene_id(scene)


def test_valid_scene_ids() -> None:
    for scene in ["01", "campus", "Cam_3.north-1", "x" * 64]:
        assert validate_scene_id(scene) == scene

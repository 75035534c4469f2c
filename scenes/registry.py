"""The scene registry: scene id -> checkpoint folder under one root.

Layout: ``ROOT/<scene>/model.safetensors`` + ``ROOT/<scene>/meta.json``.
"""

from __future__ import annotations

import re
from pathlib import Path

from detector.model import SceneModel
from scenes.checkpoint import META_FILE, load_checkpoint, save_checkpoint

SCENE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class UnknownSceneError(KeyError):
    """No checkpoint is registered for a scene."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is meant to be read
        return str(self.args[0])


class InvalidSceneIdError(ValueError):
    """A scene id that cannot name a checkpoint folder."""


def validate_scene_id(scene: str) -> str:
    if not SCENE_ID.match(scene):
        raise InvalidSceneIdError(
            f"invalid scene id {scene!r}: use letters, digits, '_', '-', '.' (max 64 chars)"
        )
    return scene


class SceneRegistry:
    """Scene checkpoints stored under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, scene: str) -> Path:
        return self.root / validate_scene_id(scene)

    def scenes(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / META_FILE).is_file())

    def __contains__(self, scene: str) -> bool:
        return (self.path(scene) / META_FILE).is_file()

    def save(self, scene: str, model: SceneModel, extra: dict | None = None) -> Path:
        return save_checkpoint(model, self.path(scene), {"scene": scene, **(extra or {})})

    def load(self, scene: str) -> tuple[SceneModel, dict]:
        if scene not in self:
            known = ", ".join(self.scenes()) or "none"
            raise UnknownSceneError(
                f"unknown scene {scene!r}: no checkpoint in {self.root} (known scenes: {known}); "
                f"train one with `vigil train --scene {scene} ...`"
            )
        return load_checkpoint(self.path(scene))

"""The scene registry: scene id -> checkpoint folder under one root.

Layout: ``ROOT/<scene>/model.safetensors`` + ``ROOT/<scene>/meta.json``. The registry
stores and finds checkpoints (:mod:`scenes.checkpoint`); building a model from one is the
detector's (:mod:`detector.checkpoint`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from common.ids import validate_scene_id
from scenes.checkpoint import META_FILE, StoredCheckpoint, read_checkpoint, write_checkpoint


class UnknownSceneError(KeyError):
    """No checkpoint is registered for a scene."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is meant to be read
        return str(self.args[0])


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

    def save(self, scene: str, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
        """Store a scene's checkpoint (``meta`` gains ``"scene"``); returns its folder."""
        return write_checkpoint(self.path(scene), tensors, {**meta, "scene": scene})

    def load(self, scene: str) -> StoredCheckpoint:
        if scene not in self:
            known = ", ".join(self.scenes()) or "none"
            raise UnknownSceneError(
                f"unknown scene {scene!r}: no checkpoint in {self.root} (known scenes: {known}); "
                f"train one with `vigil train --scene {scene} ...`"
            )
        return read_checkpoint(self.path(scene))

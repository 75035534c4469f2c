"""The scene registry: scene id -> checkpoint folder under one root.

Layout: ``ROOT/<scene>/model.safetensors`` + ``ROOT/<scene>/meta.json``. The registry
stores and finds checkpoints (:mod:`scenes.checkpoint`); building a model from one is the
detector's (:mod:`detector.checkpoint`). :meth:`SceneRegistry.health` checks every scene
folder from its JSON and tensors alone, for ``vigil scenes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from common.ids import InvalidSceneIdError, validate_scene_id
from scenes.checkpoint import (
    META_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    CheckpointUnreadableError,
    StoredCheckpoint,
    read_checkpoint,
    write_checkpoint,
)

#: What :meth:`SceneRegistry.health` may require of a scene's metadata: dotted key paths
#: (``"calibration.threshold"``) and the type(s) their values must have.
Required = Mapping[str, type | tuple[type, ...]]


class UnknownSceneError(KeyError):
    """No checkpoint is registered for a scene."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is meant to be read
        return str(self.args[0])


@dataclass(frozen=True)
class SceneHealth:
    """One scene folder's state: ``status`` is ``ok`` or what is wrong (``missing
    weights``, ``corrupt: ...``, ``refused: not safetensors (a pickle file)``, ...);
    ``meta`` and ``digest`` (SHA-256 of the weights) are set when the scene is ok."""

    scene: str
    status: str
    meta: dict | None = None
    digest: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        """The JSON form: scene, status, ok and, when ok, the weights' SHA-256."""
        return {"scene": self.scene, "status": self.status, "ok": self.ok, "weights_sha256": self.digest}


def _field_problem(meta: dict, path: str, types: type | tuple[type, ...]) -> str | None:
    """What is wrong with ``meta``'s value at the dotted ``path``, or None."""
    node: object = meta
    parts = path.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            return f"{META_FILE}: {'.'.join(parts[:i])} is not an object"
        if part not in node:
            return f"{META_FILE} lacks {'.'.join(parts[:i + 1])}"
        node = node[part]
    if not isinstance(node, types):
        wanted = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        return f"{META_FILE}: {path} is {type(node).__name__}, not {wanted}"
    return None


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

    def check(self, scene: str, required: Required | None = None) -> SceneHealth:
        """The health of ``scene``'s folder: its metadata parses, has the format version
        and the ``required`` fields, and its weights are a readable safetensors file."""
        try:
            folder = self.path(scene)
        except InvalidSceneIdError:
            return SceneHealth(scene, "invalid scene id")
        try:
            stored = read_checkpoint(folder)
            for path, types in (required or {}).items():
                problem = _field_problem(stored.meta, path, types)
                if problem is not None:
                    return SceneHealth(scene, f"corrupt: {problem}")
        except CheckpointError as exc:
            return SceneHealth(scene, exc.summary)
        except OSError as exc:  # e.g. the folder itself is not ours to read
            return SceneHealth(scene, f"unreadable: {exc.strerror or exc}")
        return SceneHealth(scene, "ok", stored.meta, stored.digest)

    def health(self, required: Required | None = None) -> list[SceneHealth]:
        """The health of every scene folder under the root (a folder holding a
        ``meta.json`` or a ``model.safetensors``; the registry's own hidden folders
        aside), by scene id. Never raises for a scene; only for an unreadable root."""
        if not self.root.is_dir():
            return []
        try:
            folders = sorted(p for p in self.root.iterdir() if not p.name.startswith(".") and p.is_dir())
        except OSError as exc:
            raise CheckpointUnreadableError(f"cannot list the scene registry {self.root}: "
                                            f"{exc.strerror or exc}") from exc
        report = []
        for folder in folders:
            try:
                holds = (folder / META_FILE).exists() or (folder / WEIGHTS_FILE).exists()
            except OSError:
                holds = True  # unreadable: check() says so
            if holds:
                report.append(self.check(folder.name, required))
        return report

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

"""A registry of one good scene and broken copies of it, for the health checks' tests."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import torch

from scenes.checkpoint import META_FILE, WEIGHTS_FILE
from scenes.registry import SceneRegistry
from tests.conftest import TINY_SCENE

#: scene id -> the status ``SceneRegistry.health`` (with ``vigil scenes``' fields) gives it.
BROKEN = {
    "bad-json": "corrupt: meta.json is not valid JSON (",
    "no-calibration": "corrupt: meta.json lacks calibration",
    "pickled": "refused: not safetensors (a pickle file)",
    "no-weights": "missing weights",
    "no-meta": "missing meta.json",
    "old-format": "incompatible: format version 0, this vigilflow reads 1: retrain the scene",
    "junk-weights": "corrupt: model.safetensors is not a safetensors file (",
    "bad-threshold": "corrupt: meta.json: calibration.threshold is str, not int or float",
}


def broken_registry(good: SceneRegistry, root: Path) -> SceneRegistry:
    """``root`` holding a copy of ``good``'s scene as ``TINY_SCENE`` plus one broken copy
    of it per entry of :data:`BROKEN`."""
    source = good.path(TINY_SCENE)
    for scene in [TINY_SCENE, *BROKEN]:
        shutil.copytree(source, root / scene)

    def edit(scene: str, change) -> None:
        meta = json.loads((root / scene / META_FILE).read_text())
        change(meta)
        (root / scene / META_FILE).write_text(json.dumps(meta))

    (root / "bad-json" / META_FILE).write_text('{"format_version": 1, "kind": ')
    edit("no-calibration", lambda m: m.pop("calibration"))
    tensors = {"w": torch.zeros(3)}
    buf = io.BytesIO()
    torch.save(tensors, buf)
    (root / "pickled" / WEIGHTS_FILE).write_bytes(buf.getvalue())
    (root / "no-weights" / WEIGHTS_FILE).unlink()
    (root / "no-meta" / META_FILE).unlink()
    edit("old-format", lambda m: m.update(format_version=0))
    (root / "junk-weights" / WEIGHTS_FILE).write_bytes(b"GIF89a not tensors")
    edit("bad-threshold", lambda m: m["calibration"].update(threshold="high"))
    (root / "notes").mkdir()  # not a scene: no checkpoint file in it
    (root / "notes" / "readme.txt").write_text("hello")
    (root / f".{TINY_SCENE}.old").mkdir()  # the registry's own (a retired folder)
    (root / f".{TINY_SCENE}.old" / META_FILE).write_text("{}")
    return SceneRegistry(root)

"""SceneRegistry.health: every scene folder with its status, from tensors and JSON alone."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from scenes.registry import SceneHealth, SceneRegistry
from tests.conftest import TINY_SCENE
from tests.scenes.broken import BROKEN, broken_registry

SHOWN = {"kind": str, "encoder.name": str, "calibration.threshold": (int, float),
         "calibration.method": str, "calibration.false_alarm_rate": (int, float)}


def test_the_good_scene_is_ok(registry: SceneRegistry) -> None:
    (health,) = registry.health(SHOWN)
    assert health.scene == TINY_SCENE and health.ok and health.status == "ok"
    assert health.meta is not None and health.meta["kind"] == "cflow"
    assert health.digest is not None and len(health.digest) == 64
    assert json.loads(json.dumps(health.to_dict())) == {
        "scene": TINY_SCENE, "status": "ok", "ok": True, "weights_sha256": health.digest}


def test_every_broken_scene_is_listed_with_its_status(registry: SceneRegistry, tmp_path: Path) -> None:
    report = {h.scene: h for h in broken_registry(registry, tmp_path).health(SHOWN)}
    assert sorted(report) == sorted([TINY_SCENE, *BROKEN])  # not notes/, not the hidden folder
    assert report[TINY_SCENE].ok
    for scene, status in BROKEN.items():
        health = report[scene]
        assert not health.ok and health.meta is None and health.digest is None
        assert health.status.startswith(status), (scene, health.status)
        assert str(tmp_path) not in health.status  # short: the listing names the scene


def test_without_required_fields_only_the_format_counts(registry: SceneRegistry, tmp_path: Path) -> None:
    report = {h.scene: h for h in broken_registry(registry, tmp_path).health()}
    assert report["no-calibration"].ok and report["bad-threshold"].ok
    assert report["pickled"].status == "refused: not safetensors (a pickle file)"


def test_an_invalid_scene_id_and_an_unreadable_folder(registry: SceneRegistry, tmp_path: Path) -> None:
    shutil.copytree(registry.path(TINY_SCENE), tmp_path / "cam 1")
    reg = SceneRegistry(tmp_path)
    assert reg.health() == [SceneHealth("cam 1", "invalid scene id")]
    assert reg.check("../x").status == "invalid scene id"
    if sys.platform != "win32":
        shutil.copytree(registry.path(TINY_SCENE), tmp_path / "locked")
        (tmp_path / "locked").chmod(0)
        try:
            locked = reg.check("locked")
        finally:
            (tmp_path / "locked").chmod(0o700)
        # root reads through any mode; anyone else is refused
        assert locked.ok or locked.status.startswith("unreadable: ")


def test_an_empty_or_absent_root(tmp_path: Path) -> None:
    assert SceneRegistry(tmp_path / "absent").health() == []
    assert SceneRegistry(tmp_path).health() == []

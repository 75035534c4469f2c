"""``vigil scenes`` as a health check: every scene listed with its status, never a crash."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

from scenes.registry import SceneRegistry
from tests.conftest import TINY_SCENE
from tests.scenes.broken import BROKEN, broken_registry
from vigil.cli import main


def vigil(*argv: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def test_a_healthy_registry_lists_as_before(registry: SceneRegistry, tmp_path: Path) -> None:
    shutil.copytree(registry.path(TINY_SCENE), tmp_path / TINY_SCENE)
    code, out, err = vigil("scenes", "--registry", tmp_path)
    assert code == 0, err
    (line,) = out.splitlines()
    scene, kind, encoder, threshold = line.split("\t")
    assert (scene, kind, encoder) == (TINY_SCENE, "cflow", "tf_efficientnet_lite0")
    assert threshold.startswith("threshold ") and "FAR 0.001" in threshold


def test_every_scene_is_listed_with_its_status(registry: SceneRegistry, tmp_path: Path) -> None:
    broken_registry(registry, tmp_path)
    code, out, err = vigil("scenes", "--registry", tmp_path)
    assert code == 1
    assert "Traceback" not in err
    rows = dict(line.split("\t", 1) for line in out.splitlines())
    assert sorted(rows) == sorted([TINY_SCENE, *BROKEN])
    assert rows[TINY_SCENE].startswith("cflow\ttf_efficientnet_lite0\tthreshold ")
    for scene, status in BROKEN.items():
        assert rows[scene].startswith(status), (scene, rows[scene])
    assert f"{len(BROKEN)} of {len(BROKEN) + 1} scenes" in err and "unhealthy" in err


def test_json_says_the_same(registry: SceneRegistry, tmp_path: Path) -> None:
    broken_registry(registry, tmp_path)
    code, out, _err = vigil("scenes", "--registry", tmp_path, "--json")
    assert code == 1
    report = json.loads(out)
    assert report["root"] == str(tmp_path) and report["healthy"] is False
    by_scene = {row["scene"]: row for row in report["scenes"]}
    assert sorted(by_scene) == sorted([TINY_SCENE, *BROKEN])
    good = by_scene[TINY_SCENE]
    assert good["ok"] is True and good["status"] == "ok"
    assert good["kind"] == "cflow" and good["encoder"] == "tf_efficientnet_lite0"
    assert isinstance(good["threshold"], float) and len(good["weights_sha256"]) == 64
    for scene, status in BROKEN.items():
        assert by_scene[scene]["ok"] is False
        assert by_scene[scene]["status"].startswith(status)


def test_json_of_a_healthy_or_empty_registry(registry: SceneRegistry, tmp_path: Path) -> None:
    code, out, _err = vigil("scenes", "--registry", tmp_path / "none-yet", "--json")
    assert code == 0 and json.loads(out)["scenes"] == [] and json.loads(out)["healthy"] is True
    shutil.copytree(registry.path(TINY_SCENE), tmp_path / TINY_SCENE)
    code, out, _err = vigil("scenes", "--registry", tmp_path, "--json")
    assert code == 0 and json.loads(out)["healthy"] is True

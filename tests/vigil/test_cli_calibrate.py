"""``vigil calibrate``: a scene's thresholds re-fit on more normal footage, without retraining."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import CLIP
from tests.vigil.test_cli import Trained, trained_cli, vigil  # noqa: F401 - the module's trained scene


def test_calibrate_pools_new_footage_and_keeps_the_model(trained_cli: Trained, tmp_path: Path) -> None:  # noqa: F811
    registry = tmp_path / "registry"
    shutil.copytree(trained_cli.registry, registry)
    before = json.loads((registry / "t" / "meta.json").read_text())
    weights = (registry / "t" / "model.safetensors").read_bytes()
    run = vigil("--config", trained_cli.config, "calibrate", "--scene", "t", "--videos", CLIP, CLIP,
                "--registry", registry, "-q")
    assert run.code == 0, run.err
    report = json.loads(run.out.strip().splitlines()[-1])
    after = json.loads((registry / "t" / "meta.json").read_text())
    # 8 held-out frames + 2 x 32 frames of the clip (max_frames_per_video: 32)
    assert report["appearance"]["normal_frames"] == len(after["calibration"]["normal_scores"]) == 8 + 64
    assert report["frames"] == 64
    assert after["calibration"]["threshold"] == report["appearance"]["threshold_after"]
    assert report["appearance"]["threshold_before"] == before["calibration"]["threshold"]
    assert after["training"] == before["training"] and after["head"] == before["head"]
    assert after["recalibrations"][-1]["videos"] == [CLIP.name, CLIP.name]
    # Only the calibration changed: the flow weights are the same tensors.
    from safetensors.torch import load

    old, new = load(weights), load((registry / "t" / "model.safetensors").read_bytes())
    assert old.keys() == new.keys() and all(bool((old[k] == new[k]).all()) for k in old)


def test_calibrate_replace_fits_on_the_new_footage_only(trained_cli: Trained, tmp_path: Path) -> None:  # noqa: F811
    registry = tmp_path / "registry"
    shutil.copytree(trained_cli.registry, registry)
    run = vigil("--config", trained_cli.config, "calibrate", "--scene", "t", "--videos", CLIP, "--replace",
                "--false-alarm-rate", "0.01", "--registry", registry, "-q")
    assert run.code == 0, run.err
    after = json.loads((registry / "t" / "meta.json").read_text())
    assert len(after["calibration"]["normal_scores"]) == 32
    assert after["calibration"]["false_alarm_rate"] == 0.01


def test_calibrate_unknown_scene_exits_2(trained_cli: Trained) -> None:  # noqa: F811
    run = vigil("--config", trained_cli.config, "calibrate", "--scene", "nope", "--videos", CLIP,
                "--registry", trained_cli.registry)
    assert run.code == 2 and "unknown scene 'nope'" in run.err

"""bench/motion_retrain.py: retrain only the motion channel of a trained checkpoint, on a tiny
STC-layout set, with and without changes to its motion settings."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from tests.conftest import load_bench_script
from tests.stc_fixture import TINY_TRAINING, make_tiny_stc
from vigil.cli import main

CONFIG = "training:\n" + TINY_TRAINING + """\
  feature_cache_mb: 64
  motion:
    coupling_blocks: 2
    cond_dim: 16
    features: {size: 64, cell: 8, channels: flow}
"""


def _meta(registry: Path) -> dict:
    return json.loads((registry / "01" / "meta.json").read_text())


def test_retrains_the_motion_channel_only(tmp_path: Path) -> None:
    root = make_tiny_stc(tmp_path / "stc")
    config, registry = tmp_path / "c.yaml", tmp_path / "models"
    config.write_text(CONFIG)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--config", str(config), "train", "--scene", "01", "--stc-root", str(root),
                     "--motion", "--registry", str(registry), "-q"]) == 0
    bench = load_bench_script("motion_retrain")
    same, speed = tmp_path / "same", tmp_path / "speed"
    with contextlib.redirect_stdout(io.StringIO()):
        assert bench.main(["--registry", str(registry), "--stc-root", str(root), "--out", str(same),
                           "-q"]) == 0
        assert bench.main(["--registry", str(registry), "--stc-root", str(root), "--out", str(speed),
                           "--set", "features.channels=speed", "-q"]) == 0
    original, again, changed = _meta(registry), _meta(same), _meta(speed)
    # No change: the same channel again (training is seeded), the appearance part untouched.
    assert again["motion"]["calibration"] == original["motion"]["calibration"]
    assert again["calibration"] == original["calibration"] == changed["calibration"]
    assert changed["motion"]["settings"]["channels"] == "speed"
    assert changed["training"]["motion_retrain"] == {"features": {"channels": "speed"}}
    assert changed["motion"]["head"]["feature_dims"] == [2]
    assert original["motion"]["head"]["feature_dims"] == [4]

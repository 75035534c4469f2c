"""bench/motion_speeds.py: a normal frame at the threshold, its speeds against the training
footage's, on a tiny STC-layout set with a normal-only clip."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_bench_script
from tests.stc_fixture import TINY_TRAINING, make_tiny_stc
from vigil.cli import main

CONFIG = "training:\n" + TINY_TRAINING + """\
  feature_cache_mb: 64
  false_alarm_rate: 0.2
  motion:
    coupling_blocks: 2
    cond_dim: 16
    features: {size: 64, cell: 8}
"""


def test_lists_every_normal_frame_at_the_threshold_with_its_speeds(tmp_path: Path) -> None:
    root = make_tiny_stc(tmp_path / "stc")
    normal = root / "testing" / "frames" / "01_9001"
    normal.mkdir()
    source = sorted((root / "testing" / "frames" / "01_0001").iterdir())
    for i, frame in enumerate(source[::-1][:8]):  # the clip backwards: its people walk the other way
        shutil.copy(frame, normal / f"{i:03d}.jpg")
    np.save(root / "testing" / "test_frame_mask" / "01_9001.npy", np.zeros(8, np.uint8))
    np.save(root / "testing" / "test_pixel_mask" / "01_9001.npy", np.zeros((8, 96, 128), np.uint8))
    config, registry, out = tmp_path / "c.yaml", tmp_path / "models", tmp_path / "speeds.json"
    config.write_text(CONFIG)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--config", str(config), "train", "--scene", "01", "--stc-root", str(root),
                     "--motion", "--registry", str(registry), "-q"]) == 0
    bench = load_bench_script("motion_speeds")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert bench.main(["--root", str(root), "--stc-root", str(root), "--registry", str(registry),
                           "--scene", "01", "--config", str(config), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["row_train_max"]) == 8  # 64 px at 8-px cells
    clip = report["clips"]["01_9001"]
    assert clip["frames"] == 8
    assert any("speed" in frame for frame in clip["above"])  # at a 20 % false-alarm rate, some do
    for frame in clip["above"]:
        assert frame["score"] >= 1.0
        if frame["frame"] > 0:
            assert frame["speed"] >= 0 and frame["row_train_max"] >= frame["cell_train_max"]
            assert frame["cells_over_row_max"] <= frame["cells_over_cell_max"]


def test_a_checkpoint_without_motion_is_refused(tmp_path: Path) -> None:
    root = make_tiny_stc(tmp_path / "stc")
    config, registry = tmp_path / "c.yaml", tmp_path / "models"
    config.write_text("training:\n" + TINY_TRAINING)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--config", str(config), "train", "--scene", "01", "--stc-root", str(root),
                     "--registry", str(registry), "-q"]) == 0
    with pytest.raises(SystemExit, match="no motion channel"):
        load_bench_script("motion_speeds").main(["--root", str(root), "--stc-root", str(root),
                                                 "--registry", str(registry), "--scene", "01"])

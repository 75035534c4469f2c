"""bench/calibration.py: false alarms at the threshold per scene, fold-0 vs cross-fitted,
on a tiny STC-layout set with a normal-only clip, from a checkpoint `vigil train --cross-fit`
wrote."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np

from tests.conftest import load_bench_script
from tests.stc_fixture import TINY_TRAINING, make_tiny_stc
from vigil.cli import main

CONFIG = "training:\n" + TINY_TRAINING + """\
  feature_cache_mb: 64
"""


def _add_normal_clip(root: Path) -> None:
    """A normal-only clip (number >= 9000): the first, event-free frames of test clip 1."""
    normal = root / "testing" / "frames" / "01_9001"
    normal.mkdir()
    for i in range(6):
        shutil.copy(root / "testing" / "frames" / "01_0001" / f"{i:03d}.jpg", normal / f"{i:03d}.jpg")
    np.save(root / "testing" / "test_frame_mask" / "01_9001.npy", np.zeros(6, np.uint8))
    np.save(root / "testing" / "test_pixel_mask" / "01_9001.npy", np.zeros((6, 96, 128), np.uint8))


def test_reports_both_calibrations_per_scene_and_pooled(tmp_path: Path) -> None:
    root = make_tiny_stc(tmp_path / "stc")
    _add_normal_clip(root)
    config, registry = tmp_path / "c.yaml", tmp_path / "models"
    config.write_text(CONFIG)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--config", str(config), "train", "--scene", "01", "--stc-root", str(root),
                     "--cross-fit", "--registry", str(registry), "-q"]) == 0
    bench = load_bench_script("calibration")
    out = tmp_path / "report.json"
    with contextlib.redirect_stdout(io.StringIO()):
        assert bench.main(["--root", str(root), "--registry", str(registry), "--config", str(config),
                           "--scenes", "01", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"01/fold0", "01/crossfit", "pooled/fold0", "pooled/crossfit"}
    meta = json.loads((registry / "01" / "meta.json").read_text())
    crossed = meta["training"]["cross_fit"]
    assert report["01/crossfit"]["threshold"] == meta["calibration"]["threshold"]
    assert meta["calibration"]["threshold"] == crossed["threshold_after"]
    assert report["01/fold0"]["threshold"] == crossed["threshold_before"]
    # Two training videos of 36 frames: 4 folds of 9-frame segments, every frame held out once.
    assert report["01/crossfit"]["calibration_frames"] == 72
    assert report["01/fold0"]["calibration_frames"] == 18
    for name in ("fold0", "crossfit"):
        row = report[f"01/{name}"]
        assert row["normal_clip_frames"] == 6
        assert 0.0 <= row["fa_normal_clips"] <= row["fa_normal_clips_upper95"] <= 1.0
        assert 0.0 <= row["frame_auroc"] <= 1.0
    # Cross-fitting moves the threshold, never the ranking within a scene.
    assert report["01/fold0"]["frame_auroc"] == report["01/crossfit"]["frame_auroc"]
    # A learning period on the normal-only clip: a third calibration, pooled with the 72
    # frames; that clip and anomaly clip 1 (the same footage) leave every variant's figures.
    with contextlib.redirect_stdout(io.StringIO()):
        assert bench.main(["--root", str(root), "--registry", str(registry), "--config", str(config),
                           "--scenes", "01", "--learn-clips", "1", "--out", str(out)]) == 0
    learned = json.loads(out.read_text())
    assert learned["01/onsite"]["calibration_frames"] == 72 + 6
    assert all(learned[f"01/{name}"]["normal_clip_frames"] == 0 for name in ("fold0", "crossfit", "onsite"))
    # The detector's learning period on the same clip: the held-out calibration's scores
    # divided by its raise-only scale, learned from that clip's 6 frames.
    period = learned["01/learning_period"]
    assert period["frames"] == 6 and period["scale"] >= 1.0
    assert learned["01/learning"]["scale"] == period["scale"]
    assert learned["01/learning"]["frame_auroc"] == learned["01/fold0"]["frame_auroc"]
    # ... and starting from the cross-fitted threshold, as a camera deployed with it would.
    assert learned["01/learning-crossfit"]["scale"] == learned["01/learning_period_crossfit"]["scale"] >= 1.0
    assert learned["01/learning-crossfit"]["frame_auroc"] == learned["01/crossfit"]["frame_auroc"]
    # Score windows on the same maps: window 1 is the checkpoint's per-frame score; a wider
    # window keeps the threshold.
    with contextlib.redirect_stdout(io.StringIO()):
        assert bench.main(["--root", str(root), "--registry", str(registry), "--config", str(config),
                           "--scenes", "01", "--windows", "1,3", "--out", str(out)]) == 0
    windowed = json.loads(out.read_text())
    assert {"01/crossfit@w1", "01/crossfit@w3", "pooled/fold0@w3"} <= set(windowed)
    assert windowed["01/crossfit@w1"]["frame_auroc"] == report["01/crossfit"]["frame_auroc"]
    assert windowed["01/crossfit@w3"]["threshold"] == windowed["01/crossfit@w1"]["threshold"]
    assert 0.0 <= windowed["01/crossfit@w3"]["frame_auroc"] <= 1.0


def test_a_cross_fitted_motion_channel_is_compared_with_cross_fitting_appearance_only(tmp_path: Path) -> None:
    root = make_tiny_stc(tmp_path / "stc")
    config, registry = tmp_path / "c.yaml", tmp_path / "models"
    config.write_text(CONFIG + """\
  motion:
    coupling_blocks: 2
    cond_dim: 16
    features: {size: 64, cell: 8}
""")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--config", str(config), "train", "--scene", "01", "--stc-root", str(root),
                     "--cross-fit", "--motion", "--registry", str(registry), "-q"]) == 0
    meta = json.loads((registry / "01" / "meta.json").read_text())
    joint = meta["training"]["motion_cross_fit"]
    assert meta["motion"]["calibration"]["threshold"] == joint["threshold_after"]
    out = tmp_path / "report.json"
    with contextlib.redirect_stdout(io.StringIO()):
        assert load_bench_script("calibration").main([
            "--root", str(root), "--registry", str(registry), "--config", str(config), "--scenes", "01",
            "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"01/crossfit", "01/crossfit-appearance"} <= set(report) and "01/fold0" not in report
    assert 0.0 <= report["01/crossfit-appearance"]["frame_auroc"] <= 1.0
    # A learning period on top of the joint cross-fitted threshold (no fold-0 one to start from).
    _add_normal_clip(root)
    with contextlib.redirect_stdout(io.StringIO()):
        assert load_bench_script("calibration").main([
            "--root", str(root), "--registry", str(registry), "--config", str(config), "--scenes", "01",
            "--learn-clips", "1", "--out", str(out)]) == 0
    learned = json.loads(out.read_text())
    assert "01/learning" not in learned
    assert learned["01/learning-crossfit"]["scale"] == learned["01/learning_period_crossfit"]["scale"]
    assert learned["01/learning-crossfit"]["normal_clip_frames"] == 0

"""STC evaluation: `vigil eval stc` end to end on a tiny STC-layout dataset (training,
offline scoring, the streaming pipeline, the report), and its skipping of bad clips.
AUPRO's known answers are in test_metrics.py, smoothing's in test_report.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.stc_fixture import TEST_FRAMES, make_tiny_stc
from vigil.cli import main

TINY_TRAINING = """
training:
  input_size: 128
  epochs: 1
  image_batch: 8
  fiber_batch: 2048
  coupling_blocks: 2
  cond_dim: 32
"""


@pytest.fixture(scope="module")
def tiny_stc(tmp_path_factory) -> Path:
    return make_tiny_stc(tmp_path_factory.mktemp("stc"))


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(TINY_TRAINING)
    return path


def test_eval_stc_end_to_end_through_the_pipeline(tiny_stc: Path, config_file: Path, tmp_path: Path,
                                                   capsys) -> None:
    out = tmp_path / "report"
    code = main(["--config", str(config_file), "eval", "stc", "--root", str(tiny_stc), "--train",
                 "--through-pipeline", "--smooth", "3", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == 4 * TEST_FRAMES
    assert set(report["frame_auroc"]) == {"streaming", "streaming, causal mean of 3", "paper"}
    for row in report["frame_auroc"].values():
        assert set(row) == {"01", "02", "pooled"}
        assert all(0.0 <= v <= 1.0 for v in row.values())
    for proto in ("streaming", "paper"):
        assert 0.0 <= report["pixel"][proto]["pixel_auroc"] <= 1.0
        assert 0.0 <= report["pixel"][proto]["aupro_0.3"] <= 1.0
    check = report["pipeline_check"]
    assert check["ok"] and check["frames"] == 4 * TEST_FRAMES
    assert report["path"].startswith("streaming pipeline")
    assert (out / "roc.png").is_file() and len(report["figures"]["timelines"]) == 4
    assert report["figures"]["examples"]
    md = (out / "report.md").read_text()
    assert "72.63" in md and "streaming pipeline" in md
    assert report["skipped"] == []


def test_motion_scenes_match_through_the_pipeline(tiny_stc: Path, tmp_path: Path, capsys) -> None:
    """With a motion channel, a clip replayed as a camera gets the offline scores: each frame
    compared with the one before it, the clip's first frame on appearance alone."""
    config = tmp_path / "motion.yaml"
    config.write_text(TINY_TRAINING + "  motion:\n    enabled: true\n    coupling_blocks: 2\n"
                      "    cond_dim: 16\n    features: {size: 64, cell: 8}\n")
    out = tmp_path / "report"
    code = main(["--config", str(config), "eval", "stc", "--root", str(tiny_stc), "--scenes", "01", "--train",
                 "--through-pipeline", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["pipeline_check"]["ok"] and report["pipeline_check"]["frames"] == 2 * TEST_FRAMES
    meta = json.loads((out / "checkpoints" / "01" / "meta.json").read_text())
    assert meta["motion"]["settings"]["size"] == 64


def test_mismatched_mask_is_skipped_and_listed(tiny_stc: Path, config_file: Path, tmp_path: Path) -> None:
    root = tmp_path / "stc"
    shutil.copytree(tiny_stc, root)
    np.save(root / "testing" / "test_frame_mask" / "01_0002.npy", np.zeros(TEST_FRAMES - 3, np.uint8))
    out = tmp_path / "report"
    assert main(["--config", str(config_file), "eval", "stc", "--root", str(root), "--scenes", "01",
                 "--train", "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [s["clip"] for s in report["skipped"]] == ["01_0002"]
    assert "frame mask has shape" in report["skipped"][0]["reason"]
    assert "01_0002" in (out / "report.md").read_text()


def test_missing_scene_is_a_clear_error(tiny_stc: Path, config_file: Path, tmp_path: Path, capsys) -> None:
    code = main(["--config", str(config_file), "eval", "stc", "--root", str(tiny_stc), "--scenes", "07",
                 "--train", "-o", str(tmp_path / "r")])
    assert code == 2
    assert "no test clips for scene '07'" in capsys.readouterr().err

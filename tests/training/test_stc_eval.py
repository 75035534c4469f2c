"""STC evaluation: AUPRO and smoothing on known answers, and `vigil eval stc` end to end on a
tiny STC-layout dataset (training, offline scoring, the streaming pipeline, the report)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.stc_fixture import TEST_FRAMES, make_tiny_stc
from training.metrics import BinnedPRO
from training.stc_eval import causal_mean
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


def test_aupro_of_a_perfect_map_is_one() -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[2:5, 2:5] = 1
    mask[10:15, 10:12] = 1
    pro = BinnedPRO(0, 1, 1000)
    pro.update(mask.astype(float), mask)
    assert pro.aupro(0.3) == pytest.approx(1.0)


def test_aupro_known_answer() -> None:
    # Two regions: A entirely at 0.9, B entirely at 0.5; normal pixels: 10 % at 0.7, the rest 0.
    # Thresholds above 0.9: nothing. In (0.7, 0.9]: PRO 0.5 at FPR 0. In (0.5, 0.7]: FPR 0.1,
    # PRO 0.5. In (0, 0.5]: PRO 1 at FPR 0.1. Below: FPR 1. PRO(FPR) on [0, 0.3] is 0.5 at 0,
    # rises to 1 at FPR 0.1 along the vertical, then from (0.1, 1) linearly to (1, 1): area
    # = 0.1 * 0.5 (trapezoid from (0,0.5) to (0.1,0.5)) + 0.2 * 1.0 = 0.25, / 0.3.
    scores = np.zeros((10, 100))
    mask = np.zeros((10, 100), np.uint8)
    mask[0, 0:10] = 1
    scores[0, 0:10] = 0.9
    mask[5, 50:60] = 1
    scores[5, 50:60] = 0.5
    normal = np.flatnonzero(mask.ravel() == 0)
    scores.ravel()[normal[: len(normal) // 10]] = 0.7
    pro = BinnedPRO(0, 1, 1000)
    pro.update(scores, mask)
    assert pro.aupro(0.3) == pytest.approx(0.25 / 0.3, abs=2e-3)


def test_causal_mean_uses_no_future_frames() -> None:
    scores = np.array([0.0, 3.0, 0.0, 0.0, 9.0])
    assert causal_mean(scores, 2).tolist() == [0.0, 1.5, 1.5, 0.0, 4.5]
    assert causal_mean(scores, 1).tolist() == scores.tolist()


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

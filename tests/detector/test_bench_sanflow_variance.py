"""bench/sanflow_variance.py: variance pictures and normal/anomalous histograms of a SANFlow
checkpoint, on synthetic anomalies and on test clips with masks; bench/sanflow_rescore.py:
the same checkpoint scored with its learned variance and with the prior's."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2

from tests.conftest import load_bench_script
from tests.stc_fixture import TINY_TRAINING, make_tiny_stc
from vigil.cli import main

CONFIG = "training:\n  model: sanflow\n" + TINY_TRAINING + """\
  sanflow_stats_input: quarter
"""


def test_variance_report_and_pictures(tmp_path: Path) -> None:
    root = make_tiny_stc(tmp_path / "stc")
    config, registry = tmp_path / "c.yaml", tmp_path / "models"
    config.write_text(CONFIG)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--config", str(config), "train", "--scene", "01", "--stc-root", str(root),
                     "--registry", str(registry), "-q"]) == 0
    bench = load_bench_script("sanflow_variance")
    for source in (["--synthetic", "8"], ["--clips", "8"]):
        out = tmp_path / source[0].strip("-")
        with contextlib.redirect_stdout(io.StringIO()):
            assert bench.main(["--root", str(root), "--registry", str(registry), "--scene", "01", *source,
                               "--shown", "3", "--out", str(out)]) == 0
        report = json.loads((out / "variance.json").read_text())
        assert report["frames"] == 8 and len(report["layers"]) == 3
        assert any(layer["anomalous_cells"] for layer in report["layers"])
        for layer in report["layers"]:
            assert layer["normal_cells"] > 0
            if layer["anomalous_cells"]:
                assert 0.0 <= layer["auroc_variance_sees_anomaly"] <= 1.0
        picture = cv2.imread(str(out / "variance.png"))
        assert picture.shape[:2] == (3 * 64, 4 * 64)  # 3 frames: the frame and one map per layer
        assert (out / "histogram.png").stat().st_size > 0

    rescore = load_bench_script("sanflow_rescore")
    out = tmp_path / "rescore.json"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert rescore.main(["--root", str(root), "--registry", str(registry), "--scenes", "01",
                             "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    learned, prior = report["scenes"]["01"]["learned"], report["scenes"]["01"]["prior"]
    assert 0.0 <= learned["frame_auroc"] <= 1.0 and 0.0 <= prior["frame_auroc"] <= 1.0
    assert "prior" in printed.getvalue()

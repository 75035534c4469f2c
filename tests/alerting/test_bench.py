"""bench/alerts.py on a tiny STC-layout benchmark: one clip with a composited object, one without."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from detector.checkpoint import save_scene
from scenes.registry import SceneRegistry
from tests.alerting.streams import CHECKER_FIRST as FIRST
from tests.alerting.streams import CHECKER_LAST as LAST
from tests.conftest import REPO, load_bench_script


def load_bench():
    return load_bench_script("alerts")


def test_runs_of_and_scoring() -> None:
    bench = load_bench()
    assert bench.runs_of(np.array([0, 1, 1, 0, 1, 0, 0, 1], bool)) == [(1, 2), (4, 4), (7, 7)]
    assert bench.runs_of(np.zeros(3, bool)) == []
    mask = np.zeros(100, bool)
    mask[10:20] = mask[50:60] = True
    clip = bench.Clip("01_0001", "01", REPO, mask)

    class Rec:
        def __init__(self, start, end):
            self.start_seq, self.end_seq = start, end

    res = bench.score_clip(clip, [Rec(13, 30), Rec(40, 45), Rec(80, None), Rec(48, 52)])
    assert res.events == [(10, 19), (50, 59)]
    assert (res.hits, res.false_alerts, res.detected) == (2, 2, 2)
    assert res.delays == [3] and res.covered_early == 1 and res.event_free_frames == 80


def test_bench_on_a_tiny_benchmark(registry, scene_model, anomaly_folder, tmp_path, capsys) -> None:
    root = tmp_path / "bench"
    frames = root / "testing" / "frames"
    masks = root / "testing" / "test_frame_mask"
    masks.mkdir(parents=True)
    shutil.copytree(anomaly_folder, frames / "01_0001")
    clean = frames / "01_0002"
    clean.mkdir()
    for seq in range(40, 100):  # the same footage without the object, renumbered
        shutil.copy(anomaly_folder / f"{seq:03d}.jpg" if not FIRST <= seq <= LAST
                    else anomaly_folder / f"{seq - 30:03d}.jpg", clean / f"{seq - 40:03d}.jpg")
    mask = np.zeros(120, np.uint8)
    mask[FIRST:LAST + 1] = 1
    np.save(masks / "01_0001.npy", mask)
    np.save(masks / "01_0002.npy", np.zeros(60, np.uint8))
    reg = SceneRegistry(tmp_path / "registry")
    save_scene(reg, "01", scene_model, {"training": {}})
    config = tmp_path / "alerting.yaml"
    config.write_text(yaml.safe_dump({"alerting": {"lifecycle": {"enter": 2.3, "exit": 2.0}}}))
    rep = load_bench().main(["--root", str(root), "--registry", str(reg.root), "--config", str(config),
                             "--json", str(tmp_path / "report.json")])
    t = rep["totals"]
    assert t["clips"] == 2 and t["frames"] == 180 and t["events"] == 1
    assert t["events_detected"] == 1 and t["event_recall"] == 1.0
    assert t["false_alerts"] == 0 and t["alerts"] == 1
    assert t["event_free_minutes"] == round((180 - 20) / 10 / 60, 3)
    assert 0 <= t["median_delay_frames"] <= 6 and t["median_delay_s"] == t["median_delay_frames"] / 10
    # the durations were rescaled from real (10 fps) seconds to the replay's 25 fps clock
    assert rep["alerting"]["clip"]["pre_roll_s"] == 2.0
    out = capsys.readouterr().out
    assert "event-level recall: 1 / 1 events = 100.0%" in out and "median delay" in out
    assert t["false_alerts_per_hour"] == 0 and t["false_alerts_per_hour_upper_95"] > 0
    assert (tmp_path / "report.json").is_file()


def test_false_alert_rate_has_a_poisson_upper_bound() -> None:
    bench = load_bench()
    assert bench.poisson_upper(0, 1.0) == pytest.approx(2.996, abs=1e-3)  # "rule of three"
    assert bench.poisson_upper(3, 2.0) == pytest.approx(7.754 / 2, abs=1e-3)
    assert bench.poisson_upper(1, 0.0) is None

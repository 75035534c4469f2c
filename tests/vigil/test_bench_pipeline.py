"""bench/pipeline.py's deployment: `vigil detect` and `vigil ingest` as separate processes on a
real tansu broker, the score subscriber, the roles' /metrics, and the detector-only baseline."""

from __future__ import annotations

import pytest

from detector.worker import DetectorSettings
from tests.conftest import TINY_SCENE, load_bench_script


def load_bench():
    return load_bench_script("pipeline")


@pytest.mark.kafka
@pytest.mark.parametrize("replay", ["stc_frames", "video"])
def test_end_to_end_through_role_processes(registry, clip_frames, tmp_path, replay) -> None:
    bench = load_bench()
    base = {"scenes": {"root": str(registry.root)}, "detector": {"batch_size": 8, "max_wait_ms": 20}}
    if replay == "stc_frames":
        folder = bench.write_stc_test_video(tmp_path / "stc", clip_frames)  # 40 frames
        assert folder.parts[-3:] == ("testing", "frames", "01_0001") and len(list(folder.glob("*.jpg"))) == 40
        result = bench.end_to_end(tmp_path, base, cameras=2, frames=40, frame_folder=folder, scene=TINY_SCENE)
        assert result["scored"] == result["expected"] == 80  # every replayed frame, once
    else:  # the whole 120-frame clip
        result = bench.end_to_end(tmp_path, base, cameras=2, frames=120, video_size=(256, 192),
                                  scene=TINY_SCENE)
        assert result["scored"] == result["expected"] == 240
    assert result["fps"] > 0 and 1 < result["mean_batch"] <= 8  # read from the detector's /metrics
    assert result["model_step_fps"] > 0
    assert result["cpu_seconds"]["detect"] > 0 and result["cpu_seconds"]["broker"] >= 0
    assert "Traceback" not in (tmp_path / "detect.log").read_text()


def test_detector_only_baseline(encoder, registry, clip_frames) -> None:
    bench = load_bench()
    settings = DetectorSettings(batch_size=4)
    assert bench.detector_only(encoder, registry, clip_frames[:8], settings, scene_id=TINY_SCENE) > 0
    assert bench.detector_only(encoder, registry, clip_frames[:8], settings, at_input_size=True,
                               scene_id=TINY_SCENE) > 0


def test_detector_only_in_its_own_process_on_the_replayed_files(registry, clip_frames, tmp_path) -> None:
    bench = load_bench()
    folder = bench.write_stc_test_video(tmp_path / "stc", clip_frames[:8])
    measured = bench.detector_only_in_own_process(registry.root, folder, cameras=2, batch=4, scene=TINY_SCENE)
    assert measured["detector_only_fps"] > 0 and measured["model_only_fps"] > 0


def test_compare_prefetch_runs_every_value_each_round_in_rotated_order(tmp_path, monkeypatch) -> None:
    """The side-by-side mode's bookkeeping (the role processes are the test above's)."""
    import argparse
    import contextlib
    import io
    import json

    bench = load_bench()
    calls: list[tuple[int, str]] = []

    def fake_end_to_end(work, cfg, cameras, frames, frame_folder=None, video_size=None):
        v = cfg["detector"]["prefetch_batches"]
        calls.append((v, "stc" if frame_folder is not None else "video"))
        return {"fps": 10.0 + v}

    monkeypatch.setattr(bench, "end_to_end", fake_end_to_end)
    monkeypatch.setattr(bench, "detector_only_in_own_process", lambda *a, **k: {"detector_only_fps": 20.0})
    args = argparse.Namespace(rounds=2, cameras=2, batch=4, out=tmp_path / "out")
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        report = bench.compare_prefetch(tmp_path, {"detector": {}}, tmp_path, (64, 48), 8, args, [0, 1])
    assert [v for v, _ in calls] == [0, 0, 1, 1, 1, 1, 0, 0]  # each round another value goes first
    assert report["medians"] == {"0/ratio": 0.5, "0/ratio_video": 0.5, "1/ratio": 0.55, "1/ratio_video": 0.55}
    assert json.loads((tmp_path / "out" / "report.json").read_text())["medians"] == report["medians"]
    assert "| 1 | 0.55 (0.55-0.55) | 0.55 (0.55-0.55) |" in printed.getvalue()

"""The STC report: smoothing rows, example frames picked while scoring, the markdown."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training import testset
from training.evaluate import ScoredClip
from training.report import ExampleFrames, render_markdown


def _scored(name: str, labels: list[int], scores: list[float], masks: bool = True) -> ScoredClip:
    n = len(labels)
    frames = [np.full((12, 16, 3), i, np.uint8) for i in range(n)]
    pixel_mask = np.ones((n, 12, 16), np.uint8) if masks else None
    clip = testset.TestClip(name, Path(name), Path(f"{name}.npy"), None)
    return ScoredClip(clip, "model", frames, np.array(labels, bool), pixel_mask,
                      np.zeros((n, 8, 8), np.float32), np.array(scores))


def test_example_frames_keep_each_scenes_highest_anomalous_frames(tmp_path: Path) -> None:
    examples = ExampleFrames(count=2)
    examples(_scored("a", [0, 1, 1], [9.0, 2.0, 3.0]))  # the normal frame's 9.0 does not count
    examples(_scored("b", [0, 0], [5.0, 6.0]))  # no anomaly: nothing
    examples(_scored("c", [1, 0], [4.0, 0.0], masks=False))
    examples(_scored("d", [1], [1.0]))
    assert [(score, title) for score, *_, title in examples.best] == [(4.0, "c frame 0"), (3.0, "a frame 2")]
    assert not examples.best[0][3].any()  # no pixel masks: an empty outline
    examples.write(tmp_path, "07")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example_07_0.png", "example_07_1.png"]


def test_markdown_names_protocols_skips_and_the_pipeline_check() -> None:
    pixel = {"pixel_auroc": 0.9512, "aupro_0.3": None, "pixel_auroc_error_bound": 1e-4}
    report = {
        "model": "cflow", "root": "/data/stc", "encoder": "enc", "input_size": 128, "frames": 10,
        "anomalous_frames": 4, "path": "offline", "wall_seconds": 3.0, "peak_rss_mb": 100.0,
        "frame_auroc": {"streaming": {"01": 0.5, "pooled": 0.625}},
        "pixel": {"streaming": pixel},
        "published_wrn50": {"X": {"frame_auroc": 72.63, "pixel_auroc": 94.48}},
        "pipeline_check": {"frames": 10, "max_abs_diff": 1e-5, "tolerance": 1e-3, "ok": True},
        "skipped": [{"clip": "01_0002", "reason": "frame mask has shape (3,)"}],
        "figures": {"roc": "roc.png", "examples": ["example_01_0.png"],
                    "timelines": ["timelines/01_0001.png"]},
    }
    md = render_markdown(report)
    assert "| streaming | 50.00 | 62.50 |" in md
    assert "| streaming | 95.12 | – | ±0.0100 |" in md
    assert "72.63" in md and "Through-pipeline check: 10 frames" in md and ": OK." in md
    assert "- 01_0002: frame mask has shape (3,)" in md
    assert "[01_0001](timelines/01_0001.png)" in md

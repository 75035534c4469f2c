"""bench/stc_scale.py: an STC-shaped test set that the STC reader accepts, small here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import CLIP, load_bench_script
from training.testset import discover_scenes, frame_count, load_masks, stc_test_clips


def test_the_set_has_the_stc_layout_and_shape(tmp_path: Path) -> None:
    bench = load_bench_script("stc_scale")
    root = tmp_path / "stc"
    assert bench.main(["--video", str(CLIP), "--out", str(root), "--scenes", "3", "--clips", "7",
                       "--frames", "100", "--size", "64x36"]) == 0
    assert discover_scenes(root) == ["01", "02", "03"]
    clips = [c for s in ("01", "02", "03") for c in stc_test_clips(root, s)]
    assert len(clips) == 7 and sum(frame_count(c) for c in clips) == 100
    labels, masks = load_masks(clips[0], frame_count(clips[0]))
    assert masks is not None and masks.shape == (frame_count(clips[0]), 36, 64)
    assert labels.any() and not labels.all()
    assert bool(masks[labels].any()) and not bool(np.asarray(masks[~labels]).any())
    first = sorted(clips[0].frames.iterdir())[0]
    assert first.stat().st_nlink > 1  # frames are hard links into one pool of JPEGs

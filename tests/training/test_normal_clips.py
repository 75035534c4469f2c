"""bench/normal_clips.py: the campus benchmark's test blocks once more, with nothing composited."""

from __future__ import annotations

import json

import numpy as np

from streamer.video import iter_frame_dir
from streamer.writer import VideoWriter
from tests.conftest import load_bench_script


def test_writes_the_odd_blocks_as_normal_only_clips(tmp_path) -> None:
    video = tmp_path / "src.mp4"
    with VideoWriter(video, 10.0, 64, 48) as writer:
        for i in range(45):
            writer.write(np.full((48, 64, 3), i * 5, np.uint8))
    root = tmp_path / "bench"
    (root / "testing").mkdir(parents=True)
    (root / "bench.json").write_text(json.dumps({"scenes": {
        "01": {"crop": None, "test": [{"clip": "01_0001", "frames": 10}]},
        "02": {"crop": [16, 8, 48, 40], "test": [{"clip": "02_0001", "frames": 10}]},
    }}))
    added = load_bench_script("normal_clips").main(["--root", str(root), "--video", str(video)])
    # blocks 0-9, 10-19, 20-29, 30-39, 40-44 (half a block: kept); the odd ones test
    assert added == {"01": ["01_9001", "01_9002"], "02": ["02_9001", "02_9002"]}
    frames = [f.image for f in iter_frame_dir(root / "testing" / "frames" / "02_9002")]
    assert len(frames) == 10 and frames[0].shape == (32, 32, 3)
    assert abs(int(frames[0].mean()) - 30 * 5) <= 3  # block 3 starts at frame 30
    assert not np.load(root / "testing" / "test_frame_mask" / "01_9001.npy").any()
    assert np.load(root / "testing" / "test_pixel_mask" / "02_9001.npy").shape == (10, 32, 32)

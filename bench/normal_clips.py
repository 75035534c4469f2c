#!/usr/bin/env python3
"""Add normal-only test clips to a campus benchmark, so false alerts are counted on more footage.

The campus benchmark builder (``../shared/bench/make_campus_bench.py``) cuts its source
video into blocks -- even blocks train, odd blocks test -- and composites anomalies into
every test block, so its test clips are mostly anomalous. This script writes the same odd
blocks once more *without* anything composited, as extra STC-layout test clips
``<scene>_9001``, ``<scene>_9002`` ... with all-zero frame and pixel masks. It reads the
benchmark's ``bench.json`` for each scene's crop and block length, and cuts the video the
way the builder does.

    python bench/normal_clips.py --root /tmp/campus --video ../shared/data/vtest.avi

Then ``vigil eval stc`` and ``bench/alerts.py`` count false alarms and false alerts on
these clips too (every frame of them is normal).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamer.video import iter_video_frames  # noqa: E402

FIRST_CLIP = 9001


def odd_blocks(frames: list[np.ndarray], block: int) -> list[list[np.ndarray]]:
    """The test blocks of the builder: odd blocks of ``block`` frames (short tails dropped).

    >>> [len(b) for b in odd_blocks([np.zeros(1)] * 25, 10)]
    [10]
    """
    blocks = [frames[i : i + block] for i in range(0, len(frames), block)]
    return [b for b in blocks if len(b) >= block // 2][1::2]


def write_clip(root: Path, name: str, frames: list[np.ndarray]) -> None:
    folder = root / "testing" / "frames" / name
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
    h, w = frames[0].shape[:2]
    for kind in ("test_pixel_mask", "test_frame_mask"):
        (root / "testing" / kind).mkdir(parents=True, exist_ok=True)
    np.save(root / "testing" / "test_pixel_mask" / f"{name}.npy", np.zeros((len(frames), h, w), np.uint8))
    np.save(root / "testing" / "test_frame_mask" / f"{name}.npy", np.zeros(len(frames), np.uint8))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="campus benchmark (with bench.json)")
    ap.add_argument("--video", type=Path, required=True, help="the benchmark's source video (vtest.avi)")
    args = ap.parse_args(argv)
    bench = json.loads((args.root / "bench.json").read_text())
    source = [f.image for f in iter_video_frames(args.video)]
    added: dict[str, list[str]] = {}
    for scene, spec in bench["scenes"].items():
        frames = source
        if spec["crop"]:
            x0, y0, x1, y1 = spec["crop"]
            frames = [np.ascontiguousarray(f[y0:y1, x0:x1]) for f in source]
        block = spec["test"][0]["frames"]
        names = []
        for v, clip in enumerate(odd_blocks(frames, block)):
            name = f"{scene}_{FIRST_CLIP + v}"
            write_clip(args.root, name, clip)
            names.append(name)
        added[scene] = names
    print(json.dumps({"normal_only_clips": added}, indent=2))
    return added


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A synthetic test set of the real ShanghaiTech Campus's size, for wall time and memory.

STC's test set is 13 scenes, 107 test videos, 42,883 frames of 480×856. This builds the
same shape in the STC layout from the campus footage (``--video``, e.g. OpenCV's
``vtest.avi``): its frames cropped to 16:9 and resized to 856×480, written once as JPEG
(quality 90) and hard-linked into the 107 clip folders (401 or 400 frames each, cut from
the video in turn), frame masks with one anomalous stretch per clip, pixel masks of
(frames, 480, 856) with a box on the anomalous frames. The pixel masks are written
sparse (only the anomalous frames' bytes), 17.6 GB apparent. It also writes one
scene's checkpoint folder copied to all 13 scene ids (``--checkpoint``: a trained scene
folder, e.g. from ``vigil train``). Nothing in the frames is anomalous: AUROC figures of
this set mean nothing; it measures what `vigil eval stc` costs at STC's size.

    python bench/stc_scale.py --video ../shared/data/vtest.avi --out /tmp/stc-scale \\
        --checkpoint models/campus
    /usr/bin/time -v vigil eval stc --root /tmp/stc-scale --checkpoints /tmp/stc-scale/models \\
        -o /tmp/stc-scale/report [--through-pipeline]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from streamer.video import iter_frames  # noqa: E402

SCENES = 13
CLIPS = 107
FRAMES = 42_883
HEIGHT, WIDTH = 480, 856


def clip_lengths(clips: int = CLIPS, frames: int = FRAMES) -> list[int]:
    """``clips`` lengths that differ by at most one and add up to ``frames``.

    >>> lengths = clip_lengths()
    >>> len(lengths), sum(lengths), min(lengths), max(lengths)
    (107, 42883, 400, 401)
    """
    base, extra = divmod(frames, clips)
    return [base + (i < extra) for i in range(clips)]


def scene_of(clip: int, clips: int = CLIPS, scenes: int = SCENES) -> str:
    """The scene id of clip ``clip`` (clips spread evenly over the scenes).

    >>> scene_of(0), scene_of(106)
    ('01', '13')
    """
    return f"{clip * scenes // clips + 1:02d}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", type=Path, required=True, help="campus footage to cut the clips from")
    p.add_argument("--out", type=Path, required=True, help="dataset root to write (STC layout)")
    p.add_argument("--checkpoint", type=Path, help="a trained scene folder, copied to OUT/models/01..13")
    p.add_argument("--scenes", type=int, default=SCENES, help="scene ids (default: STC's 13)")
    p.add_argument("--clips", type=int, default=CLIPS, help="test videos (default: STC's 107)")
    p.add_argument("--frames", type=int, default=FRAMES, help="test frames in all (default: STC's 42,883)")
    p.add_argument("--size", default=f"{WIDTH}x{HEIGHT}", help="frame size WxH (default: STC's 856x480)")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    source = [f.image for f in iter_frames(args.video)]
    h, w = source[0].shape[:2]
    crop_h = min(h, int(w * height / width))
    top = max(0, (h - crop_h) // 2)
    pool = args.out / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(tqdm(source, desc="frames", unit="frame")):
        frame = cv2.resize(image[top:top + crop_h], (width, height), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(pool / f"{i:04d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    testing = args.out / "testing"
    for sub in ("frames", "test_frame_mask", "test_pixel_mask"):
        (testing / sub).mkdir(parents=True, exist_ok=True)
    start = 0
    counts: dict[str, int] = {}
    lengths = clip_lengths(args.clips, args.frames)
    for clip, n in enumerate(tqdm(lengths, desc="clips", unit="clip")):
        scene = scene_of(clip, args.clips, args.scenes)
        counts[scene] = counts.get(scene, 0) + 1
        name = f"{scene}_{counts[scene]:04d}"
        folder = testing / "frames" / name
        folder.mkdir(exist_ok=True)
        for k in range(n):
            target = folder / f"{k:03d}.jpg"
            if not target.exists():
                os.link(pool / f"{(start + k) % len(source):04d}.jpg", target)
        start += n
        labels = np.zeros(n, np.uint8)
        first, last = n // 3, n // 3 + n // 5
        labels[first:last] = 1
        np.save(testing / "test_frame_mask" / f"{name}.npy", labels)
        masks = np.lib.format.open_memmap(testing / "test_pixel_mask" / f"{name}.npy", mode="w+",
                                          dtype=np.uint8, shape=(n, height, width))
        # only these pages are written: the file stays sparse
        masks[first:last, height * 2 // 5:height * 3 // 5, width * 2 // 5:width * 3 // 5] = 1
        masks.flush()
        del masks
    if args.checkpoint is not None:
        for s in range(1, args.scenes + 1):
            target = args.out / "models" / f"{s:02d}"
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(args.checkpoint, target)
    print(f"wrote {sum(lengths)} frames in {args.clips} clips of {args.scenes} scenes under {testing}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

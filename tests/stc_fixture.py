"""A tiny ShanghaiTech-Campus-layout dataset built from the shipped clip, for the tests.

Two scenes ("01": the clip as it is; "02": the clip mirrored, another "camera view"), each
with two short normal training videos and two test clips in which a bright square moves
through frames 6-13, with exact frame and pixel masks (STC layout, see docs/architecture.md)::

    ROOT/training/videos/01_001.mp4 ...
    ROOT/testing/frames/01_0001/000.jpg ...
    ROOT/testing/test_frame_mask/01_0001.npy   (T,)
    ROOT/testing/test_pixel_mask/01_0001.npy   (T, H, W)
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from streamer.video import iter_frames
from streamer.writer import VideoWriter
from tests.conftest import CLIP

SIZE = (128, 96)  # width, height: small masks, fast tests
TEST_FRAMES = 16
EVENT = range(6, 14)


#: The ``training:`` keys of a tiny, fast training run on this set (YAML lines, indented
#: under ``training:``), for the tests that train through ``vigil train``.
TINY_TRAINING = """\
  input_size: 64
  epochs: 1
  image_batch: 8
  fiber_batch: 1024
  coupling_blocks: 2
  cond_dim: 16
"""


def make_tiny_stc(root: Path) -> Path:
    frames = [cv2.resize(f.image, SIZE, interpolation=cv2.INTER_AREA) for f in iter_frames(CLIP)]
    for scene, view in (("01", lambda f: f), ("02", lambda f: np.ascontiguousarray(f[:, ::-1]))):
        shots = [view(f) for f in frames]
        for v, (a, b) in enumerate(((0, 36), (36, 72)), start=1):
            path = root / "training" / "videos" / f"{scene}_{v:03d}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            with VideoWriter(path, 10, *SIZE) as writer:
                for f in shots[a:b]:
                    writer.write(f)
        for c, start in enumerate((72, 92), start=1):
            name = f"{scene}_{c:04d}"
            clip = [f.copy() for f in shots[start : start + TEST_FRAMES]]
            masks = np.zeros((TEST_FRAMES, SIZE[1], SIZE[0]), np.uint8)
            for k, i in enumerate(EVENT):
                x, y = 20 + 8 * k, 50
                clip[i][y : y + 16, x : x + 16] = (0, 255, 255)
                masks[i, y : y + 16, x : x + 16] = 1
            folder = root / "testing" / "frames" / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, f in enumerate(clip):
                cv2.imwrite(str(folder / f"{i:03d}.jpg"), f, [cv2.IMWRITE_JPEG_QUALITY, 95])
            frame_mask = masks.any((1, 2)).astype(np.uint8)
            for kind, data in (("test_pixel_mask", masks), ("test_frame_mask", frame_mask)):
                (root / "testing" / kind).mkdir(parents=True, exist_ok=True)
                np.save(root / "testing" / kind / f"{name}.npy", data)
    return root

"""Regenerate ``vigil/data/campus_clip.mp4`` from OpenCV's ``vtest.avi`` sample.

Maintenance script only (never imported at run time)::

    python scripts/make_clip.py --src PATH/TO/vtest.avi

Takes frames 0..119 of the 768x576, 10 fps source, downscales them to 256x192 (INTER_AREA)
and writes an H.264 MP4 (mpeg4 if this PyAV build has no libx264) at 10 fps with
``streamer.video.VideoWriter``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from streamer.video import iter_video_frames, video_info  # noqa: E402
from streamer.writer import VideoWriter  # noqa: E402

WIDTH, HEIGHT, FPS = 256, 192, 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True,
                        help="path to OpenCV's sample vtest.avi (maintenance only, never read at run time)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "vigil" / "data" / "campus_clip.mp4")
    parser.add_argument("--frames", type=int, default=120, help="frames to keep from frame 0")
    parser.add_argument("--crf", type=int, default=23, help="x264 CRF (higher = smaller)")
    args = parser.parse_args(argv)

    with VideoWriter(args.out, FPS, WIDTH, HEIGHT, crf=args.crf, gop=30) as writer:
        for frame in iter_video_frames(args.src, max_frames=args.frames):
            small = cv2.resize(frame.image, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
            writer.write(small)
        codec, written = writer.codec, writer.frames_written
    info = video_info(args.out)
    size = args.out.stat().st_size
    print(
        f"wrote {args.out}: {written} frames, {info.width}x{info.height} @ {info.fps:g} fps, "
        f"{codec}, {size} bytes"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

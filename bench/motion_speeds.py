#!/usr/bin/env python3
"""Why does a normal frame reach the threshold? Its speeds against the training footage's.

For a scene with a motion channel: scores the normal-only clips of a campus benchmark
(``bench/normal_clips.py``: clip numbers >= 9000) with the checkpoint (streaming protocol,
:func:`training.evaluate.score_scene`), and for every frame at or above 1.0 compares its
motion features with the scene's training footage: the largest speed per cell (the
features' max-speed channel, :func:`detector.motion.flow_features`, with the checkpoint's
motion settings) against the largest the training videos show at that cell and anywhere in
the same row of cells. A frame faster than its row's training maximum is faster than any
normal movement at that distance from the camera; one faster only than its cell's shows
normal speed at a place where training saw none.

    python bench/motion_speeds.py --root /tmp/campus0n --stc-root /tmp/campus0 --registry models \\
        --scene 01 --out runs/motion-speeds.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.calibration import FIRST_NORMAL_CLIP  # noqa: E402
from detector.checkpoint import load_scene  # noqa: E402
from detector.encoders import Encoder  # noqa: E402
from detector.motion import MotionSettings, flow_features, motion_frame  # noqa: E402
from scenes.registry import SceneRegistry  # noqa: E402
from streamer.video import iter_frame_dir, iter_frames  # noqa: E402
from training.data import stc_training_videos  # noqa: E402
from training.evaluate import score_scene  # noqa: E402
from vigil.config import load_config  # noqa: E402


def max_speed(prev: np.ndarray, cur: np.ndarray, settings: MotionSettings) -> np.ndarray:
    """The largest speed per cell (grid x grid), px per frame, between two grey frames
    (:func:`detector.motion.motion_frame`)."""
    return np.expm1(flow_features(prev, cur, 1, settings)[-1])


def compare(speed: np.ndarray, cell_max: np.ndarray) -> dict:
    """One frame's largest cell speed against the training maxima of its cell and its row.

    >>> out = compare(np.array([[1.0, 5.0], [0.0, 0.0]]), np.array([[2.0, 1.0], [0.0, 0.0]]))
    >>> (out["cell"], out["speed"], out["cell_train_max"], out["row_train_max"], out["cells_over_row_max"])
    ([0, 1], 5.0, 1.0, 2.0, 1)
    """
    row_max = cell_max.max(axis=1)
    r, c = np.unravel_index(int(speed.argmax()), speed.shape)
    return {"cell": [int(r), int(c)], "speed": float(speed[r, c]), "cell_train_max": float(cell_max[r, c]),
            "row_train_max": float(row_max[r]), "cells_over_cell_max": int((speed > cell_max).sum()),
            "cells_over_row_max": int((speed > row_max[:, None]).sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True, help="benchmark with normal-only clips")
    ap.add_argument("--stc-root", type=Path, required=True, help="the scene's training footage (STC layout)")
    ap.add_argument("--registry", type=Path, required=True)
    ap.add_argument("--scene", required=True)
    ap.add_argument("--config", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    model, _meta = load_scene(SceneRegistry(args.registry), args.scene)
    if model.motion is None:
        raise SystemExit(f"scene {args.scene}: the checkpoint has no motion channel")
    settings = model.motion.settings
    cell_max = None
    for video in stc_training_videos(args.stc_root, args.scene):
        grey = [motion_frame(f.image, settings) for f in iter_frames(video)]
        for prev, cur in zip(grey, grey[1:], strict=False):
            speed = max_speed(prev, cur, settings)
            cell_max = speed if cell_max is None else np.maximum(cell_max, speed)
    if cell_max is None:
        raise SystemExit(f"no training footage of scene {args.scene} under {args.stc_root}")
    evaluation = score_scene(Encoder(cfg.encoder.name, cfg.encoder.weights), {"m": model}, args.root,
                             args.scene, progress=True)["m"]
    report: dict = {"scene": args.scene, "row_train_max": [round(float(v), 2) for v in cell_max.max(axis=1)],
                    "clips": {}}
    for clip in evaluation.clips:
        if int(clip.name.split("_")[-1]) < FIRST_NORMAL_CLIP:
            continue
        above = np.flatnonzero(clip.streaming >= 1.0)
        # Only the frames at the threshold, and the frame before each, need their flow.
        folder = args.root / "testing" / "frames" / clip.name
        grey = [motion_frame(f.image, settings) for f in iter_frame_dir(folder)] if above.size else []
        report["clips"][clip.name] = {
            "frames": int(clip.streaming.size),
            "above": [{"frame": int(i), "score": round(float(clip.streaming[i]), 3),
                       **(compare(max_speed(grey[i - 1], grey[i], settings), cell_max) if i > 0
                          else {"first_frame": True})}
                      for i in above]}
    print(f"{'clip':10s} {'frame':>5s} {'score':>6s} {'speed':>6s} {'cell max':>9s} {'row max':>8s} "
          f"{'cells > cell':>12s} {'cells > row':>11s}")
    for name, clip in report["clips"].items():
        for a in clip["above"]:
            if "speed" in a:
                print(f"{name:10s} {a['frame']:5d} {a['score']:6.2f} {a['speed']:6.1f} "
                      f"{a['cell_train_max']:9.1f} {a['row_train_max']:8.1f} "
                      f"{a['cells_over_cell_max']:12d} {a['cells_over_row_max']:11d}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

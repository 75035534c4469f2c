#!/usr/bin/env python3
"""What the motion channel costs the detector: its model step with and without motion, side by side.

Takes a scene checkpoint with a motion channel and scores the same decoded frames, as
``--cameras`` interleaved cameras in micro-batches of ``--batch``, through the detector
worker's model step (:class:`detector.worker.BatchScorer`: encoder, heads, maps,
calibrated scores, per-camera motion state) once per variant and round: with the motion
channel, its optical flow computed before the encoder pass or overlapping it, on a given
number of threads (``--flow``), and with the motion channel removed. Each round another
variant goes first; the medians of the per-round ratios to appearance only are printed
(machines are noisy: only a side-by-side ratio means anything).

    python bench/motion_cost.py --registry runs/motion/scenes --scene 01 \\
        --frames /tmp/campus/testing/frames/01_0001 --rounds 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.messages import FrameMessage  # noqa: E402
from detector.checkpoint import load_scene, model_id  # noqa: E402
from detector.encoders import Encoder  # noqa: E402
from detector.model import resize_for_model  # noqa: E402
from detector.settings import DetectorSettings  # noqa: E402
from detector.worker import BatchScorer, LoadedScene  # noqa: E402
from scenes.registry import SceneRegistry  # noqa: E402
from streamer.video import iter_frame_dir  # noqa: E402


def frames_per_second(scorer: BatchScorer, loaded: LoadedScene, images: list, cameras: int,
                      batch: int) -> float:
    """Score every image once per camera (cameras interleaved, ``seq`` = image index)."""
    scorer.motion.clear()
    h, w = images[0].shape[:2]
    items = [(FrameMessage(camera=f"cam{c}", scene="s", seq=i, ts=1_700_000_000_000 + 100 * i,
                           source="replay", width=w, height=h, jpeg=b"\xff\xd8\xff"), img, loaded)
             for i, img in enumerate(images) for c in range(cameras)]
    t0 = time.perf_counter()
    for i in range(0, len(items), batch):
        scorer.score(items[i : i + batch])
    return len(items) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", type=Path, required=True)
    ap.add_argument("--scene", required=True, help="a scene whose checkpoint has a motion channel")
    ap.add_argument("--frames", type=Path, required=True, help="a folder of consecutive frames")
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-frames", type=int, default=48)
    ap.add_argument("--flow", default="before:2,overlap:1,overlap:2",
                    help="motion variants, comma-separated WHEN:THREADS: the optical flow computed "
                         "before the encoder pass or overlapping it, on THREADS threads "
                         "(detector.flow_overlap, detector.flow_threads)")
    args = ap.parse_args(argv)
    registry = SceneRegistry(args.registry)
    model, _ = load_scene(registry, args.scene)
    if model.motion is None:
        raise SystemExit(f"scene {args.scene} has no motion channel")
    encoder = Encoder(model.encoder)
    stored = registry.load(args.scene)
    with_motion = LoadedScene(model, model_id(args.scene, stored), 0)
    without = LoadedScene(dataclasses.replace(model, motion=None), with_motion.model_id + ":no-motion", 0)
    images = [resize_for_model(f.image, model.input_size)
              for f in iter_frame_dir(args.frames, max_frames=args.max_frames)]
    variants = {}
    for spec in args.flow.split(","):
        when, _, threads = spec.partition(":")
        if when not in ("before", "overlap") or not threads.isdigit() or int(threads) < 1:
            raise SystemExit(f"--flow: expected before|overlap:THREADS, got {spec!r}")
        settings = DetectorSettings(batch_size=args.batch, flow_overlap=when == "overlap",
                                    flow_threads=int(threads))
        variants[f"motion, flow {when} the encoder, {threads} thread(s)"] = (
            BatchScorer(encoder, registry, settings), with_motion)
    variants["appearance only"] = (BatchScorer(encoder, registry, DetectorSettings(batch_size=args.batch)),
                                   without)
    for scorer, _loaded in variants.values():
        # as if the worker had loaded both (its motion state lives as long as a model is loaded)
        scorer.cache.loaded.update({"with": with_motion, "without": without})
        frames_per_second(scorer, with_motion, images[:8], 1, args.batch)  # warm-up
    names = list(variants)
    rows = []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]  # each variant leads in turn
        fps = {name: frames_per_second(*variants[name], images, args.cameras, args.batch) for name in order}
        rows.append({name: fps[name] for name in names})
        print(f"round {r + 1}: " + ", ".join(f"{name} {fps[name]:.2f}" for name in names) + " frames/s",
              flush=True)
    ratios = {name: [row[name] / row["appearance only"] for row in rows] for name in names[:-1]}
    result = {"rounds": rows, "batch": args.batch, "cameras": args.cameras, "frames": len(images),
              "ratios": {name: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                         for name, v in ratios.items()}}
    print("\n| variant | frames/s (median) | x appearance only: median (range) |\n| --- | --- | --- |")
    for name in names:
        med = statistics.median(row[name] for row in rows)
        r = ratios.get(name)
        cell = "1.00" if r is None else f"**{statistics.median(r):.2f}** ({min(r):.2f}-{max(r):.2f})"
        print(f"| {name} | {med:.1f} | {cell} |")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}))
    for scorer, _loaded in variants.values():
        scorer.close()
    return result


if __name__ == "__main__":
    main()

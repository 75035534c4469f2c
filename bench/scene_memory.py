#!/usr/bin/env python3
"""A detector worker's resident memory with 1, 4 and 13 scenes loaded (13: the size of
ShanghaiTech Campus), and the size of one scene's checkpoint.

For each count, a fresh process builds the encoder, writes that many scene checkpoints
(untrained CFLOW-AD heads of the default settings: a trained head has the same tensors)
into a temporary registry, loads every one through the detector's scene cache and scores
one frame of each through the detector's model step (so per-scene caches -- the flow
heads' condition projections -- are filled as in service), then reports its resident set
(VmRSS) and its peak (VmHWM).

    python bench/scene_memory.py --scenes 1,4,13
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def child(count: int, size: int) -> dict:
    import torch

    from common.messages import FrameMessage
    from detector.checkpoint import save_scene
    from detector.encoders import Encoder
    from detector.settings import DetectorSettings
    from detector.worker import BatchScorer
    from scenes.registry import SceneRegistry
    from training.settings import TrainSettings
    from training.speed import load_frames, untrained_model

    torch.set_num_threads(1)
    encoder = Encoder("tf_efficientnet_lite0").eval()
    frames = load_frames(REPO / "vigil" / "data" / "campus_clip.mp4", 4, size)
    model = untrained_model(TrainSettings(input_size=size), encoder, frames[:2], 2)
    base = {"encoder_only_mb": status_mb("VmRSS")}
    with tempfile.TemporaryDirectory() as tmp:
        registry = SceneRegistry(tmp)
        for i in range(count):
            save_scene(registry, f"s{i:02d}", model)
        checkpoint_bytes = sum(p.stat().st_size for p in (Path(tmp) / "s00").rglob("*") if p.is_file())
        del model
        scorer = BatchScorer(encoder, registry, DetectorSettings())
        batch = []
        for i in range(count):
            msg = FrameMessage.from_image(frames[0], camera=f"cam{i}", scene=f"s{i:02d}", seq=0, ts=0,
                                          source="replay")
            batch.append((msg, frames[0], scorer.cache.get(f"s{i:02d}")))
        results = scorer.score(batch)
        assert not any(isinstance(r, Exception) for r in results), results
    return {"scenes": count, "rss_mb": status_mb("VmRSS"), "peak_rss_mb": status_mb("VmHWM"),
            "checkpoint_mb": checkpoint_bytes / 2**20, **base}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", default="1,4,13")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.size)))
        return 0
    rows = []
    for count in (int(c) for c in args.scenes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", str(count), "--size", str(args.size)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| scenes loaded | resident MB | peak MB | encoder alone MB | one checkpoint MB |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['scenes']} | {r['rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['encoder_only_mb']:.0f} "
              f"| {r['checkpoint_mb']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

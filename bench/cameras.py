#!/usr/bin/env python3
"""Live cameras per core: the CPU a real ``vigil run`` uses for N real-time cameras.

For each camera count and analysis rate, it starts ``vigil run`` (embedded: ingest,
detector and score recorder in one process, alerting and the review page off) with N
cameras that replay the packaged campus clip (``vigil/data/campus_clip.mp4``, 256x192,
10 fps) at its native pace, forever (``realtime: true, loop: true``), sampled to the
analysis rate (``fps``). The scene is an untrained CFLOW-AD model of the default settings
(Lite0, 256x256; a trained head costs the same). After the detector's first score and a
warm-up, it reads the process's CPU time (``/proc/PID/stat``: every thread) and the
detector's counters (``/metrics``: scores published, live frames skipped as stale) at the
start and end of a window, and prints:

* ``cores``: CPU seconds per wall second of ``vigil run`` (decoding included);
* ``kept up``: scores published / (N x fps x window), 1.0 when every sampled frame was
  scored in time, and the live frames skipped as too old (``live_max_age_ms``);
* ``cameras per core``: N / cores, the figure to size a machine by, meaningful where the
  run kept up.

    python bench/cameras.py --cameras 1,2,4 --fps 5,10 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.pipeline import Role, cpu_seconds  # noqa: E402

CLIP = REPO / "vigil" / "data" / "campus_clip.mp4"
SCORED = "vigil_detector_frames_scored_total"
STALE = "vigil_detector_stale_live_frames_total"


def total(samples: dict[tuple[str, tuple], float], name: str) -> float:
    """The sum over labels of one metric in :meth:`bench.pipeline.Role.metrics`' samples.

    >>> total({("a_total", (("camera", "x"),)): 2.0, ("a_total", ()): 3.0, ("b", ()): 1.0}, "a_total")
    5.0
    """
    return sum(v for (n, _), v in samples.items() if n == name)


def make_registry(root: Path) -> None:
    """An untrained scene ``01`` of the default settings, its calibration fitted on the clip."""
    from detector.checkpoint import save_scene
    from detector.encoders import Encoder
    from scenes.registry import SceneRegistry
    from training.settings import TrainSettings
    from training.speed import load_frames, untrained_model
    from vigil.config import VigilConfig

    settings = TrainSettings()
    encoder = Encoder(VigilConfig().encoder.name).eval()
    frames = load_frames(CLIP, 8, settings.input_size)
    save_scene(SceneRegistry(root), "01", untrained_model(settings, encoder, frames))


def run_config(cameras: int, fps: float, registry: Path, work: Path, scene: str = "01") -> dict:
    """The ``vigil run`` config of one measurement."""
    return {
        "scenes": {"root": str(registry)},
        "cameras": [{"id": f"cam{i}", "url": str(CLIP), "scene": scene, "fps": fps, "realtime": True,
                     "loop": True} for i in range(cameras)],
        "recorder": {"dir": str(work / "scores")},
        "alerting": {"enabled": False},
        "ui": {"enabled": False},
    }


def measure(cameras: int, fps: float, seconds: float, warmup: float, registry: Path,
            scene: str = "01") -> dict:
    """One ``vigil run`` with ``cameras`` real-time cameras at ``fps``; its CPU and scores."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run = Role(work, "run", "run", run_config(cameras, fps, registry, work, scene))
        try:
            run.wait_serving()
            deadline = time.monotonic() + 300
            while total(run.metrics(), SCORED) == 0:  # the scene is loaded, the first score out
                if run.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("vigil run published no score:\n" + run.log.read_text()[-2000:])
                time.sleep(0.5)
            time.sleep(warmup)
            m0, c0, t0 = run.metrics(), cpu_seconds(run.proc.pid), time.monotonic()
            time.sleep(seconds)
            m1, c1, t1 = run.metrics(), cpu_seconds(run.proc.pid), time.monotonic()
        finally:
            run.stop()
    wall = t1 - t0
    scored = total(m1, SCORED) - total(m0, SCORED)
    cores = (c1 - c0) / wall
    return {"cameras": cameras, "fps": fps, "seconds": round(wall, 1), "cores": round(cores, 3),
            "scores_per_s": round(scored / wall, 2), "kept_up": round(scored / (cameras * fps * wall), 3),
            "stale_skipped": int(total(m1, STALE) - total(m0, STALE)),
            "cameras_per_core": round(cameras / cores, 2) if cores > 0 else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cameras", default="1,2,4", help="camera counts, comma-separated")
    p.add_argument("--fps", default="5,10", help="analysis rates, comma-separated")
    p.add_argument("--seconds", type=float, default=30.0, help="measured window per run")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds after the first score before it")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "models"
        make_registry(registry)
        for fps in (float(f) for f in args.fps.split(",")):
            for n in (int(c) for c in args.cameras.split(",")):
                row = measure(n, fps, args.seconds, args.warmup, registry)
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    print("| analysis fps | cameras | cores used | scores/s | kept up | stale skipped | cameras per core |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['fps']:g} | {r['cameras']} | {r['cores']:.2f} | {r['scores_per_s']:.1f} "
              f"| {r['kept_up']:.2f} | {r['stale_skipped']} | {r['cameras_per_core']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

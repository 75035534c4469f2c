"""`vigil demo`: the whole system on the shipped campus clip, with no servers.

1. Writes the normal footage (the clip's first 80 frames) and a "camera" video: the whole
   clip with a striped cart composited into frames 85-109 -- something the scene never
   shows -- so there is an event to find.
2. Trains the scene ``campus`` on the normal footage.
3. Runs every role (ingest -> detector -> recorder + alerting) on the in-process bus with
   the camera video as a replayed camera, like `vigil run`, and the review page beside them
   (unless told not to serve it).
4. Scores the camera video offline too, for the pictures: an overlay video and a timeline.
5. Hands the report and the page's URL to ``on_ready`` (`vigil demo` prints them and serves
   the page until Ctrl-C), then stops.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from streamer.video import iter_frames
from streamer.writer import VideoWriter
from vigil.config import VigilConfig

if TYPE_CHECKING:  # the model stack loads when the demo runs, not when the CLI starts
    from detector.encoders import Encoder
    from scenes.registry import SceneRegistry

CLIP = Path(__file__).resolve().parent / "data" / "campus_clip.mp4"  # package data (pyproject.toml)
NORMAL_FRAMES = 80
EVENT = range(85, 110)


def _cart(frame: np.ndarray, k: int) -> None:
    """Draw a striped cart moving left to right (in place)."""
    h, w = frame.shape[:2]
    cw, ch = w // 6, h // 8
    x = int(w * 0.1 + (w * 0.7) * k / len(EVENT))
    y = int(h * 0.62)
    frame[y : y + ch, x : x + cw] = (40, 40, 220)
    for sx in range(x, x + cw, max(3, cw // 6)):
        frame[y : y + ch, sx : sx + max(1, cw // 14)] = (230, 230, 230)
    cv2.circle(frame, (x + cw // 4, y + ch), max(2, ch // 4), (20, 20, 20), -1)
    cv2.circle(frame, (x + 3 * cw // 4, y + ch), max(2, ch // 4), (20, 20, 20), -1)


def write_demo_videos(out: Path) -> tuple[Path, Path]:
    frames = [f.image for f in iter_frames(CLIP)]
    h, w = frames[0].shape[:2]
    normal, camera = out / "normal.mp4", out / "camera.mp4"
    with VideoWriter(normal, 10, w, h) as writer:
        for f in frames[:NORMAL_FRAMES]:
            writer.write(f)
    with VideoWriter(camera, 10, w, h) as writer:
        for i, f in enumerate(frames):
            g = f.copy()
            if i in EVENT:
                _cart(g, i - EVENT.start)
            writer.write(g)
    return normal, camera


def stream_config(cfg: VigilConfig, out: Path, camera: Path) -> VigilConfig:
    """`vigil run`'s config for the demo: ``camera`` replayed as camera ``demo-cam`` of scene
    ``campus`` (registry ``out/scenes``), scores to ``out/scores``, alerts to ``out/alerts``.

    The replay plays like a camera: paced at the clip's own rate, its timestamps from the
    wall clock at its start (``replay_start_ms`` unset). The detector's ``latency_ms`` is
    the wall clock minus a frame's timestamp: a replay timed from the epoch
    (``replay_start_ms: 0``) recorded a "latency" of some 55 years (about 1.8e12 ms), and
    an unpaced one runs ahead of the clock (latency 0).
    """
    return VigilConfig.model_validate({
        **cfg.model_dump(mode="python"),
        "scenes": {"root": out / "scenes"},
        "cameras": [{"id": "demo-cam", "url": str(camera), "scene": "campus", "realtime": True}],
        "recorder": {"enabled": True, "dir": out / "scores"},
        "alerting": {**cfg.alerting.model_dump(mode="python"),
                     "store": {"kind": "local", "dir": out / "alerts"}},
    })


def run_demo(cfg: VigilConfig, out: Path, epochs: int, quiet: bool, serve: bool = False,
             on_ready: Callable[[dict, str | None], None] | None = None) -> dict:
    """Train, stream, score (the module docstring); ``serve``: with the review page, whose
    URL ``on_ready`` gets with the report while the page still serves."""
    from detector.checkpoint import save_scene
    from detector.encoders import Encoder
    from scenes.registry import SceneRegistry
    from training.data import load_scene_frames
    from training.train import train_scene
    from vigil.runner import Pipeline

    out.mkdir(parents=True, exist_ok=True)
    normal, camera = write_demo_videos(out)
    settings = cfg.training.with_changes(epochs=epochs)
    encoder = Encoder(cfg.encoder.name, cfg.encoder.weights)
    data = load_scene_frames([normal], settings.input_size, settings.holdout_fraction)
    print(f"[1/3] training scene 'campus' on {len(data.train)} normal frames "
          f"({len(data.holdout)} held out for calibration)", flush=True)
    result = train_scene(encoder, data.train, data.holdout, settings, progress=not quiet,
                         train_runs=data.train_runs, holdout_runs=data.holdout_runs)
    registry = SceneRegistry(out / "scenes")
    save_scene(registry, "campus", result.model, {"training": data.summary})

    print("[2/3] streaming the camera video through ingest -> detector -> alerting (embedded bus)",
          flush=True)
    run_cfg = stream_config(cfg, out, camera)
    roles = ("ingest", "detect", "record", "alert", *(("ui",) if serve else ()))
    with Pipeline(run_cfg, roles) as pipeline:
        if pipeline.ui is not None:
            print(f"      the review page is live: {pipeline.ui.url}", flush=True)
        pipeline.wait(timeout=600)
        report = _finish(run_cfg, registry, encoder, camera, out, quiet)
        if on_ready is not None:
            on_ready(report, pipeline.ui.url if pipeline.ui is not None else None)
    return report


def _finish(run_cfg: VigilConfig, registry: SceneRegistry, encoder: Encoder, camera: Path, out: Path,
            quiet: bool) -> dict:
    """Steps 3-4: the stored alerts, the offline scoring, ``demo.json``."""
    from alerting.store import open_store
    from detector.checkpoint import load_scene
    from detector.offline import score_source
    from detector.scorer import FrameScorer

    store = open_store(run_cfg.alerting.store)
    alerts = store.list("demo-cam")
    store.close()
    print("[3/3] scoring the camera video offline for the overlay video and timeline", flush=True)
    model, _ = load_scene(registry, "campus")
    summary = score_source(FrameScorer(encoder, model, "campus"), camera, out / "score",
                           progress=not quiet)
    report = {
        "scores_csv": str(out / "scores" / "demo-cam.csv"),
        "overlay_video": str(summary.video),
        "timeline": str(summary.timeline),
        "composited_event_frames": [EVENT.start, EVENT.stop - 1],
        "frames_above_threshold": summary.above_threshold,
        "alerts": [{"alert_id": a.alert_id, "start_seq": a.start_seq, "end_seq": a.end_seq,
                    "peak_score": round(a.peak_score, 2)} for a in alerts],
        "alerts_dir": str(out / "alerts"),
    }
    (out / "demo.json").write_text(json.dumps(report, indent=2))
    return report

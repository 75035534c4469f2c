#!/usr/bin/env python3
"""Alerting on the campus benchmark: every test clip replayed through the embedded pipeline.

Builds nothing: takes a campus benchmark in the STC layout
(``python ../shared/bench/make_campus_bench.py --out DIR``) and a registry of trained scene
checkpoints (scene = the two-digit prefix of the clip name: ``01``, ``02``), replays every
test clip (``testing/frames/<clip>/NNN.jpg``) as one camera of kind ``frames`` through
ingest -> detector -> alert role (in-process bus, local alert store), and compares the
stored alerts with the ground truth (``testing/test_frame_mask/<clip>.npy``):

* events: maximal runs of anomalous frames in a clip's frame mask;
* an alert (its ``start_seq .. end_seq``) is a *hit* if it overlaps an event, a *false
  alert* if it overlaps none; false alerts are counted against the minutes of event-free
  footage (frames outside every event, at ``--fps``);
* event-level recall: events overlapped by at least one alert;
* delay: first overlapping alert's ``start_seq`` - the event's onset, in frames and seconds
  at ``--fps`` (events already covered by an alert that started before their onset are
  counted apart).

Frame folders carry no timing; the replay stamps them at 25 fps (streamer's frame-folder
rate) while the benchmark footage is 10 fps, so the alerting durations (min duration,
cool-down, pre/post-roll) are rescaled here to mean real seconds of footage.

    python bench/alerts.py --root /tmp/campus --registry runs/campus/scenes [--config alerting.yaml]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerting.events import AlertRecord  # noqa: E402
from alerting.store import LocalStore  # noqa: E402
from streamer.video import DEFAULT_DIR_FPS  # noqa: E402
from vigil.config import parse_config  # noqa: E402
from vigil.runner import ROLES, Pipeline  # noqa: E402

log = logging.getLogger("bench.alerts")

BENCH_FPS = 10.0


@dataclass
class Clip:
    name: str
    scene: str
    frames: Path
    mask: np.ndarray  # (T,) 1 = anomalous frame


@dataclass
class ClipResult:
    clip: str
    frames: int
    events: list[tuple[int, int]]  # inclusive (onset, last) seqs
    alerts: list[tuple[int, int]]  # inclusive (start_seq, end_seq)
    hits: int = 0  # alerts overlapping an event
    false_alerts: int = 0
    detected: int = 0  # events overlapped by an alert
    delays: list[int] = field(default_factory=list)  # frames, per detected event
    covered_early: int = 0  # detected by an alert that started before the onset
    event_free_frames: int = 0


def find_clips(root: Path, scenes: list[str] | None, only: list[str] | None) -> list[Clip]:
    testing = root / "testing"
    frames_dir = testing / "frames"
    if not frames_dir.is_dir():
        raise SystemExit(f"not an STC-layout benchmark: {frames_dir} does not exist")
    clips = []
    for folder in sorted(p for p in frames_dir.iterdir() if p.is_dir() and "_" in p.name):
        scene = folder.name.split("_")[0]
        if (scenes and scene not in scenes) or (only and folder.name not in only):
            continue
        mask = np.load(testing / "test_frame_mask" / f"{folder.name}.npy").astype(bool)
        clips.append(Clip(folder.name, scene, folder, mask))
    if not clips:
        raise SystemExit(f"no test clips selected in {frames_dir}")
    return clips


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as inclusive (first, last) index pairs."""
    out, start = [], None
    for i, v in enumerate(mask):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(mask) - 1))
    return out


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def score_clip(clip: Clip, records: list[AlertRecord]) -> ClipResult:
    events = runs_of(clip.mask)
    last = len(clip.mask) - 1
    alerts = sorted((r.start_seq, r.end_seq if r.end_seq is not None else last) for r in records)
    res = ClipResult(clip.name, len(clip.mask), events, alerts,
                     event_free_frames=int((~clip.mask).sum()))
    for a in alerts:
        if any(overlaps(a, e) for e in events):
            res.hits += 1
        else:
            res.false_alerts += 1
    for e in events:
        hits = [a for a in alerts if overlaps(a, e)]
        if not hits:
            continue
        res.detected += 1
        first = hits[0]
        if first[0] >= e[0]:
            res.delays.append(first[0] - e[0])
        else:
            res.covered_early += 1
    return res


def alerting_section(overrides: dict, fps: float) -> dict:
    """The alerting config: defaults (durations meant at the footage's real ``fps``), then
    ``overrides``; durations rescaled to the replay's 25 fps clock."""
    from alerting.config import AlertingConfig

    section = AlertingConfig.model_validate(overrides).model_dump(mode="json")
    scale = fps / DEFAULT_DIR_FPS  # a real second of footage lasts `scale` replay seconds
    for key in ("min_duration_s", "cooldown_s", "update_min_interval_s"):
        section["lifecycle"][key] *= scale
    for layer in (*section["scenes"].values(), *section["cameras"].values()):
        for key in ("min_duration_s", "cooldown_s", "update_min_interval_s"):
            if layer.get(key) is not None:
                layer[key] *= scale
    for key in ("pre_roll_s", "post_roll_s", "max_s"):
        section["clip"][key] *= scale
    section["join_timeout_s"] = 30.0  # a fast replay: frames may queue behind a busy detector
    return section


def run(root: Path, registry: Path, out: Path, overrides: dict, scenes: list[str] | None = None,
        only: list[str] | None = None, device: str = "cpu", batch_size: int = 8,
        fps: float = BENCH_FPS, timeout_s: float = 3600) -> dict:
    clips = find_clips(root, scenes, only)
    section = alerting_section(overrides, fps)
    section["store"] = {"kind": "local", "dir": str(out / "alerts")}
    cfg = parse_config({
        "scenes": {"root": str(registry)},
        "detector": {"device": device, "batch_size": batch_size, "max_wait_ms": 20},
        "cameras": [{"id": c.name, "url": str(c.frames), "scene": c.scene, "kind": "frames",
                     "replay_start_ms": 0} for c in clips],
        "recorder": {"enabled": True, "dir": str(out / "scores")},
        "alerting": section,
    }, "bench/alerts.py")
    t0 = time.perf_counter()
    with Pipeline(cfg, ROLES) as pipeline:
        if not pipeline.wait(timeout=timeout_s):
            raise SystemExit(f"the pipeline did not drain within {timeout_s:.0f} s")
        assert pipeline.detector_metrics is not None
        rejected = {r: pipeline.detector_metrics.rejected.labels(r)._value.get()
                    for r in ("bad_message", "unknown_scene", "bad_checkpoint")}
    seconds = time.perf_counter() - t0
    if any(rejected.values()):
        scenes_used = sorted({c.scene for c in clips})
        raise SystemExit(f"the detector rejected frames: {rejected} "
                         f"(are scenes {scenes_used} in {registry}?)")
    store = LocalStore(cfg.alerting.store)
    results = [score_clip(c, store.list(c.name, limit=10_000)) for c in clips]
    return report(results, fps, seconds, cfg.alerting.model_dump(mode="json"))


#: A lifecycle tuned for few false alerts: a longer run of hits to start (8 of 10 frames
#: at or above 1.2x the threshold), for operators who prefer a later alert to a false one.
FEW_FALSE_ALERTS = {"lifecycle": {"enter": 1.2, "exit": 0.9, "k": 8, "n": 10, "m": 10}}


def poisson_upper(count: int, exposure: float, confidence: float = 0.95) -> float | None:
    """One-sided upper confidence bound of a Poisson rate: ``count`` events in ``exposure``.

    >>> round(poisson_upper(0, 1.0), 3)  # no event in one hour: fewer than 3.0 per hour, at 95 %
    2.996
    """
    from scipy.stats import chi2

    if exposure <= 0:
        return None
    return float(chi2.ppf(confidence, 2 * count + 2) / 2 / exposure)


def report(results: list[ClipResult], fps: float, seconds: float, alerting: dict) -> dict:
    events = sum(len(r.events) for r in results)
    detected = sum(r.detected for r in results)
    delays = [d for r in results for d in r.delays]
    free_min = sum(r.event_free_frames for r in results) / fps / 60
    false = sum(r.false_alerts for r in results)
    median = statistics.median(delays) if delays else None
    return {
        "clips": [asdict(r) for r in results],
        "totals": {
            "clips": len(results), "frames": sum(r.frames for r in results),
            "alerts": sum(len(r.alerts) for r in results), "events": events, "events_detected": detected,
            "event_recall": detected / events if events else None,
            "hits": sum(r.hits for r in results), "false_alerts": false,
            "event_free_minutes": round(free_min, 3),
            "false_alerts_per_event_free_minute": round(false / free_min, 3) if free_min else None,
            "false_alerts_per_hour": round(false / (free_min / 60), 2) if free_min else None,
            "false_alerts_per_hour_upper_95": (round(poisson_upper(false, free_min / 60), 2)
                                               if free_min else None),
            "median_delay_frames": median, "median_delay_s": None if median is None else median / fps,
            "delays_frames": sorted(delays),
            "events_covered_by_an_earlier_alert": sum(r.covered_early for r in results),
            "pipeline_seconds": round(seconds, 1), "fps": fps,
        },
        "alerting": alerting,
    }


def print_report(rep: dict) -> None:
    print(f"{'clip':<10} {'frames':>6} {'events':>6} {'alerts':>6} {'hits':>4} {'false':>5} "
          f"{'found':>5}  delays (frames)")
    for c in rep["clips"]:
        print(f"{c['clip']:<10} {c['frames']:>6} {len(c['events']):>6} {len(c['alerts']):>6} {c['hits']:>4} "
              f"{c['false_alerts']:>5} {c['detected']:>5}  {c['delays']}")
    t = rep["totals"]
    recall = "n/a" if t["event_recall"] is None else f"{t['event_recall']:.1%}"
    print(f"\nalerts: {t['alerts']} on {t['clips']} clips ({t['alerts'] / t['clips']:.2f} per clip)")
    print(f"event-level recall: {t['events_detected']} / {t['events']} events = {recall}")
    print(f"false alerts: {t['false_alerts']} on {t['event_free_minutes']:.2f} min of event-free footage "
          f"({t['false_alerts_per_hour']} per hour; 95 % upper bound {t['false_alerts_per_hour_upper_95']} "
          f"per hour for the footage available)")
    if t["median_delay_frames"] is not None:
        print(f"median delay, event onset -> alert start: {t['median_delay_frames']:g} frames = "
              f"{t['median_delay_s']:.2f} s at {t['fps']:g} fps (over {len(t['delays_frames'])} events; "
              f"{t['events_covered_by_an_earlier_alert']} more covered by an alert started before onset)")
    print(f"pipeline time: {t['pipeline_seconds']} s")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="campus benchmark (STC layout)")
    ap.add_argument("--registry", type=Path, required=True, help="scene checkpoints (scenes 01, 02)")
    ap.add_argument("--config", type=Path, help="YAML with an `alerting:` section to override the defaults")
    ap.add_argument("--few-false-alerts", action="store_true",
                    help="also run the lifecycle tuned for few false alerts (FEW_FALSE_ALERTS)")
    ap.add_argument("--scenes", help="comma-separated scene ids (default: all)")
    ap.add_argument("--clips", help="comma-separated clip names (default: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--fps", type=float, default=BENCH_FPS, help="frame rate of the footage")
    ap.add_argument("--out", type=Path, help="output folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    overrides = {}
    if args.config:
        overrides = (yaml.safe_load(args.config.read_text()) or {}).get("alerting", {})
    lifecycles = {"default": overrides}
    if args.few_false_alerts:
        lifecycles["few false alerts"] = {**overrides, **FEW_FALSE_ALERTS}
    reports = {}
    for name, section in lifecycles.items():
        with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
            out = (args.out / name.replace(" ", "-")) if args.out else Path(tmp)
            rep = run(args.root, args.registry, out, section,
                      args.scenes.split(",") if args.scenes else None,
                      args.clips.split(",") if args.clips else None, args.device, args.batch_size, args.fps)
        print(f"\n== lifecycle: {name}")
        print_report(rep)
        reports[name] = rep
    if args.json:
        args.json.write_text(json.dumps(reports if len(reports) > 1 else reports["default"], indent=2))
    return reports["default"]


if __name__ == "__main__":
    main()

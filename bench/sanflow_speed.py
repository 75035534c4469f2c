#!/usr/bin/env python3
"""SANFlow's cost, side by side: encoder alone, CFLOW-AD, SANFlow (full) and its cheaper
statistics networks, through the detector's scoring path.

Every model scores the same frames (the shipped campus clip, or ``--frames``) at
``--size`` in batches of ``--batch`` through :class:`detector.scorer.FrameScorer` (resize,
input tensor, encoder, flow head, maps, calibrated scores); "encoder" is the scorer's
input tensor plus the encoder alone. The heads are untrained (their normal statistics and
calibration are fitted on the first batch, so the whole path runs): their speed is a
trained head's, their scores mean nothing. Each round times every model once, in a
rotated order; machines are noisy, so the summary gives each model's median frames/s with
its range over rounds, its per-round ratio to the encoder alone and to SANFlow (full),
median and range, and the ratio of the best rounds (the least disturbed measurement on a
shared machine); and the same ratios by this process's CPU time, which other jobs on the
machine disturb far less than wall time. The ratios are what to compare across machines.

``--train-frames N`` also trains each model (``--train-epochs`` epochs on N frames, one
fresh process per model, so peak RSS is its own) and reports seconds per epoch and peak
RSS (the training loop only: no calibration).

    python bench/sanflow_speed.py --rounds 3 --threads 2
    python bench/sanflow_speed.py --rounds 5 --variants encoder,cflow,full,quarter --json runs/speed.json
    python bench/sanflow_speed.py --rounds 1 --train-frames 16 --train-epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from training.speed import load_frames  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CLIP = REPO / "vigil" / "data" / "campus_clip.mp4"
#: The models a run can compare: name -> training settings changes (None: encoder alone).
VARIANTS: dict[str, dict | None] = {
    "encoder": None,
    "cflow": {"model": "cflow"},
    "full": {"model": "sanflow", "sanflow_stats_input": "full"},
    "half": {"model": "sanflow", "sanflow_stats_input": "half"},
    "quarter": {"model": "sanflow", "sanflow_stats_input": "quarter"},
    "eighth": {"model": "sanflow", "sanflow_stats_input": "eighth"},
    "fixed": {"model": "sanflow", "sanflow_fixed_variance": True},
    "paper": {"preset": "sanflow-paper"},  # full, with the paper's 512-dimensional position embedding
}
DEFAULT_VARIANTS = "encoder,cflow,full,half,quarter,eighth"


def set_threads(threads: int, cpus: Sequence[int] | None) -> None:
    """Pin this process to ``cpus`` (if given) and torch to ``threads`` intra-op threads."""
    import torch

    if cpus:
        os.sched_setaffinity(0, set(cpus))
    torch.set_num_threads(threads)


def settings_for(name: str, size: int, threads: int):
    from training.settings import TrainSettings

    changes = VARIANTS[name] or {}
    return TrainSettings(**{"input_size": size, "threads": threads, **changes})


def untrained_model(name: str, encoder, frames: Sequence[np.ndarray], size: int, batch: int):
    """An untrained scene model of variant ``name`` (:func:`training.speed.untrained_model`)."""
    from training.speed import untrained_model as untrained

    return untrained(settings_for(name, size, 1), encoder, frames, batch)


def timer(
    name: str, encoder, frames: Sequence[np.ndarray], size: int, batch: int
) -> Callable[[], tuple[float, float]]:
    """A function that scores ``frames`` once with variant ``name`` and returns frames per
    second of wall time and frames per second of this process's CPU time (all threads)."""
    import torch

    from detector.model import to_input
    from detector.scorer import FrameScorer

    batches = [frames[i : i + batch] for i in range(0, len(frames), batch)]
    if VARIANTS[name] is None:
        @torch.no_grad()
        def run() -> None:
            for b in batches:
                encoder(to_input(b, size))
    else:
        scorer = FrameScorer(encoder, untrained_model(name, encoder, frames[:batch], size, batch))

        def run() -> None:
            for b in batches:
                scorer.score_batch(b)

    def frames_per_second() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        return len(frames) / (time.perf_counter() - t0), len(frames) / (time.process_time() - c0)

    frames_per_second()  # warm-up
    return frames_per_second


def _spread(values: Sequence[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(rounds: list[dict[str, float]], names: Sequence[str]) -> dict[str, dict]:
    """Per model: frames/s and its per-round ratios to the encoder and to SANFlow (full),
    and ``best_vs_*``: the ratio of the best rounds' frames/s (on a machine that other jobs
    share, the least disturbed measurement of each)."""
    out: dict[str, dict] = {}
    for name in names:
        row: dict = {"fps": _spread([r[name] for r in rounds])}
        for ref in ("encoder", "full"):
            if ref in names:
                row[f"vs_{ref}"] = _spread([r[name] / r[ref] for r in rounds])
                row[f"best_vs_{ref}"] = max(r[name] for r in rounds) / max(r[ref] for r in rounds)
        out[name] = row
    return out


def _fmt(spread: dict, digits: int = 2) -> str:
    return f"{spread['median']:.{digits}f} ({spread['min']:.{digits}f}–{spread['max']:.{digits}f})"


def stats_gmac(name: str, size: int) -> float | None:
    """GMAC per frame of the variant's statistics network (None: it has none)."""
    from detector.sanflow import statistics_macs

    s = settings_for(name, size, 1)
    if VARIANTS[name] is None or s.model != "sanflow" or s.sanflow_fixed_variance:
        return None
    return statistics_macs(size, s.sanflow_stats_width, stats_input=s.sanflow_stats_input) / 1e9


def speed_table(summary: dict[str, dict], cpu_summary: dict[str, dict], size: int) -> str:
    """A Markdown table: wall-time frames/s and ratios, and the ratios by CPU time."""
    lines = ["| model | statistics network GMAC/frame | frames/s | × encoder alone | best / best | "
             "× encoder, by CPU time | × SANFlow full | best / best | × SANFlow full, by CPU time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in summary.items():
        gmac = stats_gmac(name, size)
        cells = [name, "-" if gmac is None else f"{gmac:.2f}", _fmt(row["fps"], 1)]
        for ref in ("encoder", "full"):
            if f"vs_{ref}" in row:
                cells += [_fmt(row[f"vs_{ref}"]), f"{row[f'best_vs_{ref}']:.2f}",
                          _fmt(cpu_summary[name][f"vs_{ref}"])]
            else:
                cells += ["-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- training cost


def peak_rss_mb() -> float:
    """This process's peak resident set, MB: VmHWM, which starts afresh at exec (``ru_maxrss``
    does not on Linux: it keeps the peak of the process that forked it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_job(name: str, source: Path, count: int, epochs: int, size: int, batch: int, threads: int,
              cpus: Sequence[int] | None) -> dict:
    """Train variant ``name`` for ``epochs`` on ``count`` frames in this process; its cost."""
    from detector.encoders import Encoder
    from detector.model import build_head
    from training.augment import SyntheticAnomalies
    from training.batches import FeatureBatches, SANFlowBatches
    from training.train import augment_settings, head_config, seed_everything, train_head, train_sanflow_head

    set_threads(threads, cpus)
    settings = settings_for(name, size, threads).with_changes(epochs=epochs, image_batch=batch)
    frames = load_frames(source, count, size)
    encoder = Encoder("tf_efficientnet_lite0").eval()
    generator = seed_everything(settings.seed)
    rss_before = peak_rss_mb()
    head = build_head(settings.model, head_config(settings, encoder.channels))
    marks = [time.perf_counter()]

    def on_epoch(_record: dict) -> None:
        marks.append(time.perf_counter())

    if settings.model == "sanflow":
        rng = np.random.default_rng([settings.seed, 1])
        augment = None
        if settings.sanflow_augment:
            augment = SyntheticAnomalies(frames, augment_settings(settings), rng)
        batches = SANFlowBatches(encoder, frames, size, batch, settings.feature_cache_mb, augment)
        train_sanflow_head(head, batches, settings, generator, progress=False, on_epoch=on_epoch)
    else:
        batches = FeatureBatches(encoder, frames, size, batch, settings.feature_cache_mb)
        train_head(head, batches, settings, generator, progress=False, on_epoch=on_epoch)
    # FeatureBatches encodes (and caches) at construction: the first epoch starts before it.
    return {"model": name, "frames": count, "epochs": epochs,
            "epoch_s": [b - a for a, b in zip(marks, marks[1:], strict=False)],
            "peak_rss_mb": peak_rss_mb(),
            "rss_before_training_mb": rss_before}


def train_costs(names: Sequence[str], args: argparse.Namespace) -> list[dict]:
    rows = []
    for name in names:
        if VARIANTS[name] is None:
            continue
        job = {"name": name, "source": str(args.frames), "count": args.train_frames,
               "epochs": args.train_epochs, "size": args.size, "batch": args.batch, "threads": args.threads,
               "cpus": args.cpus}
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        out = subprocess.run([sys.executable, __file__, "--train-job", json.dumps(job)], env=env, check=True,
                             capture_output=True, text=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"training {name}: {', '.join(f'{s:.1f}' for s in row['epoch_s'])} s per epoch, peak RSS "
              f"{row['peak_rss_mb']:.0f} MB ({row['rss_before_training_mb']:.0f} MB before training)",
              flush=True)
    return rows


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=Path, default=CLIP,
                    help="video or frame folder (default: the shipped clip)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=4, help="batches scored per model and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--cpus", type=lambda s: [int(c) for c in s.split(",")], default=None,
                    help="pin to these CPUs, e.g. 0,1 (default: as started)")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--train-frames", type=int, default=0, help="also measure training on this many frames")
    ap.add_argument("--train-epochs", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--train-job", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.train_job:
        job = json.loads(args.train_job)
        result = train_job(job["name"], Path(job["source"]), job["count"], job["epochs"], job["size"],
                           job["batch"], job["threads"], job["cpus"])
        print(json.dumps(result))
        return result
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")

    from detector.encoders import Encoder

    set_threads(args.threads, args.cpus)
    frames = load_frames(args.frames, args.batch * args.batches, args.size)
    encoder = Encoder("tf_efficientnet_lite0").eval()
    timers = {name: timer(name, encoder, frames, args.size, args.batch) for name in names}
    rounds: list[dict[str, float]] = []
    cpu_rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        fps = {name: timers[name]() for name in order}
        rounds.append({name: fps[name][0] for name in names})
        cpu_rounds.append({name: fps[name][1] for name in names})
        line = ", ".join(f"{n} {rounds[-1][n]:.2f}" for n in names)
        print(f"round {r + 1}: {line} frames/s", flush=True)
    summary = summarise(rounds, names)
    cpu_summary = summarise(cpu_rounds, names)
    result = {"size": args.size, "batch": args.batch, "frames_per_round": len(frames),
              "threads": args.threads, "cpus": args.cpus, "rounds": rounds, "cpu_rounds": cpu_rounds,
              "summary": summary, "cpu_summary": cpu_summary,
              "train": train_costs(names, args) if args.train_frames else []}
    print(f"\nlite0, {args.size}², batch {args.batch}, {args.threads} threads, {len(frames)} frames per "
          f"model and round, {args.rounds} rounds; untrained heads. Median (range) over rounds:\n")
    print(speed_table(summary, cpu_summary, args.size))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""CFLOW-AD and SANFlow side by side on the campus benchmark, per scene.

Both models get the same encoder, input size, epochs, optimizer and schedule, scene
footage, held-out calibration footage and score settings; only ``training.model`` (and,
for ablation rows, one SANFlow switch) differs. For each model and scene:

- training: wall time of ``train_scene`` (flows + calibration; decoding excluded) and the
  peak RSS of the process that trained it (each job runs in a fresh process, so the peaks
  are not each other's);
- accuracy: frame and pixel AUROC of the calibrated per-frame scores on the scene's test
  clips (``training.evaluate.score_scene``), and pooled over the scenes;
- inference: frames/s through ``FrameScorer`` (decode and resize excluded, encoder
  included) in batches of ``--batch``, and the peak RSS of a fresh process that only loads
  the encoder and the checkpoint and scores.

The benchmark folder is written by ``python ../shared/bench/make_campus_bench.py --out DIR``.

    python bench/campus_compare.py --root /tmp/campus --epochs 8 --out runs/compare
    python bench/campus_compare.py --root /tmp/campus --epochs 8 --ablations all
    python bench/campus_compare.py --root /tmp/campus --epochs 1 --scenes 01 --set input_size=128

Ablation rows (``--ablations``, comma-separated or ``all``): ``no-bce``
(sanflow_bce_weight 0), ``no-kl`` (sanflow_kl_weight 0), ``no-augment`` (no synthetic
anomalies), ``fixed-variance`` (no statistics network; sigma^2 = prior mode), ``stats-half`` /
``stats-quarter`` / ``stats-eighth`` (the statistics network on a downscaled image).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from training.evaluate import pooled  # noqa: E402
from training.train import TrainSettings, settings_summary  # noqa: E402

ABLATIONS = {
    "no-bce": {"sanflow_bce_weight": 0.0},
    "no-kl": {"sanflow_kl_weight": 0.0},
    "no-augment": {"sanflow_augment": False},
    "fixed-variance": {"sanflow_fixed_variance": True},
    # The cheaper statistics networks (sanflow_stats_input), measured deviations from the paper.
    "stats-half": {"sanflow_stats_input": "half"},
    "stats-quarter": {"sanflow_stats_input": "quarter"},
    "stats-eighth": {"sanflow_stats_input": "eighth"},
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup(threads: int | None) -> None:
    import torch

    logging.basicConfig(level=logging.WARNING)
    if threads:
        torch.set_num_threads(threads)


def train_job(root: str, scene: str, name: str, settings: dict, registry: str, threads: int | None) -> dict:
    """In a fresh process: train one model on one scene, save it, evaluate it."""
    _setup(threads)
    from detector.checkpoint import save_scene
    from detector.encoders import Encoder
    from scenes.registry import SceneRegistry
    from training.data import load_scene_frames, stc_training_videos
    from training.evaluate import score_scene
    from training.train import train_scene

    s = TrainSettings(**settings)
    encoder = Encoder("tf_efficientnet_lite0")
    t0 = time.perf_counter()
    data = load_scene_frames(stc_training_videos(root, scene), s.input_size, s.holdout_fraction,
                             s.frame_stride, s.max_frames_per_video)
    decode_s = time.perf_counter() - t0
    result = train_scene(encoder, data.train, data.holdout, s, progress=False,
                         train_runs=data.train_runs, holdout_runs=data.holdout_runs)
    train_rss = peak_rss_mb()
    save_scene(SceneRegistry(registry), scene, result.model, {
        "training": {**data.summary, "settings": settings_summary(s), "history": result.history,
                     "seconds": round(result.seconds, 1)},
    })
    t1 = time.perf_counter()
    ev = score_scene(encoder, {name: result.model}, root, scene, progress=False)[name]
    eval_s = time.perf_counter() - t1
    return {
        "model": name, "scene": scene,
        "train_frames": data.summary["train_frames"], "holdout_frames": data.summary["holdout_frames"],
        "decode_seconds": round(decode_s, 1), "train_seconds": round(result.seconds, 1),
        "eval_seconds": round(eval_s, 1), "train_peak_rss_mb": round(train_rss),
        "final_loss": result.history[-1]["loss"], "final_nll_per_dim": result.history[-1]["nll_per_dim"],
        "history": result.history, "summary": ev.summary(),
        "evaluation": ev,  # raw material for the pooled metrics; not in the report
    }


def throughput_job(root: str, scene: str, registry: str, batch: int, frames: int, device: str,
                   threads: int | None) -> dict:
    """In a fresh process: load encoder + checkpoint, score ``frames`` test frames."""
    _setup(threads)
    import torch

    from detector.checkpoint import load_scene
    from detector.encoders import Encoder
    from detector.scorer import FrameScorer
    from scenes.registry import SceneRegistry
    from streamer.video import iter_frame_dir
    from training.testset import stc_test_clips

    rss_start = peak_rss_mb()
    model, _meta = load_scene(SceneRegistry(registry), scene)
    scorer = FrameScorer(Encoder("tf_efficientnet_lite0"), model, scene, device)
    clip = stc_test_clips(root, scene)[0]
    images = [f.image for f, _ in zip(iter_frame_dir(clip.frames), range(max(batch, 32)), strict=False)]
    batches = [[images[(i * batch + j) % len(images)] for j in range(batch)]
               for i in range(max(1, frames // batch))]
    scorer.score_batch(batches[0])  # warm-up
    rss_loaded = peak_rss_mb()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for b in batches:
        scorer.score_batch(b)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out = {
        "frames_per_second": round(len(batches) * batch / seconds, 2), "batch": batch,
        "frames_timed": len(batches) * batch, "device": device,
        "peak_rss_mb": round(peak_rss_mb()), "rss_mb_after_imports": round(rss_start),
        "peak_rss_mb_after_warmup": round(rss_loaded),
        "head_parameters": sum(p.numel() for p in model.head.parameters()),
    }
    if device.startswith("cuda"):
        out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return out


def _in_child(fn, *args):
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        if key.strip() == "preset":
            # Every row is a full dump of the settings, and keys given beside a preset win
            # over its values: the preset's name would be recorded, none of its values used.
            raise SystemExit("--set preset=... is not supported here: every row gives every key, so a "
                             "preset's values would not apply; --set its keys one by one")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="campus benchmark (STC layout)")
    ap.add_argument("--scenes", default="01,02")
    ap.add_argument("--models", default="cflow,sanflow", help="comma-separated: cflow, sanflow")
    ap.add_argument("--ablations", default="", help=f"SANFlow ablation rows: {','.join(ABLATIONS)} or all")
    ap.add_argument("--epochs", type=int, default=TrainSettings().epochs)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a training setting for every row (e.g. input_size=128)")
    ap.add_argument("--batch", type=int, default=8, help="inference batch (frames)")
    ap.add_argument("--throughput-frames", type=int, default=128)
    ap.add_argument("--device", default="cpu", help="inference device for the throughput rows")
    ap.add_argument("--threads", type=int, help="torch threads in every job")
    ap.add_argument("--out", type=Path, default=Path("runs/campus-compare"))
    args = ap.parse_args()

    base = {**settings_summary(TrainSettings()), "epochs": args.epochs, "seed": args.seed,
            **_parse_set(args.set)}
    rows: dict[str, dict] = {}
    for model in filter(None, args.models.split(",")):
        rows[model] = {**base, "model": model}
    names = list(ABLATIONS) if args.ablations == "all" else list(filter(None, args.ablations.split(",")))
    for name in names:
        if name not in ABLATIONS:
            raise SystemExit(f"unknown ablation {name!r}; known: {', '.join(ABLATIONS)}")
        rows[f"sanflow {name}"] = {**base, "model": "sanflow", **ABLATIONS[name]}
    for settings in rows.values():
        TrainSettings(**settings)  # validate every row before hours of training
    scenes = args.scenes.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"root": str(args.root), "base_settings": base, "rows": {}}
    for name, settings in rows.items():
        registry = str(args.out / "scenes" / name.replace(" ", "_"))
        jobs, speed = [], {}
        for scene in scenes:
            job = _in_child(train_job, str(args.root), scene, name, settings, registry, args.threads)
            jobs.append(job)
            s = job["summary"]
            print(f"{name:24s} scene {scene}: frame {s['frame_auroc']:.4f} pixel {s['pixel_auroc']:.4f} "
                  f"train {job['train_seconds']:.0f} s, peak RSS {job['train_peak_rss_mb']} MB", flush=True)
            speed[scene] = _in_child(throughput_job, str(args.root), scene, registry, args.batch,
                                     args.throughput_frames, args.device, args.threads)
            print(f"{'':24s} inference {speed[scene]['frames_per_second']:.1f} frames/s, "
                  f"peak RSS {speed[scene]['peak_rss_mb']} MB", flush=True)
        per_scene = {j["scene"]: {k: v for k, v in j.items() if k != "evaluation"} for j in jobs}
        report["rows"][name] = {
            "settings": {k: v for k, v in settings.items() if base.get(k) != v or k == "model"},
            "scenes": per_scene,
            "pooled": pooled([j["evaluation"] for j in jobs]) if len(jobs) > 1 else jobs[0]["summary"],
            "inference": speed,
            "train_seconds_total": round(sum(j["train_seconds"] for j in jobs), 1),
        }
        (args.out / "report.json").write_text(json.dumps(report, indent=2))

    header = [f"{s} frame / pixel" for s in scenes] + (["pooled frame / pixel"] if len(scenes) > 1 else [])
    print(f"\n{'model':24s} " + " ".join(f"{h:>22s}" for h in header)
          + f" {'train s':>8s} {'infer f/s':>10s} {'train RSS':>10s} {'infer RSS':>10s}")
    for name, row in report["rows"].items():
        summaries = [row["scenes"][s]["summary"] for s in scenes]
        cells = [f"{m['frame_auroc']:.4f} / {m['pixel_auroc']:.4f}" for m in summaries]
        if len(scenes) > 1:
            cells.append(f"{row['pooled']['frame_auroc']:.4f} / {row['pooled']['pixel_auroc']:.4f}")
        fps = sum(v["frames_per_second"] for v in row["inference"].values()) / len(row["inference"])
        train_rss = max(row["scenes"][s]["train_peak_rss_mb"] for s in scenes)
        infer_rss = max(v["peak_rss_mb"] for v in row["inference"].values())
        print(f"{name:24s} " + " ".join(f"{c:>22s}" for c in cells)
              + f" {row['train_seconds_total']:>8.0f} {fps:>10.1f} {train_rss:>7d} MB {infer_rss:>7d} MB")
    print(f"\nreport: {args.out / 'report.json'}")


if __name__ == "__main__":
    main()

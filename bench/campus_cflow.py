#!/usr/bin/env python3
"""Train CFLOW-AD per scene on the campus benchmark and report frame / pixel AUROC.

The benchmark folder is written by ``python ../shared/bench/make_campus_bench.py --out DIR``
(STC layout). For each scene: train on its training videos (minus held-out videos used
for normalisation and calibration only), then score every test frame with the calibrated
per-frame scores. Several ways of reading the frame score off the map are reported side by
side; they share the trained flows, and none of them is chosen on test data.

    python bench/campus_cflow.py --root /tmp/campus --epochs 8 --out runs/campus
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detector.checkpoint import save_scene  # noqa: E402
from detector.encoders import Encoder  # noqa: E402
from detector.model import ScoreSettings  # noqa: E402
from scenes.registry import SceneRegistry  # noqa: E402
from training.data import load_scene_frames, stc_training_videos  # noqa: E402
from training.evaluate import pooled, score_scene  # noqa: E402
from training.train import TrainSettings, fit_normal_statistics, settings_summary, train_scene  # noqa: E402

# name: (per-position normalisation, how the frame score is read off the map)
VARIANTS = {
    "layer-norm, max": (False, ScoreSettings(reduction="max", blur_sigma=0)),
    "layer-norm, blur4, max": (False, ScoreSettings(reduction="max", blur_sigma=4)),
    "position-norm, max": (True, ScoreSettings(reduction="max", blur_sigma=0)),
    "position-norm, top-1%": (True, ScoreSettings(reduction="topk", topk=0.01, blur_sigma=0)),
    "position-norm, blur4, max": (True, ScoreSettings(reduction="max", blur_sigma=4)),
    "position-norm, blur4, top-0.1%": (True, ScoreSettings(reduction="topk", topk=0.001, blur_sigma=4)),
    "position-norm, blur8, max": (True, ScoreSettings(reduction="max", blur_sigma=8)),
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--select-root", type=Path, help="benchmark (other seed) to choose the variant on")
    ap.add_argument("--scenes", default="01,02")
    ap.add_argument("--epochs", type=int, default=TrainSettings().epochs)
    ap.add_argument("--out", type=Path, default=Path("runs/campus"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    encoder = Encoder("tf_efficientnet_lite0")
    registry = SceneRegistry(args.out / "scenes")
    settings = TrainSettings(epochs=args.epochs, seed=args.seed)
    report: dict = {"settings": settings_summary(settings), "scenes": {}, "variants": {}}
    evals: dict[str, list] = {name: [] for name in VARIANTS}
    select_evals: dict[str, list] = {name: [] for name in VARIANTS}
    for scene in args.scenes.split(","):
        t0 = time.perf_counter()
        data = load_scene_frames(stc_training_videos(args.root, scene), settings.input_size,
                                 settings.holdout_fraction)
        result = train_scene(encoder, data.train, data.holdout, settings,
                         train_runs=data.train_runs, holdout_runs=data.holdout_runs)
        train_s = time.perf_counter() - t0
        save_scene(registry, scene, result.model, {"training": {**data.summary, "history": result.history}})
        models = {}
        for name, (position_norm, score) in VARIANTS.items():
            stats, calibration = fit_normal_statistics(
                result.holdout_nll, settings.input_size, score, position_norm, settings.false_alarm_rate
            )
            models[name] = replace(result.model, stats=stats, calibration=calibration, settings=score)
        t1 = time.perf_counter()
        scene_evals = score_scene(encoder, models, args.root, scene)
        eval_s = time.perf_counter() - t1
        report["scenes"][scene] = {
            "train_frames": data.summary["train_frames"],
            "holdout_frames": data.summary["holdout_frames"],
            "train_seconds_incl_decode_and_calibration": round(train_s, 1),
            "peak_rss_mb_after_training": round(peak_rss_mb()),
            "eval_seconds_all_variants": round(eval_s, 1),
            "final_train_nll_per_dim": result.history[-1]["nll_per_dim"],
            "holdout_nll_per_dim": sum(float(m.mean()) for m in result.holdout_nll) / len(result.holdout_nll),
        }
        if args.select_root:
            for name, ev in score_scene(encoder, models, args.select_root, scene).items():
                select_evals[name].append(ev)
        for name, ev in scene_evals.items():
            evals[name].append(ev)
            report["variants"].setdefault(name, {})[scene] = ev.summary()
        print(json.dumps(report["scenes"][scene]), flush=True)
    for name, scene_evals in evals.items():
        if len(scene_evals) > 1:
            report["variants"][name]["pooled"] = pooled(scene_evals)
    if args.select_root:
        selection = {}
        for name, scene_evals in select_evals.items():
            m = pooled(scene_evals) if len(scene_evals) > 1 else scene_evals[0].summary()
            selection[name] = {"frame_auroc": m["frame_auroc"], "pixel_auroc": m["pixel_auroc"]}
        chosen = max(selection, key=lambda n: selection[n]["frame_auroc"] + selection[n]["pixel_auroc"])
        report["selection"] = {"root": str(args.select_root), "by_variant": selection, "chosen": chosen}
        print(f"\nchosen on {args.select_root}: {chosen}")
        for name, m in selection.items():
            print(f"  {name:32s} {m['frame_auroc']:.3f} / {m['pixel_auroc']:.3f}")
    print(f"\n{'frame score':32s} " + " ".join(f"{s:>16s}" for s in [*args.scenes.split(","), "pooled"]))
    print(f"{'':32s} " + " ".join(f"{'frame / pixel':>16s}" for _ in range(len(args.scenes.split(",")) + 1)))
    for name, per_scene in report["variants"].items():
        cells = [f"{m['frame_auroc']:.3f} / {m['pixel_auroc']:.3f}" for m in per_scene.values()]
        mark = "  <- chosen on --select-root" if report.get("selection", {}).get("chosen") == name else ""
        print(f"{name:32s} " + " ".join(f"{c:>16s}" for c in cells) + mark)
    print(f"\npeak RSS {peak_rss_mb():.0f} MB")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Trained SANFlow scenes scored two ways, without retraining: with the learned variance in
the likelihood (the paper, ``sanflow_score_variance: learned``) and with σ² = the prior mode
(``prior``: the statistics network shapes training only).

For each scene of a registry it re-fits the ``prior`` variant's normal statistics and
calibration on the same held-out training frames as training did, then scores the test
clips with both (``training.evaluate.score_scene``, streaming protocol, calibrated
per-frame scores) and prints frame and pixel AUROC per scene and pooled.

    python bench/sanflow_rescore.py --root /tmp/campus1 --registry runs/compare/scenes/sanflow_stats-quarter
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detector.checkpoint import load_scene  # noqa: E402
from detector.encoders import Encoder  # noqa: E402
from detector.sanflow import SANFlowHead  # noqa: E402
from scenes.registry import SceneRegistry  # noqa: E402
from training.data import load_scene_frames, stc_training_videos  # noqa: E402
from training.evaluate import pooled, score_scene  # noqa: E402
from training.settings import TrainSettings  # noqa: E402
from training.train import fit_normal_statistics, measure_nll  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="STC-layout benchmark root")
    p.add_argument("--registry", type=Path, required=True, help="SANFlow scene checkpoints")
    p.add_argument("--scenes", default="01,02")
    p.add_argument("--out", type=Path, help="write the report (JSON) here")
    args = p.parse_args(argv)
    registry = SceneRegistry(args.registry)
    evals: dict[str, list] = {"learned": [], "prior": []}
    report: dict = {"root": str(args.root), "registry": str(args.registry), "scenes": {}}
    encoder = None
    for scene in args.scenes.split(","):
        model, meta = load_scene(registry, scene)
        if not isinstance(model.head, SANFlowHead):
            raise SystemExit(f"scene {scene} in {args.registry} is not a SANFlow model")
        encoder = encoder or Encoder(model.encoder)
        settings = TrainSettings(**meta.get("training", {}).get("settings", {}))
        data = load_scene_frames(stc_training_videos(args.root, scene), model.input_size,
                                 settings.holdout_fraction, settings.frame_stride,
                                 settings.max_frames_per_video)
        prior = copy.copy(model)
        prior.head = copy.deepcopy(model.head)
        prior.head.score_variance = "prior"
        nll = measure_nll(prior, encoder, data.holdout, 8)
        position_norm = model.stats is not None and model.stats.position_norm
        prior.stats, prior.calibration = fit_normal_statistics(
            nll, model.input_size, model.settings, position_norm, model.calibration.false_alarm_rate)
        report["scenes"][scene] = {}
        for name, variant in (("learned", model), ("prior", prior)):
            ev = score_scene(encoder, {name: variant}, args.root, scene, progress=False)[name]
            evals[name].append(ev)
            report["scenes"][scene][name] = ev.summary()
            s = ev.summary()
            print(f"scene {scene} {name:8s} frame {s['frame_auroc']:.4f} pixel {s['pixel_auroc']:.4f}",
                  flush=True)
    for name, items in evals.items():
        report[f"pooled_{name}"] = pooled(items) if len(items) > 1 else items[0].summary()
        s = report[f"pooled_{name}"]
        print(f"pooled   {name:8s} frame {s['frame_auroc']:.4f} pixel {s['pixel_auroc']:.4f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

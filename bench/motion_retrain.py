#!/usr/bin/env python3
"""Retrain only the motion channel of trained scene checkpoints, with other motion settings.

The appearance head is what costs time to train (about 10 minutes per campus scene on this
machine); the motion channel trains in a few minutes. This script loads each scene's
checkpoint from ``--registry``, reads the same training footage (``--stc-root``, split as
the checkpoint's own training settings split it), and calls
:func:`training.train.train_motion` with the checkpoint's settings and the motion
section changed by ``--set`` (keys of ``training.motion``; ``features.*`` for the motion
features). The appearance head, its statistics and its calibration are kept exactly; the
new checkpoint goes to ``--out`` with the changes recorded in its meta
(``training.motion_retrain``). With no ``--set``, the channel is retrained as it was, which
reproduces the checkpoint's joint threshold (training is deterministic from the seed).

    python bench/motion_retrain.py --registry models --stc-root /tmp/campus1 --out models-span3 \\
        --set features.span=3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detector.checkpoint import MODEL_KEYS, load_scene, save_scene  # noqa: E402
from detector.encoders import Encoder  # noqa: E402
from scenes.registry import SceneRegistry  # noqa: E402
from training.data import read_footage, stc_training_videos  # noqa: E402
from training.settings import TrainSettings  # noqa: E402
from training.train import measure_nll, train_motion  # noqa: E402


def motion_changes(pairs: list[str]) -> dict:
    """``key=value`` pairs (values in YAML) as a nested dict of ``training.motion`` changes.

    >>> motion_changes(["weight=0.5", "features.span=3"])
    {'weight': 0.5, 'features': {'span': 3}}
    """
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"motion_retrain: --set wants key=value, got {pair!r}")
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def retrained_settings(stored: dict, changes: dict) -> TrainSettings:
    """The checkpoint's training settings with the motion section changed (and enabled)."""
    motion = dict(stored.get("motion", {}))
    features = {**motion.get("features", {}), **changes.get("features", {})}
    motion.update({k: v for k, v in changes.items() if k != "features"}, features=features, enabled=True)
    return TrainSettings.model_validate({**stored, "motion": motion, "cross_fit": False})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--registry", type=Path, required=True, help="trained checkpoints")
    ap.add_argument("--stc-root", type=Path, required=True, help="the scenes' training footage")
    ap.add_argument("--out", type=Path, required=True, help="registry for the retrained checkpoints")
    ap.add_argument("--scenes", default=None, help="comma-separated (default: every scene)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a training.motion change, e.g. weight=0.5 or features.span=3")
    ap.add_argument("--encoder-weights", default=None)
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    changes = motion_changes(args.set)
    registry, out = SceneRegistry(args.registry), SceneRegistry(args.out)
    scenes = args.scenes.split(",") if args.scenes else registry.scenes()
    encoder: Encoder | None = None
    for scene in scenes:
        model, meta = load_scene(registry, scene)
        training = meta.get("training", {})
        settings = retrained_settings(training.get("settings", {}), changes)
        if encoder is None:
            encoder = Encoder(model.encoder, weights=args.encoder_weights)
        if settings.threads:
            import torch

            torch.set_num_threads(settings.threads)
        videos = stc_training_videos(args.stc_root, scene)
        footage = read_footage(videos, settings.input_size, settings.frame_stride,
                               settings.max_frames_per_video)
        data = footage.split(settings.holdout_fraction, 0)
        holdout_nll = measure_nll(model, encoder, data.holdout, settings.image_batch)
        history = train_motion(model, data.train, data.holdout, holdout_nll, settings, data.train_runs,
                               data.holdout_runs, progress=not args.quiet)
        kept = {k: v for k, v in meta.items() if k not in MODEL_KEYS and k != "scene"}
        kept["training"] = {**training, "settings": settings.model_dump(), "motion_history": history,
                            "motion_retrain": changes}
        folder = save_scene(out, scene, model, kept)
        assert model.motion is not None and model.motion.calibration is not None
        print(json.dumps({"scene": scene, "checkpoint": str(folder), "changes": changes,
                          "joint_threshold_raw": round(model.motion.calibration.threshold, 5)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Does the threshold keep its promise? False alarms at the calibrated threshold, per scene.

Takes a campus benchmark (``python ../shared/bench/make_campus_bench.py --out DIR``) with
normal-only clips added (``bench/normal_clips.py --root DIR``: clip numbers >= 9000) and a
registry of scene checkpoints. For each scene it scores every test clip once (streaming
protocol, calibrated per-frame scores, ``training.evaluate.score_scene``) under each
calibration the checkpoint knows:

* ``fold0``: calibrated on the model's own held-out part only (what ``vigil train`` gives
  without cross-fitting; for a cross-fitted checkpoint it is kept in its meta);
* ``crossfit``: the checkpoint's calibration when it was trained with ``--cross-fit``;
* ``crossfit-appearance`` (instead of ``fold0``, for a cross-fitted checkpoint with a
  motion channel): its joint threshold put back to fold 0's, the appearance threshold
  cross-fitted (what ``--cross-fit --motion`` gave before the joint threshold was
  cross-fitted too);
* ``onsite`` (with ``--learn-clips N``): the checkpoint's calibration re-fitted the way
  ``vigil calibrate`` does it (``training.calibrate.recalibrate``, pooled with the scores it
  has) on the scene's first N normal-only clips, as a camera's learning period would. Those
  N clips, and the anomaly clips cut from the same blocks of footage (the same clip
  number), are then left out of every variant's figures, so all variants are measured on
  the same footage none of them saw;
* ``learning`` (with ``--learn-clips N``): the detector's learning period
  (``detector.learning``): the held-out calibration's scores of the same N clips give the
  camera's raise-only scale (``detector.learning.learn_threshold``), and every later score
  is divided by it, as the detector worker does once the period is over;
* ``learning-crossfit`` (with ``--learn-clips N``, for a cross-fitted checkpoint): the same,
  starting from the cross-fitted calibration (what a camera deployed with it learns).

With ``--windows 1,3,5`` each variant is scored once per score window instead
(``name@wN``: the published score is the causal mean of the last N calibrated frame
scores of the clip, :mod:`detector.temporal`), on the same NLL maps.

It prints, per scene and pooled: the share of normal frames at or above 1.0 (nominal:
``false_alarm_rate``, 0.1 %) on the normal-only clips and on the normal frames of the
anomaly clips, with a one-sided 95 % Clopper-Pearson upper bound for the footage there
is; the share of anomalous frames at or above 1.0; and frame AUROC on the anomaly clips
(the normal-only clips left out, so it compares with the benchmark's figures).

    python bench/calibration.py --root /tmp/campus1 --registry models --out runs/calibration.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from scipy.stats import beta

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detector.calibration import Calibration  # noqa: E402
from detector.checkpoint import load_scene  # noqa: E402
from detector.encoders import Encoder  # noqa: E402
from detector.learning import learn_threshold  # noqa: E402
from detector.model import SceneModel  # noqa: E402
from scenes.registry import SceneRegistry  # noqa: E402
from streamer.video import iter_frame_dir  # noqa: E402
from training.calibrate import recalibrate  # noqa: E402
from training.evaluate import score_scene  # noqa: E402
from training.metrics import auroc  # noqa: E402
from training.testset import discover_scenes  # noqa: E402
from vigil.config import load_config  # noqa: E402

FIRST_NORMAL_CLIP = 9000


def upper_bound(hits: int, n: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen as ``hits`` of ``n``.

    >>> round(upper_bound(0, 371), 4)
    0.008
    """
    return 1.0 if hits >= n else float(beta.ppf(level, hits + 1, n - hits))


def learning_runs(root: Path, scene: str, numbers: list[int], size: int) -> list[list[np.ndarray]]:
    """The frames of the scene's normal-only clips ``9000 + n``, at the model's input size."""
    folders = [root / "testing" / "frames" / f"{scene}_{FIRST_NORMAL_CLIP + n}" for n in numbers]
    return [[cv2.resize(f.image, (size, size), interpolation=cv2.INTER_AREA) for f in iter_frame_dir(d)]
            for d in folders]


def rates(labels: np.ndarray, scores: np.ndarray, normal: np.ndarray) -> dict:
    """Alarm rates at 1.0 and AUROC for one scene (or pooled)."""
    above = normal >= 1.0
    test_normal = scores[~labels] >= 1.0
    return {
        "normal_clip_frames": int(normal.size),
        "fa_normal_clips": float(above.mean()) if normal.size else float("nan"),
        "fa_normal_clips_upper95": upper_bound(int(above.sum()), int(normal.size)) if normal.size else None,
        "fa_test_normal": float(test_normal.mean()) if test_normal.size else float("nan"),
        "anomalous_above": float((scores[labels] >= 1.0).mean()) if labels.any() else float("nan"),
        "frame_auroc": auroc(labels, scores) if labels.any() and (~labels).any() else float("nan"),
    }


def _windowed(model: SceneModel, window: int) -> SceneModel:
    """``model`` with score window ``window`` (nothing else changes)."""
    out = copy.copy(model)
    out.settings = model.settings.model_copy(update={"window": window})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--registry", type=Path, required=True)
    p.add_argument("--config", type=Path)
    p.add_argument("--scenes", help="comma-separated (default: all in testing/frames)")
    p.add_argument("--appearance-only", action="store_true", help="score without the motion channel")
    p.add_argument("--learn-clips", type=int, default=0,
                   help="re-fit on the first N normal-only clips of each scene (variants onsite, learning)")
    p.add_argument("--windows", help="score windows to compare, e.g. 1,3,5 (default: the checkpoints' own)")
    p.add_argument("--fps", type=float, default=10.0, help="the footage's frame rate (for the report)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    windows = [int(w) for w in args.windows.split(",")] if args.windows else []
    if windows and args.learn_clips:
        p.error("--windows and --learn-clips are not combined")
    cfg = load_config(args.config)
    encoder = Encoder(cfg.encoder.name, cfg.encoder.weights)
    scenes = args.scenes.split(",") if args.scenes else discover_scenes(args.root)
    report: dict[str, dict] = {}
    parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for scene in scenes:
        model, meta = load_scene(SceneRegistry(args.registry), scene)
        if args.appearance_only:
            model.motion = None
        variants = {}
        crossed = meta.get("training", {}).get("cross_fit")
        joint = meta.get("training", {}).get("motion_cross_fit") if model.motion is not None else None
        if joint:
            # The joint calibration of fold 0 was fitted on the cross-fitted appearance
            # units, so the plain fold-0 model cannot be rebuilt; what can is cross-fitting
            # of the appearance threshold alone (as before the joint threshold was).
            partial = copy.copy(model)
            partial.motion = copy.copy(model.motion)
            partial.motion.calibration = Calibration.from_dict(joint["fold0_calibration"])
            variants["crossfit-appearance"] = partial
            variants["crossfit"] = model
        elif crossed:
            fold0 = copy.copy(model)
            fold0.calibration = Calibration.from_dict(crossed["fold0_calibration"])
            variants["fold0"] = fold0
            variants["crossfit"] = model
        else:
            variants["fold0"] = model
        learned: set[int] = set()
        if args.learn_clips:
            onsite = copy.copy(model)
            onsite.motion = copy.copy(model.motion)
            learned = set(range(1, args.learn_clips + 1))
            recalibrate(onsite, encoder, learning_runs(args.root, scene, sorted(learned), model.input_size))
            variants["onsite"] = onsite
        if windows:
            variants = {f"{name}@w{w}": _windowed(m, w) for name, m in variants.items() for w in windows}
        evals = score_scene(encoder, variants, args.root, scene, progress=True)

        def number(clip_name: str) -> int:
            return int(clip_name.split("_")[-1])

        scales = dict.fromkeys(evals, 1.0)
        if args.learn_clips:
            # The learning period starts from the calibration the camera is deployed with:
            # fold 0's (``learning``) and, for a cross-fitted checkpoint, the cross-fitted
            # one (``learning-crossfit``).
            for base_name, name, key in (("fold0", "learning", "learning_period"),
                                         ("crossfit", "learning-crossfit", "learning_period_crossfit")):
                if base_name not in evals:
                    continue
                base = evals[base_name]
                seen = [c for c in base.clips if number(c.name) - FIRST_NORMAL_CLIP in learned]
                period = np.concatenate([c.streaming for c in seen])
                far = variants[base_name].calibration.false_alarm_rate
                lt = learn_threshold(scene, "bench", period, period.size / args.fps, far)
                report[f"{scene}/{key}"] = lt.to_json()
                evals = {**evals, name: base}
                scales[name] = lt.scale
                variants[name] = variants[base_name]
        for name, ev in evals.items():
            kept = [c for c in ev.clips if number(c.name) % FIRST_NORMAL_CLIP not in learned]
            test = [c for c in kept if number(c.name) < FIRST_NORMAL_CLIP]
            normal = [c for c in kept if number(c.name) >= FIRST_NORMAL_CLIP]
            labels = np.concatenate([c.labels for c in test]).astype(bool)
            scores = np.concatenate([c.streaming for c in test]) / scales[name]
            normal_scores = np.concatenate([c.streaming for c in normal]) if normal else np.zeros(0)
            normal_scores = normal_scores / scales[name]
            parts.setdefault(name, []).append((labels, scores, normal_scores))
            cal = variants[name].calibration
            report[f"{scene}/{name}"] = {**rates(labels, scores, normal_scores),
                                         "threshold": cal.threshold if cal else None,
                                         "scale": scales[name],
                                         "calibration_frames": len(cal.normal_scores) if cal else 0}
    for name, items in parts.items():
        labels, scores, normal = (np.concatenate([i[k] for i in items]) for k in range(3))
        report[f"pooled/{name}"] = rates(labels, scores, normal)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

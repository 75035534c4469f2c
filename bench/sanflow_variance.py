#!/usr/bin/env python3
"""What SANFlow's statistics network predicts: variance maps as pictures, and histograms of
the predicted variance at normal and at anomalous locations (as the paper's Figure S6).

For a trained SANFlow scene checkpoint and frames of that scene (an STC-layout benchmark
root: its training videos, or its test clips with pixel masks), it predicts log σ² (the
mode of the inverse gamma) per location of every feature grid and writes:

* ``variance.png``: per frame, the frame with its anomaly outlined, then the predicted σ²
  of each layer (a shared colour scale per layer, blue low, red high);
* ``histogram.png`` and ``variance.json``: the distribution of log σ² at normal and at
  anomalous grid cells per layer, with its quantiles and the AUROC with which σ² alone
  separates them (0.5: the variance does not see the anomaly; the paper's premise is that
  it grows there).

Two sources of anomalies: ``--synthetic`` (the training-time synthetic anomalies pasted
into training frames, as the network was trained on them) or the benchmark's test clips
(real composited anomalies with exact masks, ``--clips``).

    python bench/sanflow_variance.py --root /tmp/campus1 \\
        --registry runs/compare/scenes/sanflow_stats-quarter --scene 01 --synthetic 16 --out runs/variance-01
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from detector.checkpoint import load_scene  # noqa: E402
from detector.encoders import Encoder  # noqa: E402
from detector.model import resize_for_model, to_input  # noqa: E402
from detector.sanflow import SANFlowHead, grid_masks  # noqa: E402
from scenes.registry import SceneRegistry  # noqa: E402
from streamer.video import iter_frame_dir  # noqa: E402
from training.augment import SyntheticAnomalies  # noqa: E402
from training.data import load_scene_frames, stc_training_videos  # noqa: E402
from training.metrics import auroc  # noqa: E402


def synthetic_frames(root: Path, scene: str, size: int, count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` training frames with SANFlow's synthetic anomalies (balanced with normal ones)."""
    data = load_scene_frames(stc_training_videos(root, scene), size, 0.25)
    aug = SyntheticAnomalies(data.train, seed=1)
    items = aug.batch(list(np.linspace(0, len(data.train) - 1, count).astype(int)))
    return [a.image for a in items], np.stack([a.mask for a in items])


def clip_frames(root: Path, scene: str, size: int, count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Test frames with anomalies (and as many without), with their pixel masks at ``size``."""
    frames, masks = [], []
    for clip in sorted((root / "testing" / "frames").glob(f"{scene}_*")):
        pixel = np.load(root / "testing" / "test_pixel_mask" / f"{clip.name}.npy")
        for i, f in enumerate(iter_frame_dir(clip)):
            frames.append(resize_for_model(f.image, size))
            mask = cv2.resize(pixel[i].astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
            masks.append(mask > 0)
    masks_a = np.stack(masks)
    hot = np.flatnonzero(masks_a.any((1, 2)))
    cold = np.flatnonzero(~masks_a.any((1, 2)))
    pick = np.concatenate([hot[np.linspace(0, len(hot) - 1, count // 2).astype(int)] if len(hot) else [],
                           cold[np.linspace(0, len(cold) - 1, count - count // 2).astype(int)]]).astype(int)
    return [frames[i] for i in pick], masks_a[pick]


def colour(values: np.ndarray, lo: float, hi: float, size: int) -> np.ndarray:
    scaled = np.clip((values - lo) / max(hi - lo, 1e-9), 0, 1)
    img = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="STC-layout benchmark root")
    p.add_argument("--registry", type=Path, required=True, help="scene checkpoints")
    p.add_argument("--scene", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", type=int, metavar="N", help="N training frames with synthetic anomalies")
    src.add_argument("--clips", type=int, metavar="N", help="N test frames (half with anomalies)")
    p.add_argument("--shown", type=int, default=6, help="frames drawn in variance.png")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    model, _meta = load_scene(SceneRegistry(args.registry), args.scene)
    if not isinstance(model.head, SANFlowHead) or model.head.stats is None:
        raise SystemExit(f"scene {args.scene} in {args.registry} is not a SANFlow model with a "
                         "statistics network")
    encoder = Encoder(model.encoder)
    size = model.input_size
    get = synthetic_frames if args.synthetic else clip_frames
    frames, masks = get(args.root, args.scene, size, args.synthetic or args.clips)
    with torch.no_grad():
        images = to_input(frames, size)
        features = encoder(images)
        log_var = [v.numpy() for v in model.head.log_variance_maps(features, images)]
    cells = [g.numpy() for g in grid_masks(torch.from_numpy(masks), [v.shape[1:] for v in log_var])]
    source = "synthetic" if args.synthetic else "clips"
    report: dict = {"scene": args.scene, "frames": len(frames), "source": source, "layers": []}
    for layer, (v, m) in enumerate(zip(log_var, cells, strict=True)):
        normal, anomalous = v[~m], v[m]
        row = {"layer": layer, "grid": list(v.shape[1:]), "normal_cells": int(normal.size),
               "anomalous_cells": int(anomalous.size),
               "normal_log_var_quantiles": np.quantile(normal, [0.05, 0.5, 0.95]).tolist()}
        if anomalous.size:
            row["anomalous_log_var_quantiles"] = np.quantile(anomalous, [0.05, 0.5, 0.95]).tolist()
            row["auroc_variance_sees_anomaly"] = auroc(np.r_[np.zeros(normal.size), np.ones(anomalous.size)],
                                                       np.r_[normal, anomalous])
        report["layers"].append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "variance.json").write_text(json.dumps(report, indent=1) + "\n")

    shown = list(np.argsort(-masks.reshape(len(masks), -1).any(1).astype(int), kind="stable")[: args.shown])
    rows = []
    for i in shown:
        img = frames[i].copy()
        contours, _ = cv2.findContours(masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, (255, 255, 255), 1)
        tiles = [img] + [colour(v[i], float(np.quantile(v, 0.01)), float(np.quantile(v, 0.99)), size)
                         for v in log_var]
        rows.append(np.concatenate(tiles, axis=1))
    cv2.imwrite(str(args.out / "variance.png"), np.concatenate(rows, axis=0))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(log_var), figsize=(4 * len(log_var), 3))
    for ax, v, m, row in zip(np.atleast_1d(axes), log_var, cells, report["layers"], strict=True):
        bins = np.linspace(float(v.min()), float(v.max()) + 1e-6, 40)
        ax.hist(v[~m], bins=bins, density=True, alpha=0.6, label="normal")
        if m.any():
            ax.hist(v[m], bins=bins, density=True, alpha=0.6, label="anomalous")
        ax.set_title(f"layer {row['layer']} ({row['grid'][0]}x{row['grid'][1]})"
                     + (f", AUROC {row['auroc_variance_sees_anomaly']:.2f}" if m.any() else ""))
        ax.set_xlabel("predicted log σ²")
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "histogram.png", dpi=100)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

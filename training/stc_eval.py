"""STC evaluation: score every test frame of every scene and report the papers' metrics.

Two protocols, labelled everywhere:

* **streaming** -- the calibrated per-frame maps and scores the system alerts on, computed
  from each frame and its scene's checkpoint alone;
* **paper** -- the published CFLOW-AD normalisation, for comparison with the tables: per
  layer, the log-likelihood per dimension minus its maximum over the scene's test set,
  exponentiated, upsampled and summed; the map is the test set's maximum of that sum minus
  the sum; the frame score is the map's maximum. It needs the whole test set before the
  first score, so no stream can use it.

Optionally, causal temporal smoothing of the streaming frame scores (the mean of the last
``w`` scores of the clip, usable live) is reported as separate rows.

Memory stays bounded at STC scale (42,883 test frames of 480x856): only each frame's small
per-layer log-likelihood grids are kept; pixel AUROC and AUPRO are accumulated in score
histograms (see :mod:`training.metrics`), their quantisation error bounded and reported.
"""

from __future__ import annotations

import json
import logging
import resource
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from detector.encoders import Encoder
from detector.model import SceneModel
from streamer.video import SourceError
from training.evaluate import clip_nll_maps, load_masks, stc_test_clips
from training.metrics import BinnedPRO, BinnedROC, auroc

log = logging.getLogger(__name__)

PUBLISHED = {  # STC, WideResNet-50, 256x256 (frame AUROC, pixel AUROC)
    "CFLOW-AD (Gudovskiy et al., WACV 2022)": (72.63, 94.48),
    "SANFlow (Kim, Baik, Kim)": (76.1, 94.8),
}
STREAMING_RANGE = (-20.0, 200.0)  # calibrated units; clipped values land in the end bins
BINS = 1 << 14


@dataclass
class ClipResult:
    """One test clip's per-frame results (everything small enough to keep for all clips)."""

    name: str
    scene: str
    labels: np.ndarray  # (T,) bool
    streaming: np.ndarray  # (T,) calibrated frame scores
    layer_nll: list[np.ndarray]  # per layer (T, H_l, W_l) float32 NLL per dimension
    seqs: np.ndarray  # frame numbers


@dataclass
class ProtocolMetrics:
    """Pixel accumulators of one protocol over a set of frames."""

    roc: BinnedROC
    pro: BinnedPRO

    @classmethod
    def new(cls, low: float, high: float) -> ProtocolMetrics:
        return cls(BinnedROC(low, high, BINS), BinnedPRO(low, high, BINS))

    def update(self, amap: np.ndarray, truth: np.ndarray) -> None:
        up = cv2.resize(amap.astype(np.float32), (truth.shape[1], truth.shape[0]),
                        interpolation=cv2.INTER_LINEAR)
        self.roc.update(up, truth)
        self.pro.update(up, truth)

    def merge(self, other: ProtocolMetrics) -> None:
        for mine, theirs in ((self.roc, other.roc), (self.pro.roc, other.pro.roc)):
            mine.pos += theirs.pos
            mine.neg += theirs.neg
        self.pro.overlap_sum += other.pro.overlap_sum
        self.pro.regions += other.pro.regions

    def summary(self) -> dict:
        out = {"pixel_auroc": self.roc.auroc(), "pixel_auroc_error_bound": self.roc.tie_bound()}
        try:
            out["aupro_0.3"] = self.pro.aupro(0.3)
        except ValueError:
            out["aupro_0.3"] = None
        return out


@dataclass
class SceneRun:
    scene: str
    clips: list[ClipResult] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    streaming_pixels: ProtocolMetrics = field(default_factory=lambda: ProtocolMetrics.new(*STREAMING_RANGE))
    paper_pixels: ProtocolMetrics | None = None
    paper_scores: dict[str, np.ndarray] = field(default_factory=dict)


def causal_mean(scores: np.ndarray, window: int) -> np.ndarray:
    """Mean of the current and up to ``window - 1`` previous scores (no look-ahead)."""
    c = np.cumsum(np.concatenate([[0.0], scores]))
    idx = np.arange(1, len(scores) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def _frame_count(folder: Path) -> int:
    from streamer.video import IMAGE_SUFFIXES

    return sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.isdigit())


def score_scene(encoder: Encoder, model: SceneModel, root: Path, scene: str,
                examples: int = 2, out_dir: Path | None = None) -> SceneRun:
    """Streaming pass over a scene's test clips; keeps per-layer NLL grids for the paper pass."""
    run = SceneRun(scene)
    best: list[tuple[float, np.ndarray, np.ndarray, np.ndarray, str]] = []  # for example figures
    for clip in tqdm(stc_test_clips(root, scene), desc=f"scene {scene}: streaming", unit="clip"):
        try:
            n = _frame_count(clip.frames)
            labels, pixel_mask = load_masks(clip, n)
            frames, nll = clip_nll_maps(encoder, model, clip)
            if len(frames) != n:
                raise SourceError(f"{n - len(frames)} unreadable frames")
        except SourceError as exc:
            run.skipped.append({"clip": clip.name, "reason": str(exc)})
            log.warning("skipping test clip %s: %s", clip.name, exc)
            continue
        scored = model.score_nll(nll)
        maps = scored.maps.float().cpu().numpy()
        if pixel_mask is not None:
            for i in range(len(maps)):
                run.streaming_pixels.update(maps[i], np.asarray(pixel_mask[i]))
        run.clips.append(ClipResult(clip.name, scene, labels, np.asarray(scored.scores, dtype=np.float64),
                                    [m.float().cpu().numpy() for m in nll], np.arange(n)))
        if out_dir is not None and labels.any():
            i = int(np.argmax(np.where(labels, scored.scores, -np.inf)))
            truth = np.asarray(pixel_mask[i]) if pixel_mask is not None else np.zeros(frames[i].shape[:2])
            best.append((float(scored.scores[i]), frames[i], maps[i], truth, f"{clip.name} frame {i}"))
            best = sorted(best, key=lambda b: -b[0])[:examples]
    if out_dir is not None:
        for k, (score, frame, amap, truth, title) in enumerate(best):
            plot_example(frame, amap, truth, score, title, out_dir / f"example_{scene}_{k}.png")
    return run


def paper_protocol(run: SceneRun, root: Path, feature_dims: Sequence[int], size: int) -> None:
    """The published test-set normalisation, from the kept per-layer NLL grids."""
    if not run.clips:
        return
    # log p per dimension = -NLL; its maximum over the scene's test set, per layer.
    layer_max = [max(float((-c.layer_nll[i]).max()) for c in run.clips) for i in range(len(feature_dims))]

    def score_maps(clip: ClipResult) -> torch.Tensor:
        total = None
        for i, nll in enumerate(clip.layer_nll):
            prob = torch.exp(torch.from_numpy(-nll).double() - layer_max[i]).unsqueeze(1)
            up = F.interpolate(prob, size=(size, size), mode="bilinear", align_corners=True).squeeze(1)
            total = up if total is None else total + up
        assert total is not None
        return total

    global_max = max(float(score_maps(c).max()) for c in run.clips)
    run.paper_pixels = ProtocolMetrics.new(0.0, float(len(feature_dims)))
    test_clips = {c.name: c for c in stc_test_clips(root, run.scene)}
    for clip in tqdm(run.clips, desc=f"scene {run.scene}: paper protocol", unit="clip"):
        maps = (global_max - score_maps(clip)).float().numpy()
        run.paper_scores[clip.name] = maps.reshape(len(maps), -1).max(1).astype(np.float64)
        test_clip = test_clips[clip.name]
        if test_clip.pixel_mask is not None:
            pixel_mask = np.load(test_clip.pixel_mask, mmap_mode="r")
            for i in range(len(maps)):
                run.paper_pixels.update(maps[i], np.asarray(pixel_mask[i]))


def frame_rows(runs: Sequence[SceneRun], smoothing: Sequence[int]) -> dict[str, dict]:
    """Frame AUROC per scene and pooled (micro: all test frames together), per protocol."""
    def collect(get) -> dict:
        out = {}
        for run in runs:
            if run.clips:
                labels = np.concatenate([c.labels for c in run.clips])
                out[run.scene] = auroc(labels, np.concatenate([get(run, c) for c in run.clips]))
        all_labels = np.concatenate([c.labels for r in runs for c in r.clips])
        out["pooled"] = auroc(all_labels, np.concatenate([get(r, c) for r in runs for c in r.clips]))
        return out

    rows = {"streaming": collect(lambda r, c: c.streaming)}
    for w in smoothing:
        rows[f"streaming, causal mean of {w}"] = collect(lambda r, c, w=w: causal_mean(c.streaming, w))
    if all(r.paper_pixels is not None for r in runs if r.clips):
        rows["paper"] = collect(lambda r, c: r.paper_scores[c.name])
    return rows


# ------------------------------------------------------------------------------ figures

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_example(frame: np.ndarray, amap: np.ndarray, truth: np.ndarray, score: float, title: str,
                 path: Path) -> None:
    from detector.overlay import heat_overlay

    overlay = heat_overlay(frame, amap, score)
    contours, _ = cv2.findContours(np.asarray(truth).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(overlay, contours, -1, (0, 255, 0), 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), overlay)


def plot_timelines(runs: Sequence[SceneRun], out: Path) -> list[str]:
    plt = _plt()
    paths = []
    for run in runs:
        for clip in run.clips:
            fig, ax = plt.subplots(figsize=(9, 2.6), dpi=90)
            ax.plot(clip.seqs, clip.streaming, lw=1.2, label="streaming score (calibrated)")
            ax.axhline(1.0, color="red", ls="--", lw=1, label="threshold")
            on = np.flatnonzero(np.diff(np.concatenate([[0], clip.labels.astype(int), [0]])))
            for start, stop in zip(on[0::2], on[1::2], strict=True):
                ax.axvspan(start - 0.5, stop - 0.5, color="orange", alpha=0.25, lw=0)
            ax.set_title(f"{clip.name} (shaded: ground-truth anomaly)")
            ax.set_xlabel("frame")
            ax.legend(loc="upper right", fontsize=7)
            fig.tight_layout()
            path = out / "timelines" / f"{clip.name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path)
            plt.close(fig)
            paths.append(str(path.relative_to(out)))
    return paths


def plot_roc(runs: Sequence[SceneRun], pooled_pixels: dict[str, ProtocolMetrics], out: Path) -> str:
    from sklearn.metrics import roc_curve

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=90)
    labels = np.concatenate([c.labels for r in runs for c in r.clips])
    curves = {"streaming": np.concatenate([c.streaming for r in runs for c in r.clips])}
    if "paper" in pooled_pixels:
        curves["paper"] = np.concatenate([r.paper_scores[c.name] for r in runs for c in r.clips])
    for name, scores in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        axes[0].plot(fpr, tpr, label=f"{name} (AUROC {auroc(labels, scores):.3f})")
    for name, metrics in pooled_pixels.items():
        fpr, tpr = metrics.roc.curve()
        axes[1].plot(fpr, tpr, label=f"{name} (AUROC {metrics.roc.auroc():.3f})")
    for ax, title in zip(axes, ("frame level, all scenes pooled", "pixel level, all scenes pooled"),
                         strict=True):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "roc.png")
    plt.close(fig)
    return "roc.png"


# ------------------------------------------------------------------------------ report

def write_report(runs: Sequence[SceneRun], out: Path, meta: dict, smoothing: Sequence[int]) -> dict:
    """report.json, report.md and the figures; returns the report dict."""
    out.mkdir(parents=True, exist_ok=True)
    pooled_pixels: dict[str, ProtocolMetrics] = {"streaming": ProtocolMetrics.new(*STREAMING_RANGE)}
    if all(r.paper_pixels is not None for r in runs if r.clips):
        pooled_pixels["paper"] = ProtocolMetrics.new(0.0, float(len(runs[0].clips[0].layer_nll)))
    per_scene: dict[str, dict] = {}
    for run in runs:
        if not run.clips:
            continue
        pooled_pixels["streaming"].merge(run.streaming_pixels)
        per_scene[run.scene] = {"streaming": run.streaming_pixels.summary(),
                                "clips": len(run.clips), "skipped": run.skipped}
        if run.paper_pixels is not None and "paper" in pooled_pixels:
            pooled_pixels["paper"].merge(run.paper_pixels)
            per_scene[run.scene]["paper"] = run.paper_pixels.summary()
    frames = frame_rows(runs, smoothing)
    report = {
        **meta,
        "frames": int(sum(len(c.labels) for r in runs for c in r.clips)),
        "anomalous_frames": int(sum(int(c.labels.sum()) for r in runs for c in r.clips)),
        "frame_auroc": frames,
        "pixel": {name: m.summary() for name, m in pooled_pixels.items()},
        "per_scene_pixel": per_scene,
        "skipped": [s for r in runs for s in r.skipped],
        "published_wrn50": {k: {"frame_auroc": v[0], "pixel_auroc": v[1]} for k, v in PUBLISHED.items()},
    }
    report["figures"] = {"roc": plot_roc(runs, pooled_pixels, out), "timelines": plot_timelines(runs, out),
                         "examples": sorted(p.name for p in out.glob("example_*.png"))}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "report.md").write_text(render_markdown(report))
    return report


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def render_markdown(r: dict) -> str:
    scenes = [s for s in r["frame_auroc"]["streaming"] if s != "pooled"]
    lines = [
        f"# STC evaluation: {r['model']} on {r['root']}",
        "",
        f"Encoder {r['encoder']}, input {r['input_size']}×{r['input_size']}; {r['frames']} test frames "
        f"({r['anomalous_frames']} anomalous) in {len(scenes)} scenes; scores produced by the "
        f"**{r['path']}** path. Wall time {r['wall_seconds']:.0f} s, peak memory {r['peak_rss_mb']:.0f} MB.",
        "",
        "## Frame-level AUROC (%)",
        "",
        "| protocol | " + " | ".join(scenes) + " | pooled (micro) |",
        "| --- | " + " | ".join("---" for _ in scenes) + " | --- |",
    ]
    for name, row in r["frame_auroc"].items():
        cells = " | ".join(_pct(row.get(s)) for s in scenes)
        lines.append(f"| {name} | {cells} | {_pct(row['pooled'])} |")
    lines += ["", "## Pixel level, all test frames (%)", "",
              "| protocol | pixel AUROC | AUPRO (FPR ≤ 0.3) | AUROC quantisation bound |",
              "| --- | --- | --- | --- |"]
    for name, m in r["pixel"].items():
        lines.append(f"| {name} | {_pct(m['pixel_auroc'])} | {_pct(m['aupro_0.3'])} | "
                     f"±{100 * m['pixel_auroc_error_bound']:.4f} |")
    lines += ["", "## Beside the published numbers (STC, frame / pixel AUROC %)", "",
              "| method | encoder, input | frame | pixel |", "| --- | --- | --- | --- |"]
    for name, v in r["published_wrn50"].items():
        lines.append(f"| {name} | WideResNet-50, 256×256 | {v['frame_auroc']:.2f} | {v['pixel_auroc']:.2f} |")
    for proto in r["pixel"]:
        lines.append(f"| vigilflow {r['model']} ({proto} protocol) | {r['encoder']}, {r['input_size']}×"
                     f"{r['input_size']} | {_pct(r['frame_auroc'][proto]['pooled'])} | "
                     f"{_pct(r['pixel'][proto]['pixel_auroc'])} |")
    lines += ["", "The **streaming** protocol is what the system alerts on: each frame's calibrated score "
              "from its scene's checkpoint alone. The **paper** protocol normalises by the maximum over "
              "the scene's whole test set, as the published code does; no stream can do that.", ""]
    if r.get("pipeline_check"):
        pc = r["pipeline_check"]
        lines += [f"Through-pipeline check: {pc['frames']} frames, max |pipeline − offline| score "
                  f"{pc['max_abs_diff']:.2e} (tolerance {pc['tolerance']:.0e}): "
                  f"{'OK' if pc['ok'] else 'MISMATCH'}.", ""]
    if r["skipped"]:
        lines += ["## Skipped", ""] + [f"- {s['clip']}: {s['reason']}" for s in r["skipped"]] + [""]
    lines += ["## Figures", "", f"![ROC]({r['figures']['roc']})", ""]
    lines += [f"![example]({p})" for p in r["figures"]["examples"]]
    lines += ["", "Score timelines per test video: " + ", ".join(
        f"[{Path(p).stem}]({p})" for p in r["figures"]["timelines"]), ""]
    return "\n".join(lines)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def score_stc(encoder: Encoder, models: dict[str, SceneModel], root: Path,
              out: Path | None = None) -> list[SceneRun]:
    """Score every scene's test set offline (streaming, then paper protocol)."""
    runs = []
    for scene, model in models.items():
        run = score_scene(encoder, model, root, scene, out_dir=out)
        paper_protocol(run, root, model.feature_dims, model.input_size)
        runs.append(run)
    if not any(r.clips for r in runs):
        raise SourceError(f"no test clip of scenes {list(models)} could be evaluated in {root}")
    return runs


def discover_scenes(root: Path) -> list[str]:
    """Scene ids present in an STC test set (the prefix of ``testing/frames/<scene>_<clip>``)."""
    frames = Path(root) / "testing" / "frames"
    if not frames.is_dir():
        raise SourceError(f"not an STC dataset root: {frames} does not exist")
    return sorted({p.name.split("_")[0] for p in frames.iterdir() if p.is_dir() and "_" in p.name})

"""The STC evaluation's report: report.json, report.md and its figures.

The frame table has a row per protocol (see :mod:`training.stc_eval`) and, optionally,
rows of causal temporal smoothing of the streaming frame scores (the mean of the last
``w`` scores of the clip, usable live). The pixel table pools every scene's accumulator.
Figures: the pooled ROC curves, a score timeline per test video, and example frames
(:class:`ExampleFrames` picks them while the scorer runs).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from detector.temporal import causal_mean
from training.evaluate import ClipResult, SceneEvaluation, ScoredClip
from training.metrics import PixelMetrics, auroc

PUBLISHED = {  # STC, WideResNet-50, 256x256 (frame AUROC, pixel AUROC)
    "CFLOW-AD (Gudovskiy et al., WACV 2022)": (72.63, 94.48),
    "SANFlow (Kim, Baik, Kim)": (76.1, 94.8),
}


def frame_rows(runs: Sequence[SceneEvaluation], smoothing: Sequence[int]) -> dict[str, dict]:
    """Frame AUROC per scene and pooled (micro: all test frames together), per protocol.

    Args:
        runs: the scenes' evaluations.
        smoothing: causal-mean windows to report as extra streaming rows.

    Returns:
        By protocol, the AUROC by scene id and ``pooled``.
    """
    def collect(get: Callable[[SceneEvaluation, ClipResult], np.ndarray]) -> dict:
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
    """Write a frame with its anomaly map as a heat overlay and the ground truth outlined.

    Args:
        frame: the BGR frame.
        amap: its calibrated anomaly map.
        truth: its ground-truth mask.
        score: its calibrated frame score.
        title: what the figure shows (unused in the image).
        path: the image file to write.
    """
    from detector.overlay import heat_overlay

    overlay = heat_overlay(frame, amap, score)
    contours, _ = cv2.findContours(np.asarray(truth).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(overlay, contours, -1, (0, 255, 0), 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), overlay)


class ExampleFrames:
    """An observer of the scorer: each clip's highest-scored anomalous frame, of which a
    scene keeps the ``count`` highest for example figures."""

    def __init__(self, count: int = 2) -> None:
        self.count = count
        self.best: list[tuple[float, np.ndarray, np.ndarray, np.ndarray, str]] = []

    def __call__(self, scored: ScoredClip) -> None:
        """Consider a scored clip's frames.

        Args:
            scored: the clip, as the scorer hands it over.
        """
        if not scored.labels.any():
            return
        i = int(np.argmax(np.where(scored.labels, scored.scores, -np.inf)))
        pixel_mask = scored.pixel_mask
        truth = np.asarray(pixel_mask[i]) if pixel_mask is not None else np.zeros(scored.frames[i].shape[:2])
        self.best.append((float(scored.scores[i]), scored.frames[i], scored.maps[i], truth,
                          f"{scored.clip.name} frame {i}"))
        self.best = sorted(self.best, key=lambda b: -b[0])[: self.count]

    def write(self, out: Path, scene: str) -> None:
        """Write the kept frames as ``example_{scene}_{k}.png``.

        Args:
            out: the report folder.
            scene: the scene id.
        """
        for k, (score, frame, amap, truth, title) in enumerate(self.best):
            plot_example(frame, amap, truth, score, title, out / f"example_{scene}_{k}.png")


def plot_timelines(runs: Sequence[SceneEvaluation], out: Path) -> list[str]:
    """Write a streaming-score timeline per test clip, ground-truth anomalies shaded.

    Args:
        runs: the scenes' evaluations.
        out: the report folder.

    Returns:
        The figures' paths, relative to ``out``.
    """
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


def plot_roc(runs: Sequence[SceneEvaluation], pooled_pixels: dict[str, PixelMetrics], out: Path) -> str:
    """Write the pooled frame- and pixel-level ROC curves of each protocol.

    Args:
        runs: the scenes' evaluations.
        pooled_pixels: each protocol's pooled pixel accumulator.
        out: the report folder.

    Returns:
        The figure's path, relative to ``out``.
    """
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

def write_report(runs: Sequence[SceneEvaluation], out: Path, meta: dict, smoothing: Sequence[int]) -> dict:
    """Write report.json, report.md and the figures.

    Args:
        runs: the scenes' evaluations (:func:`training.stc_eval.score_stc`).
        out: the report folder (created).
        meta: what the run was (model, encoder, paths, timings); joins the report.
        smoothing: causal-mean windows reported as extra frame rows.

    Returns:
        The report as written to report.json.
    """
    out.mkdir(parents=True, exist_ok=True)
    scored = [r for r in runs if r.clips]
    pooled_pixels = {"streaming": PixelMetrics.pooled([r.pixels for r in scored])}
    if all(r.paper_pixels is not None for r in scored):
        paper = [r.paper_pixels for r in scored if r.paper_pixels is not None]
        pooled_pixels["paper"] = PixelMetrics.pooled(paper)
    per_scene: dict[str, dict] = {}
    for run in scored:
        per_scene[run.scene] = {"streaming": run.pixels.summary(), "clips": len(run.clips),
                                "skipped": run.skipped}
        if run.paper_pixels is not None and "paper" in pooled_pixels:
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
    """The report as markdown.

    Args:
        r: the report (:func:`write_report`).

    Returns:
        The markdown text.
    """
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

"""Evaluation on STC-layout test sets: frame-level and pixel-level AUROC per scene.

The frame and pixel scores are the calibrated streaming ones: computed per frame from the
checkpoint alone. Test frames are never used to select anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from detector.encoders import Encoder
from detector.model import SceneModel, to_input
from streamer.video import SourceError, iter_frame_dir
from training.metrics import BinnedROC, auroc

# Calibrated scores: 0 = normal median, 1 = threshold. Beyond this range scores are clipped
# into the end bins, which the tie bound accounts for.
PIXEL_SCORE_RANGE = (-20.0, 200.0)
PIXEL_BINS = 1 << 16


@dataclass(frozen=True)
class TestClip:
    """One STC test video: its frame folder and ground-truth masks."""

    name: str
    frames: Path
    frame_mask: Path
    pixel_mask: Path | None


def stc_test_clips(root: str | Path, scene: str) -> list[TestClip]:
    """The scene's test clips in an STC-layout root (``testing/frames/{scene}_NNNN``)."""
    testing = Path(root) / "testing"
    frames_dir = testing / "frames"
    if not frames_dir.is_dir():
        raise SourceError(f"not an STC dataset root: {frames_dir} does not exist")
    clips = []
    for folder in sorted(p for p in frames_dir.iterdir() if p.is_dir() and p.name.startswith(f"{scene}_")):
        frame_mask = testing / "test_frame_mask" / f"{folder.name}.npy"
        if not frame_mask.is_file():
            raise SourceError(f"test clip {folder.name}: frame mask {frame_mask} is missing")
        pixel_mask = testing / "test_pixel_mask" / f"{folder.name}.npy"
        clips.append(TestClip(folder.name, folder, frame_mask, pixel_mask if pixel_mask.is_file() else None))
    if not clips:
        raise SourceError(f"no test clips for scene {scene!r} in {frames_dir}")
    return clips


@dataclass
class SceneEvaluation:
    """Per-frame results of one scene's test clips and its pixel ROC accumulator."""

    scene: str
    clips: list[str] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    pixel_roc: BinnedROC = field(default_factory=lambda: BinnedROC(*PIXEL_SCORE_RANGE, PIXEL_BINS))

    def frame_auroc(self) -> float:
        return auroc(np.concatenate(self.labels), np.concatenate(self.scores))

    def summary(self) -> dict:
        return {
            "scene": self.scene,
            "clips": len(self.clips),
            "frames": int(sum(len(x) for x in self.labels)),
            "anomalous_frames": int(sum(int(x.sum()) for x in self.labels)),
            **alarm_rates(np.concatenate(self.labels), np.concatenate(self.scores)),
            "frame_auroc": self.frame_auroc(),
            "pixel_auroc": self.pixel_roc.auroc(),
            "pixel_auroc_error_bound": self.pixel_roc.tie_bound(),
        }


def alarm_rates(labels: np.ndarray, scores: np.ndarray) -> dict:
    """At the calibrated threshold (score >= 1): false alarms on normal test frames and
    detections of anomalous ones -- how well the calibration carried over to new footage."""
    def above(x: np.ndarray) -> float:
        return float((x >= 1.0).mean()) if x.size else float("nan")

    labels = labels.astype(bool)
    return {
        "normal_frames_above_threshold": above(scores[~labels]),
        "anomalous_frames_above_threshold": above(scores[labels]),
    }


def pooled(evals: Sequence[SceneEvaluation]) -> dict:
    """Micro-averaged metrics over several scenes (all frames / pixels together)."""
    roc = BinnedROC(*PIXEL_SCORE_RANGE, PIXEL_BINS)
    for e in evals:
        roc.pos += e.pixel_roc.pos
        roc.neg += e.pixel_roc.neg
    labels = np.concatenate([np.concatenate(e.labels) for e in evals])
    scores = np.concatenate([np.concatenate(e.scores) for e in evals])
    return {
        "scene": "pooled",
        "frames": int(len(labels)),
        **alarm_rates(labels, scores),
        "frame_auroc": auroc(labels, scores),
        "pixel_auroc": roc.auroc(),
        "pixel_auroc_error_bound": roc.tie_bound(),
    }


def load_masks(clip: TestClip, n_frames: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A clip's frame labels and pixel masks (memory-mapped), checked against its length."""
    frame_mask = np.load(clip.frame_mask)
    if frame_mask.shape != (n_frames,):
        raise SourceError(
            f"test clip {clip.name}: frame mask has shape {frame_mask.shape}, "
            f"but the clip has {n_frames} frames"
        )
    pixel_mask = None
    if clip.pixel_mask is not None:
        pixel_mask = np.load(clip.pixel_mask, mmap_mode="r")
        if pixel_mask.shape[0] != n_frames:
            raise SourceError(
                f"test clip {clip.name}: pixel mask has {pixel_mask.shape[0]} frames, "
                f"the clip has {n_frames}"
            )
    return frame_mask.astype(bool), pixel_mask


@torch.no_grad()
def clip_nll_maps(
    encoder: Encoder, model: SceneModel, clip: TestClip, batch: int = 16
) -> tuple[list[np.ndarray], list[torch.Tensor]]:
    """Decode a clip and compute its per-layer NLL maps; returns (frames, maps per layer)."""
    frames = [f.image for f in iter_frame_dir(clip.frames)]
    per_layer: list[list[torch.Tensor]] = []
    for i in range(0, len(frames), batch):
        images = to_input(frames[i : i + batch], model.input_size)
        maps = model.nll_maps(encoder(images), images)
        per_layer = per_layer or [[] for _ in maps]
        for acc, m in zip(per_layer, maps, strict=True):
            acc.append(m)
    return frames, [torch.cat(acc) for acc in per_layer]


def accumulate_clip(
    result: SceneEvaluation,
    clip: TestClip,
    frame_labels: np.ndarray,
    pixel_mask: np.ndarray | None,
    maps: torch.Tensor,
    scores: np.ndarray,
) -> None:
    """Add one clip's calibrated maps (N, S, S) and frame scores (N,) to ``result``."""
    result.clips.append(clip.name)
    result.labels.append(frame_labels)
    result.scores.append(scores)
    if pixel_mask is None:
        return
    maps_np = maps.float().cpu().numpy()
    for i in range(len(maps_np)):
        truth = np.asarray(pixel_mask[i])
        up = cv2.resize(maps_np[i], (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR)
        result.pixel_roc.update(up, truth)


def evaluate_scene(
    encoder: Encoder,
    models: SceneModel | dict[str, SceneModel],
    root: str | Path,
    scene: str,
    progress: bool = True,
) -> SceneEvaluation | dict[str, SceneEvaluation]:
    """Score every test frame of a scene and accumulate frame and pixel metrics.

    ``models`` may be several variants of one trained head (other normalisation or score
    reduction); the encoder and flow pass is then shared and each variant gets its own
    evaluation.
    """
    variants = models if isinstance(models, dict) else {"model": models}
    first = next(iter(variants.values()))
    results = {name: SceneEvaluation(scene) for name in variants}
    for clip in tqdm(stc_test_clips(root, scene), desc=f"scene {scene}", disable=not progress):
        frames, nll = clip_nll_maps(encoder, first, clip)
        labels, pixel_mask = load_masks(clip, len(frames))
        for name, model in variants.items():
            scored = model.score_nll(nll)
            accumulate_clip(results[name], clip, labels, pixel_mask, scored.maps, scored.scores)
    return results if isinstance(models, dict) else results["model"]

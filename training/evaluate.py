"""The one scorer of STC-layout test sets: clips -> NLL maps -> masks -> scores -> pixel metrics.

The frame and pixel scores are the calibrated streaming ones: computed per frame from the
checkpoint alone. Test frames are never used to select anything. Several variants of one
trained head (other normalisation or score reduction, as the bench scripts compare) share
the decoding, encoder and flow pass; each gets its own :class:`SceneEvaluation`.
``vigil eval stc`` (:mod:`training.stc_eval`) adds AUPRO, the kept NLL grids for the
paper protocol and example figures; the bench scripts read :meth:`SceneEvaluation.summary`
and :func:`pooled`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from detector.encoders import Encoder
from detector.model import SceneModel, resize_for_model
from detector.temporal import causal_mean
from streamer.video import SourceError, iter_frame_dir
from training.metrics import PixelMetrics, alarm_rates, auroc
from training.motion import motion_sequence
from training.testset import EvaluationError, TestClip, frame_count, load_masks, stc_test_clips
from training.train import measure_nll

log = logging.getLogger(__name__)

#: Calibrated scores: 0 = normal median, 1 = threshold. Beyond this range scores are clipped
#: into the end bins, which the tie bound accounts for.
CALIBRATED_RANGE = (-20.0, 200.0)
#: Score bins of the pixel accumulators: the bench scripts' figures (README) use these;
#: ``vigil eval stc`` passes its own (:data:`training.stc_eval.STC_BINS`).
PIXEL_BINS = 1 << 16
#: Test frames per encoder and flow pass.
BATCH = 16


@dataclass
class ClipResult:
    """One test clip's per-frame results (everything small enough to keep for all clips)."""

    name: str
    scene: str
    labels: np.ndarray  # (T,) bool
    streaming: np.ndarray  # (T,) calibrated frame scores (float64)
    seqs: np.ndarray  # frame numbers
    layer_nll: list[np.ndarray] = field(default_factory=list)  # per layer (T, H_l, W_l); kept on request


@dataclass
class ScoredClip:
    """What an observer of the scorer sees of one clip and variant (e.g. to draw examples)."""

    clip: TestClip
    variant: str
    frames: list[np.ndarray]  # decoded BGR frames
    labels: np.ndarray  # (T,) bool
    pixel_mask: np.ndarray | None  # (T, H, W), memory-mapped
    maps: np.ndarray  # (T, S, S) calibrated anomaly maps
    scores: np.ndarray  # (T,) calibrated frame scores


@dataclass
class SceneEvaluation:
    """One scene's test clips scored by one variant: per-clip results, skipped clips and the
    pixel accumulator; the paper protocol's (:func:`training.stc_eval.paper_protocol`) when
    it has run."""

    scene: str
    pixels: PixelMetrics
    clips: list[ClipResult] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    paper_pixels: PixelMetrics | None = None
    paper_scores: dict[str, np.ndarray] = field(default_factory=dict)

    def labels(self) -> np.ndarray:
        """All frame labels of the scene, clip after clip."""
        return np.concatenate([c.labels for c in self.clips])

    def scores(self) -> np.ndarray:
        """All calibrated frame scores of the scene, clip after clip."""
        return np.concatenate([c.streaming for c in self.clips])

    def frame_auroc(self) -> float:
        """Frame-level AUROC of the calibrated scores."""
        return auroc(self.labels(), self.scores())

    def summary(self) -> dict:
        """Frame counts, alarm rates at the threshold, frame and pixel metrics."""
        labels, scores = self.labels(), self.scores()
        return {
            "scene": self.scene,
            "clips": len(self.clips),
            "frames": int(sum(len(c.labels) for c in self.clips)),
            "anomalous_frames": int(sum(int(c.labels.sum()) for c in self.clips)),
            **alarm_rates(labels, scores),
            "frame_auroc": self.frame_auroc(),
            **self.pixels.summary(),
        }


def pooled(evals: Sequence[SceneEvaluation]) -> dict:
    """Micro-averaged metrics over several scenes (all frames / pixels together).

    Args:
        evals: the scenes' evaluations (of one variant).

    Returns:
        Frame count, alarm rates, frame and pixel metrics of all scenes together.
    """
    labels = np.concatenate([e.labels() for e in evals])
    scores = np.concatenate([e.scores() for e in evals])
    return {
        "scene": "pooled",
        "frames": int(len(labels)),
        **alarm_rates(labels, scores),
        "frame_auroc": auroc(labels, scores),
        **PixelMetrics.pooled([e.pixels for e in evals]).summary(),
    }


def _read_clip(clip: TestClip) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
    """A clip's frames and masks, the masks checked first (before decoding)."""
    n = frame_count(clip)
    labels, pixel_mask = load_masks(clip, n)
    frames = [f.image for f in iter_frame_dir(clip.frames)]
    if len(frames) != n:
        raise EvaluationError(f"{n - len(frames)} unreadable frames")
    return frames, labels, pixel_mask


def clip_motion(model: SceneModel, frames: Sequence[np.ndarray]) -> list[np.ndarray | None]:
    """Motion features of a clip's frames, each from the one before it, as a stream gets them.

    Args:
        model: a scene model with a motion channel.
        frames: the clip's BGR frames in order (any size; resized to the model input first,
            as the detector worker does).

    Returns:
        Per frame its motion features, None for the first.
    """
    assert model.motion is not None
    return motion_sequence([resize_for_model(f, model.input_size) for f in frames], None, 1,
                           model.motion.settings)


def score_scene(
    encoder: Encoder,
    variants: Mapping[str, SceneModel],
    root: str | Path,
    scene: str,
    *,
    bins: int = PIXEL_BINS,
    aupro: bool = False,
    keep_nll: bool = False,
    skip_bad_clips: bool = False,
    observe: Callable[[ScoredClip], None] | None = None,
    progress: bool = True,
) -> dict[str, SceneEvaluation]:
    """Score every test frame of a scene and accumulate frame and pixel metrics per variant.

    Args:
        encoder: the shared feature encoder.
        variants: named scene models that share one trained head (the first one's head
            computes the NLL maps; each variant's statistics and settings score them).
        root: the STC-layout dataset root.
        scene: the scene id.
        bins: score bins of the pixel accumulators.
        aupro: accumulate AUPRO besides pixel AUROC.
        keep_nll: keep each clip's per-layer NLL grids (for the paper protocol).
        skip_bad_clips: list a clip whose frames or masks are unreadable or inconsistent
            in ``skipped`` and go on, instead of raising.
        observe: called with every scored clip and variant.
        progress: show a progress bar.

    Returns:
        The evaluation of each variant, by name.
    """
    first = next(iter(variants.values()))
    results = {name: SceneEvaluation(scene, PixelMetrics(*CALIBRATED_RANGE, bins, aupro))
               for name in variants}
    clips = stc_test_clips(root, scene)
    for clip in tqdm(clips, desc=f"scene {scene}: streaming", unit="clip", disable=not progress):
        try:
            frames, labels, pixel_mask = _read_clip(clip)
        except (SourceError, EvaluationError) as exc:
            if not skip_bad_clips:
                raise
            for result in results.values():
                result.skipped.append({"clip": clip.name, "reason": str(exc)})
            log.warning("skipping test clip %s: %s", clip.name, exc)
            continue
        nll = measure_nll(first, encoder, frames, BATCH)
        layer_nll = [m.float().cpu().numpy() for m in nll] if keep_nll else []
        # A clip is one camera's run of consecutive frames: its first frame has no motion evidence.
        has_motion, motion_nll = (first.motion_nll(clip_motion(first, frames)) if first.motion is not None
                                  else (None, None))
        for name, model in variants.items():
            scored = model.score_nll(nll, has_motion, motion_nll)
            maps = scored.maps.float().cpu().numpy()
            result = results[name]
            if pixel_mask is not None:
                for i in range(len(maps)):
                    result.pixels.update(maps[i], np.asarray(pixel_mask[i]))
            # A clip is one run: its published scores are the causal mean of the model's window.
            scores = causal_mean(scored.scores, model.settings.window)
            seqs = np.arange(len(frames))
            result.clips.append(ClipResult(clip.name, scene, labels, scores, seqs, layer_nll))
            if observe is not None:
                observe(ScoredClip(clip, name, frames, labels, pixel_mask, maps, scores))
    return results

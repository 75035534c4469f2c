"""STC evaluation: score every test frame of every scene, in two protocols, labelled everywhere:

* **streaming** -- the calibrated per-frame maps and scores the system alerts on, computed
  from each frame and its scene's checkpoint alone (the one scorer,
  :func:`training.evaluate.score_scene`);
* **paper** -- the published CFLOW-AD normalisation, for comparison with the tables: per
  layer, the log-likelihood per dimension minus its maximum over the scene's test set,
  exponentiated, upsampled and summed; the map is the test set's maximum of that sum minus
  the sum; the frame score is the map's maximum. It needs the whole test set before the
  first score, so no stream can use it.

Memory stays bounded at STC scale (42,883 test frames of 480x856): only each frame's small
per-layer log-likelihood grids are kept; pixel AUROC and AUPRO are accumulated in score
histograms (see :mod:`training.metrics`), their quantisation error bounded and reported.
The report (tables, figures) is :mod:`training.report`'s.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from detector.encoders import Encoder
from detector.model import SceneModel
from training.evaluate import ClipResult, SceneEvaluation, score_scene
from training.metrics import PixelMetrics
from training.report import ExampleFrames
from training.testset import EvaluationError, stc_test_clips

#: Score bins of ``vigil eval stc``'s pixel accumulators (both protocols). Its README
#: figures (pixel AUROC, AUPRO, the quantisation bound) were measured with these; the bench
#: scripts' finer :data:`training.evaluate.PIXEL_BINS` would move them in the last digits.
STC_BINS = 1 << 14


def paper_protocol(run: SceneEvaluation, root: Path, feature_dims: Sequence[int], size: int) -> None:
    """The published test-set normalisation, from the kept per-layer NLL grids.

    Args:
        run: a scene's streaming evaluation, scored with ``keep_nll``; its ``paper_pixels``
            and ``paper_scores`` are filled in.
        root: the STC-layout dataset root.
        feature_dims: the model's feature channels per layer.
        size: the model's input size.
    """
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
    run.paper_pixels = PixelMetrics(0.0, float(len(feature_dims)), STC_BINS, aupro=True)
    test_clips = {c.name: c for c in stc_test_clips(root, run.scene)}
    for clip in tqdm(run.clips, desc=f"scene {run.scene}: paper protocol", unit="clip"):
        maps = (global_max - score_maps(clip)).float().numpy()
        run.paper_scores[clip.name] = maps.reshape(len(maps), -1).max(1).astype(np.float64)
        test_clip = test_clips[clip.name]
        if test_clip.pixel_mask is not None:
            pixel_mask = np.load(test_clip.pixel_mask, mmap_mode="r")
            for i in range(len(maps)):
                run.paper_pixels.update(maps[i], np.asarray(pixel_mask[i]))


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def score_stc(encoder: Encoder, models: dict[str, SceneModel], root: Path,
              out: Path | None = None) -> list[SceneEvaluation]:
    """Score every scene's test set offline (streaming, then paper protocol).

    Args:
        encoder: the shared feature encoder.
        models: each scene's model, by scene id.
        root: the STC-layout dataset root.
        out: where the example figures go (none without).

    Returns:
        Each scene's evaluation; clips that cannot be read are listed in ``skipped``
        (:class:`~training.testset.EvaluationError` if no clip of any scene can).
    """
    runs = []
    for scene, model in models.items():
        examples = ExampleFrames() if out is not None else None
        run = score_scene(encoder, {scene: model}, root, scene, bins=STC_BINS, aupro=True, keep_nll=True,
                          skip_bad_clips=True, observe=examples)[scene]
        if examples is not None and out is not None:
            examples.write(out, scene)
        paper_protocol(run, root, model.feature_dims, model.input_size)
        runs.append(run)
    if not any(r.clips for r in runs):
        raise EvaluationError(f"no test clip of scenes {list(models)} could be evaluated in {root}")
    return runs

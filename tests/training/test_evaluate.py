"""The one STC scorer: variants share one decoding and flow pass and score as they would
alone; observers, kept NLL grids, bad clips raised or skipped; pooling is one accumulator."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import training.evaluate as evaluate
from detector.encoders import Encoder
from detector.model import SceneModel, ScoreSettings
from tests.stc_fixture import TEST_FRAMES, make_tiny_stc
from training.evaluate import CALIBRATED_RANGE, PIXEL_BINS, ScoredClip, pooled, score_scene
from training.metrics import PixelMetrics, auroc
from training.testset import EvaluationError
from training.train import TrainResult, fit_normal_statistics


@pytest.fixture(scope="module")
def tiny_stc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_stc(tmp_path_factory.mktemp("stc"))


@pytest.fixture(scope="module")
def variants(trained: TrainResult) -> dict[str, SceneModel]:
    """The trained model and a variant of its head: other normalisation and reduction."""
    score = ScoreSettings(reduction="topk", topk=0.01, blur_sigma=0.0)
    stats, calibration = fit_normal_statistics(trained.holdout_nll, trained.model.input_size, score,
                                               False, 0.001)
    other = replace(trained.model, stats=stats, calibration=calibration, settings=score)
    return {"trained": trained.model, "layer-norm, top-1%": other}


def _same(a: evaluate.SceneEvaluation, b: evaluate.SceneEvaluation) -> None:
    assert [c.name for c in a.clips] == [c.name for c in b.clips]
    for x, y in zip(a.clips, b.clips, strict=True):
        assert np.array_equal(x.labels, y.labels) and np.array_equal(x.streaming, y.streaming)
    assert np.array_equal(a.pixels.roc.pos, b.pixels.roc.pos)
    assert np.array_equal(a.pixels.roc.neg, b.pixels.roc.neg)
    assert a.summary() == b.summary()


def test_variants_share_one_pass_and_score_as_alone(
    encoder: Encoder, variants: dict[str, SceneModel], tiny_stc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes = []
    measure = evaluate.measure_nll
    monkeypatch.setattr(evaluate, "measure_nll", lambda *a: passes.append(1) or measure(*a))
    together = score_scene(encoder, variants, tiny_stc, "01", progress=False)
    assert len(passes) == 2  # one encoder and flow pass per clip, for both variants
    assert list(together) == list(variants)
    for name, model in variants.items():
        _same(together[name], score_scene(encoder, {name: model}, tiny_stc, "01", progress=False)[name])
    a, b = together.values()
    assert not np.array_equal(a.scores(), b.scores())  # the variants do differ
    summary = a.summary()
    assert (summary["scene"], summary["clips"], summary["frames"]) == ("01", 2, 2 * TEST_FRAMES)
    assert summary["anomalous_frames"] == int(a.labels().sum()) > 0
    assert set(summary) == {"scene", "clips", "frames", "anomalous_frames", "normal_frames_above_threshold",
                            "anomalous_frames_above_threshold", "frame_auroc", "pixel_auroc",
                            "pixel_auroc_error_bound"}
    assert a.pixels.roc.bins == PIXEL_BINS and a.pixels.pro is None


def test_observer_aupro_and_kept_nll(
    encoder: Encoder, variants: dict[str, SceneModel], tiny_stc: Path
) -> None:
    seen: list[ScoredClip] = []
    result = score_scene(encoder, variants, tiny_stc, "02", bins=1 << 10, aupro=True, keep_nll=True,
                         observe=seen.append, progress=False)
    assert [(s.clip.name, s.variant) for s in seen] == [
        (clip, name) for clip in ("02_0001", "02_0002") for name in variants]
    for s in seen:
        assert len(s.frames) == TEST_FRAMES and s.maps.shape == (TEST_FRAMES, 128, 128)
        assert s.pixel_mask is not None and s.pixel_mask.shape[0] == TEST_FRAMES
        mine = next(c for c in result[s.variant].clips if c.name == s.clip.name)
        assert np.array_equal(mine.streaming, s.scores)
    ev = result["trained"]
    assert ev.pixels.roc.bins == 1 << 10 and "aupro_0.3" in ev.summary()
    assert [m.shape for m in ev.clips[0].layer_nll] == [(TEST_FRAMES, 16, 16), (TEST_FRAMES, 8, 8),
                                                        (TEST_FRAMES, 4, 4)]
    assert score_scene(encoder, variants, tiny_stc, "02", progress=False)["trained"].clips[0].layer_nll == []


def test_pooled_metrics_are_one_accumulator_over_all_frames(
    encoder: Encoder, variants: dict[str, SceneModel], tiny_stc: Path
) -> None:
    model = {"trained": variants["trained"]}
    single = PixelMetrics(*CALIBRATED_RANGE, PIXEL_BINS)

    def feed(scored: ScoredClip) -> None:
        assert scored.pixel_mask is not None
        for i in range(len(scored.maps)):
            single.update(scored.maps[i], np.asarray(scored.pixel_mask[i]))

    scenes = [score_scene(encoder, model, tiny_stc, s, observe=feed, progress=False)["trained"]
              for s in ("01", "02")]
    both = pooled(scenes)
    labels = np.concatenate([e.labels() for e in scenes])
    scores = np.concatenate([e.scores() for e in scenes])
    assert both["scene"] == "pooled" and both["frames"] == 4 * TEST_FRAMES
    assert both["frame_auroc"] == auroc(labels, scores)
    assert both["pixel_auroc"] == single.roc.auroc()
    assert both["pixel_auroc_error_bound"] == single.roc.tie_bound()


def test_a_bad_clip_raises_or_is_skipped(encoder: Encoder, variants: dict[str, SceneModel], tiny_stc: Path,
                                         tmp_path: Path) -> None:
    root = tmp_path / "stc"
    shutil.copytree(tiny_stc, root)
    np.save(root / "testing" / "test_frame_mask" / "01_0002.npy", np.zeros(TEST_FRAMES - 3, np.uint8))
    with pytest.raises(EvaluationError, match="test clip 01_0002: frame mask has shape"):
        score_scene(encoder, variants, root, "01", progress=False)
    result = score_scene(encoder, variants, root, "01", skip_bad_clips=True, progress=False)
    for ev in result.values():
        assert [c.name for c in ev.clips] == ["01_0001"]
        assert [s["clip"] for s in ev.skipped] == ["01_0002"]
        assert "frame mask has shape" in ev.skipped[0]["reason"]
    with pytest.raises(EvaluationError, match="no test clips for scene '07'"):
        score_scene(encoder, variants, root, "07", skip_bad_clips=True, progress=False)

"""`vigil eval stc`: train or load one model per scene, score the STC test set (offline, and
optionally through the streaming pipeline, checked against each other) and write the report."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import numpy as np

from detector.checkpoint import load_scene, save_scene
from detector.encoders import Encoder
from detector.model import SceneModel
from scenes.registry import SceneRegistry
from streamer.video import SourceError
from training.data import read_footage, stc_training_videos
from training.evaluate import SceneEvaluation
from training.report import write_report
from training.stc_eval import peak_rss_mb, score_stc
from training.testset import discover_scenes, stc_test_clips
from training.train import settings_summary, train_footage
from vigil.config import VigilConfig
from vigil.runner import Pipeline

log = logging.getLogger(__name__)

#: |pipeline - offline| allowed per frame score: both decode the same JPEG bytes; only the
#: batch composition (and so float summation order) differs.
PIPELINE_TOLERANCE = 1e-3


def scene_models(cfg: VigilConfig, encoder: Encoder, root: Path, scenes: list[str], model_kind: str | None,
                 train: bool, checkpoints: Path) -> dict[str, SceneModel]:
    registry = SceneRegistry(checkpoints)
    models = {}
    for scene in scenes:
        stc_test_clips(root, scene)  # a missing scene fails here, before any training
        if train:
            settings = cfg.training.with_changes(model=model_kind or cfg.training.model)
            footage = read_footage(stc_training_videos(root, scene), settings.input_size,
                                   settings.frame_stride, settings.max_frames_per_video)
            result, summary = train_footage(encoder, footage, settings)
            save_scene(registry, scene, result.model, {"training": {**summary,
                                                                    "settings": settings_summary(settings)}})
        model, _ = load_scene(registry, scene)
        if model_kind and model.kind != model_kind:
            raise SourceError(f"scene {scene}: checkpoint in {checkpoints} is {model.kind}, not {model_kind}")
        models[scene] = model
    return models


def pipeline_scores(cfg: VigilConfig, root: Path, runs: list[SceneEvaluation], checkpoints: Path,
                    out: Path) -> dict[str, dict[int, float]]:
    """Replay every evaluated test clip through the streaming pipeline; scores by clip and seq."""
    clips = {c.name: (run.scene, len(c.labels)) for run in runs for c in run.clips}
    folders = {c.name: c.frames for run in runs for c in stc_test_clips(root, run.scene)}
    cameras = [{"id": name, "url": str(folders[name]), "scene": scene, "kind": "frames", "replay_start_ms": 0}
               for name, (scene, _n) in clips.items()]
    data = cfg.model_dump(mode="python")
    data.update(cameras=cameras, scenes={"root": checkpoints},
                recorder={"enabled": True, "dir": out / "pipeline-scores", "group": "vigil-eval-recorder"})
    run_cfg = VigilConfig.model_validate(data)
    with Pipeline(run_cfg, ("ingest", "detect", "record")) as pipeline:
        recorder = pipeline.recorder
        assert recorder is not None
        while not all(recorder.count(name) >= n for name, (_s, n) in clips.items()):
            if pipeline.ingest_done() and pipeline.drained() and run_cfg.bus.kind == "inprocess":
                break
            time.sleep(0.1)
    scores: dict[str, dict[int, float]] = {}
    for name in clips:
        with (out / "pipeline-scores" / f"{name}.csv").open() as fh:
            scores[name] = {int(r["seq"]): float(r["score"]) for r in csv.DictReader(fh)}
    return scores


def eval_stc(cfg: VigilConfig, root: Path, scenes: list[str] | None, model_kind: str | None, train: bool,
             checkpoints: Path | None, through_pipeline: bool, out: Path, smoothing: list[int]) -> dict:
    t0 = time.perf_counter()
    scenes = scenes or discover_scenes(root)
    encoder = Encoder(cfg.encoder.name, cfg.encoder.weights)
    checkpoints = checkpoints or (out / "checkpoints" if train else cfg.scenes.root)
    models = scene_models(cfg, encoder, root, scenes, model_kind, train, checkpoints)
    runs = score_stc(encoder, models, root, out)
    meta: dict = {"path": "offline", "checkpoints": str(checkpoints), "trained_here": train,
                  "smoothing_windows": smoothing}
    if through_pipeline:
        streamed = pipeline_scores(cfg, root, runs, checkpoints, out)
        diffs = []
        for run in runs:
            for clip in run.clips:
                got = streamed[clip.name]  # by frame number; the offline pass is in file order
                if len(got) != len(clip.labels):
                    raise SourceError(
                        f"pipeline scored {len(got)} of {len(clip.labels)} frames of {clip.name}")
                piped = np.array([got[seq] for seq in sorted(got)])
                diffs.append(np.abs(piped - clip.streaming))
                clip.streaming = piped  # frame metrics now come from the pipeline's scores
        max_diff = float(np.concatenate(diffs).max())
        meta["path"] = f"streaming pipeline ({cfg.bus.kind} bus); pixel maps from the offline pass"
        meta["pipeline_check"] = {"frames": int(sum(len(d) for d in diffs)), "max_abs_diff": max_diff,
                                  "tolerance": PIPELINE_TOLERANCE, "ok": max_diff <= PIPELINE_TOLERANCE}
    first = next(iter(models.values()))
    meta.update(root=str(root), model=first.kind, encoder=first.encoder, input_size=first.input_size,
                wall_seconds=time.perf_counter() - t0, peak_rss_mb=peak_rss_mb())
    report = write_report(runs, out, meta, smoothing)
    if through_pipeline and not meta["pipeline_check"]["ok"]:
        raise SourceError(f"pipeline scores differ from offline scores by {max_diff:.3g} "
                          f"(> {PIPELINE_TOLERANCE}); see {out / 'report.md'}")
    return report

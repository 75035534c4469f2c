"""Training a scene's flow head on normal frames, then measuring and calibrating it.

CFLOW-AD's training recipe (official code): encoder features of an image batch are
computed once (here: cached for the whole run when they fit a memory budget) and cut into
shuffled fiber batches; each fiber batch takes one Adam step on its layer's flow with the
loss -log sigmoid(log p / D); the learning rate warms up linearly, then decays on a cosine
(:mod:`training.schedule`, which both loops share).

SANFlow (``model: sanflow``) keeps that recipe -- same fiber batches, optimizer and
schedule -- and adds its statistics network and synthetic anomalies
(:mod:`training.augment`). Augmented frames differ every epoch, so their encoder features
are recomputed for every image batch instead of cached: one encoder forward pass per
training frame per epoch on top of CFLOW's cost (without augmentation the features are
cached as for CFLOW). The statistics network runs once per image batch: its outputs are
detached for the fiber steps, which accumulate the gradient on them, and one backward
pass through the network then takes one Adam step on it per image batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from detector.anomaly_map import MapStatistics, anomaly_map, frame_score
from detector.calibration import Calibration
from detector.cflow import CFlowHead
from detector.encoders import Encoder
from detector.model import MotionModel, SceneModel, ScoreSettings, build_head, to_input
from detector.sanflow import SANFlowHead, grid_masks
from training.augment import AugmentSettings, SyntheticAnomalies
from training.batches import FeatureBatches, MotionBatches, SANFlowBatches, fiber_batches
from training.crossfit import CrossFit, cross_fit, cross_fit_motion, with_order
from training.data import SceneFootage
from training.motion import fit_motion_calibration, motion_sequence
from training.schedule import Schedule
from training.settings import TrainSettings

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: SceneModel
    history: list[dict]
    holdout_nll: list[torch.Tensor]  # per-layer NLL maps of the held-out frames
    seconds: float
    motion_history: list[dict] = field(default_factory=list)  # the motion head's, if any
    cross_fit: CrossFit | None = None  # what cross-fitting changed (train_footage)
    motion_cross_fit: CrossFit | None = None  # ... in the joint calibration of the motion channel


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and numpy (FrEIA draws its soft permutations from numpy's global RNG)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def _schedule(settings: TrainSettings, batches: FeatureBatches | SANFlowBatches) -> Schedule:
    frames_per_batch = min(batches.batch, len(batches.frames))
    return Schedule.for_batches(settings, batches.grids, frames_per_batch, len(batches))


def train_head(
    head: nn.Module,
    batches: FeatureBatches,
    settings: TrainSettings,
    generator: torch.Generator,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Fit ``head`` by maximum likelihood on the fibers of ``batches``.

    Args:
        head: the CFLOW flow head.
        batches: the training frames' features.
        settings: the training settings.
        generator: the run's random stream.
        progress: show a progress bar.
        on_epoch: called with each epoch's record.

    Returns:
        The epoch history.
    """
    schedule = _schedule(settings, batches)
    optimizer = schedule.optimizer(head.parameters())
    history: list[dict] = []
    head.train()
    bar = tqdm(total=settings.epochs * len(batches), desc="training", unit="batch",
               disable=not progress)
    for epoch in range(settings.epochs):
        loss_sum, nll_sum, count = 0.0, 0.0, 0
        for features in batches.epoch(generator):
            for layer, _idx, fibers, positions in fiber_batches(head, features, settings.fiber_batch,
                                                                generator):
                log_p = head.fiber_log_prob(layer, fibers, positions)
                per_dim = log_p / fibers.shape[1]
                loss = -F.logsigmoid(per_dim).mean()
                schedule.fiber_step(optimizer, loss)
                loss_sum += float(loss.detach()) * fibers.shape[0]
                nll_sum += float(-per_dim.detach().sum())
                count += fibers.shape[0]
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / max(count, 1):.4f}",
                            nll=f"{nll_sum / max(count, 1):.3f}")
        record = {"epoch": epoch + 1, "loss": loss_sum / max(count, 1),
                  "nll_per_dim": nll_sum / max(count, 1), "lr": schedule.last_lr()}
        history.append(record)
        log.info("epoch %d: loss %.4f, NLL/dim %.4f", epoch + 1, record["loss"], record["nll_per_dim"])
        if on_epoch:
            on_epoch(record)
    bar.close()
    head.eval()
    return history


def train_sanflow_head(
    head: SANFlowHead,
    batches: SANFlowBatches,
    settings: TrainSettings,
    generator: torch.Generator,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Fit a SANFlow head: CFLOW's fiber steps on the flows with SANFlow's loss
    (:meth:`SANFlowHead.fiber_loss`), one step per image batch on the statistics network.

    Args:
        head: the SANFlow head.
        batches: the training frames, their features and anomaly masks.
        settings: the training settings.
        generator: the run's random stream.
        progress: show a progress bar.
        on_epoch: called with each epoch's record.

    Returns:
        The epoch history.
    """
    schedule = _schedule(settings, batches)
    flow_opt = schedule.optimizer(head.flows.parameters())
    stats_opt = schedule.optimizer(head.stats.parameters()) if head.stats is not None else None
    history: list[dict] = []
    head.train()
    bar = tqdm(total=settings.epochs * len(batches), desc="training sanflow", unit="batch",
               disable=not progress)
    for epoch in range(settings.epochs):
        sums = {"loss": 0.0, "nll": 0.0, "bce": 0.0, "kl": 0.0}
        count, normal_nll, normal_count, anomalous_count = 0, 0.0, 0, 0
        for images, features, masks in batches.epoch(generator):
            sizes = [tuple(f.shape[2:]) for f in features]
            raw_maps: list[torch.Tensor] = []
            leaves: list[torch.Tensor] = []
            if head.stats is not None:
                raw_maps = head.statistics_maps(images, sizes)
                leaves = [r.detach().requires_grad_() for r in raw_maps]
            cells = grid_masks(masks, sizes)
            batch_steps = 0
            for layer, idx, fibers, positions in fiber_batches(head, features, settings.fiber_batch,
                                                               generator):
                anomalous = cells[layer].reshape(-1)[idx]
                raw = leaves[layer].permute(0, 2, 3, 1).reshape(-1, 2)[idx] if leaves else None
                loss, parts = head.fiber_loss(layer, fibers, positions, raw, anomalous,
                                              settings.sanflow_bce_weight, settings.sanflow_kl_weight,
                                              settings.sanflow_margin)
                schedule.fiber_step(flow_opt, loss)
                batch_steps += 1
                n = idx.shape[0]
                sums["loss"] += float(loss.detach()) * n
                for key in ("nll", "bce", "kl"):
                    sums[key] += float(parts[key].sum())
                normal = ~anomalous
                normal_nll += float(parts["nll_per_dim"][normal].sum())
                normal_count += int(normal.sum())
                anomalous_count += n - int(normal.sum())
                count += n
            if stats_opt is not None:
                # The fiber steps left d(loss)/d(statistics) on the leaves, summed over steps:
                # one step on the network for the batch's mean fiber-step loss.
                grads = [leaf.grad / batch_steps if leaf.grad is not None else torch.zeros_like(leaf)
                         for leaf in leaves]
                schedule.batch_step(stats_opt, raw_maps, grads)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{sums['loss'] / max(count, 1):.4f}",
                            nll=f"{normal_nll / max(normal_count, 1):.3f}")
        record = {
            "epoch": epoch + 1,
            "loss": sums["loss"] / max(count, 1),
            "nll_per_dim": normal_nll / max(normal_count, 1),  # normal fibers, normal base
            "nll_loss": sums["nll"] / max(count, 1),
            "bce": sums["bce"] / max(count, 1),
            "kl_per_dim": sums["kl"] / max(count, 1),
            "anomalous_fraction": anomalous_count / max(count, 1),
            "lr": schedule.last_lr(),
        }
        history.append(record)
        log.info("epoch %d: loss %.4f, NLL/dim %.4f, BCE %.4f, KL/dim %.4f", epoch + 1, record["loss"],
                 record["nll_per_dim"], record["bce"], record["kl_per_dim"])
        if on_epoch:
            on_epoch(record)
    bar.close()
    head.eval()
    return history


def head_config(settings: TrainSettings, feature_dims: Sequence[int]) -> dict:
    """The flow head's constructor arguments for ``settings.model``."""
    config = {"feature_dims": list(feature_dims), "cond_dim": settings.cond_dim,
              "blocks": settings.coupling_blocks, "clamp": settings.clamp}
    if settings.model == "sanflow":
        config.update(stats_width=settings.sanflow_stats_width, prior_mode=settings.sanflow_prior_mode,
                      prior_window=settings.sanflow_prior_window,
                      fixed_variance=settings.sanflow_fixed_variance,
                      stats_input=settings.sanflow_stats_input,
                      score_variance=settings.sanflow_score_variance)
    return config


def augment_settings(settings: TrainSettings) -> AugmentSettings:
    """SANFlow's synthetic anomalies as ``settings`` configure them.

    Args:
        settings: the training settings.

    Returns:
        The ``sanflow_jitter``, ``sanflow_flip_prob`` and ``sanflow_border`` settings.
    """
    return AugmentSettings(jitter=settings.sanflow_jitter, flip_prob=settings.sanflow_flip_prob,
                           border=settings.sanflow_border)


def score_settings(settings: TrainSettings) -> ScoreSettings:
    """How a model trained with ``settings`` reads its frame score off the map: the one
    place a trained model's score settings come from.

    Args:
        settings: the training settings.

    Returns:
        Their ``reduction``, ``topk``, ``blur_sigma`` and ``score_window``.
    """
    return ScoreSettings(reduction=settings.reduction, topk=settings.topk, blur_sigma=settings.blur_sigma,
                         window=settings.score_window)


@torch.no_grad()
def measure_nll(
    model: SceneModel, encoder: Encoder, frames: Sequence[np.ndarray], batch: int
) -> list[torch.Tensor]:
    """NLL-per-dimension maps of frames, concatenated per layer.

    Args:
        model: the scene model (its head and input size).
        encoder: the feature encoder.
        frames: BGR frames.
        batch: frames per encoder and flow pass.

    Returns:
        Per layer, the maps (N, H_l, W_l).
    """
    per_layer: list[list[torch.Tensor]] = []
    for i in range(0, len(frames), batch):
        images = to_input(frames[i : i + batch], model.input_size)
        maps = model.nll_maps(encoder(images), images)
        if not per_layer:
            per_layer = [[] for _ in maps]
        for acc, m in zip(per_layer, maps, strict=True):
            acc.append(m)
    return [torch.cat(acc) for acc in per_layer]


@torch.no_grad()
def fit_normal_statistics(
    holdout_nll: Sequence[torch.Tensor],
    input_size: int,
    settings: ScoreSettings,
    position_norm: bool,
    false_alarm_rate: float,
) -> tuple[MapStatistics, Calibration]:
    """Normal statistics and score calibration from held-out frames' NLL maps."""
    stats = MapStatistics.from_nll(holdout_nll, position_norm)
    raw = []
    for i in range(0, holdout_nll[0].shape[0], 32):
        maps = anomaly_map([m[i : i + 32] for m in holdout_nll], stats, (input_size, input_size),
                           settings.blur_sigma)
        raw.append(frame_score(maps, settings.reduction, settings.topk))
    return stats, Calibration.fit(torch.cat(raw).double().numpy(), false_alarm_rate)


def train_motion(
    model: SceneModel,
    train_frames: Sequence[np.ndarray],
    holdout_frames: Sequence[np.ndarray],
    holdout_nll: Sequence[torch.Tensor],
    settings: TrainSettings,
    train_runs: Sequence[int] | None = None,
    holdout_runs: Sequence[int] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Give a trained, calibrated scene model its motion channel (``model.motion``).

    The motion head trains on the motion features of consecutive training frames; the
    held-out frames with a previous frame give its normal statistics and the calibration
    of the joint (appearance + motion) score.

    Args:
        model: the scene model, its appearance head trained and calibrated.
        train_frames: the training frames, as runs of consecutive frames.
        holdout_frames: the held-out frames, likewise.
        holdout_nll: the held-out frames' appearance NLL maps (:func:`measure_nll`).
        settings: the training settings (``settings.motion`` among them).
        train_runs: lengths of the runs of ``train_frames`` (None: one run).
        holdout_runs: lengths of the runs of ``holdout_frames`` (None: one run).
        progress: show a progress bar.

    Returns:
        The motion head's epoch history.
    """
    m = settings.motion
    step = settings.frame_stride
    train = [f for f in motion_sequence(train_frames, train_runs, step, m.features) if f is not None]
    held = motion_sequence(holdout_frames, holdout_runs, step, m.features)
    has = np.array([f is not None for f in held])
    if not train or has.sum() < 2:
        raise ValueError("the motion channel needs consecutive frames: at least 1 training pair and "
                         f"2 held-out pairs (got {len(train)} and {int(has.sum())})")
    # Seeded on its own (FrEIA draws soft permutations from numpy's global stream), so the
    # channel is the same whether it is trained right after the appearance head or later.
    torch.manual_seed(settings.seed + 1)
    np.random.seed(settings.seed + 1)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    head = CFlowHead([m.features.n_channels], cond_dim=m.cond_dim, blocks=m.coupling_blocks,
                     clamp=settings.clamp)
    head_settings = settings.with_changes(lr=m.lr, epochs=m.epochs or settings.epochs)
    history = train_head(head, MotionBatches(torch.from_numpy(np.stack(train)), settings.image_batch),
                         head_settings, generator, progress)
    motion = MotionModel(settings=m.features, head=head, weight=m.weight, combine=m.combine)
    held_nll = motion.nll_maps(torch.from_numpy(np.stack([f for f in held if f is not None])))
    motion.stats = MapStatistics.from_nll(held_nll, settings.position_norm)
    model.motion = motion
    if m.combine == "max":  # the motion channel's own calibration puts its map in threshold units
        size = (model.input_size, model.input_size)
        own = anomaly_map(held_nll, motion.stats, size, model.settings.blur_sigma)
        raw = model.raw_scores(own)
        motion.channel_calibration = Calibration.fit(raw, settings.false_alarm_rate)
    fit_motion_calibration(model, [n[torch.from_numpy(np.flatnonzero(has))] for n in holdout_nll], held_nll,
                           settings.false_alarm_rate)
    return history


def train_scene(
    encoder: Encoder,
    train_frames: Sequence[np.ndarray],
    holdout_frames: Sequence[np.ndarray],
    settings: TrainSettings,
    progress: bool = True,
    train_runs: Sequence[int] | None = None,
    holdout_runs: Sequence[int] | None = None,
    fold_models: Sequence[SceneModel] = (),
) -> TrainResult:
    """Train a scene model on normal frames and calibrate it on held-out normal frames.

    With ``settings.motion.enabled``, the model also gets a motion channel
    (:func:`train_motion`); ``train_runs`` / ``holdout_runs`` then say where the runs of
    consecutive frames begin and end (None: the frames are one run). ``fold_models``
    (see :func:`train_footage`) cross-fit the appearance threshold before the motion
    channel is calibrated in its units, then (with a motion channel, which the fold models
    then need too) the joint threshold.
    """
    if not train_frames:
        raise ValueError("no training frames")
    if len(holdout_frames) < 2:
        raise ValueError("calibration needs at least 2 held-out normal frames")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    start = time.perf_counter()
    generator = seed_everything(settings.seed)
    encoder.eval()
    head = build_head(settings.model, head_config(settings, encoder.channels))
    if isinstance(head, SANFlowHead):
        # Its own random stream, so augmentation does not shift the flows' draws.
        augment = (SyntheticAnomalies(train_frames, augment_settings(settings),
                                      np.random.default_rng([settings.seed, 1]))
                   if settings.sanflow_augment else None)
        sanflow_batches = SANFlowBatches(encoder, train_frames, settings.input_size, settings.image_batch,
                                         settings.feature_cache_mb, augment)
        history = train_sanflow_head(head, sanflow_batches, settings, generator, progress)
    else:
        batches = FeatureBatches(encoder, train_frames, settings.input_size, settings.image_batch,
                                 settings.feature_cache_mb)
        history = train_head(head, batches, settings, generator, progress)
    model = SceneModel(
        kind=settings.model, head=head, encoder=encoder.name, encoder_digest=encoder.digest,
        input_size=settings.input_size,
        settings=score_settings(settings),
    )
    holdout_nll = measure_nll(model, encoder, holdout_frames, settings.image_batch)
    model.stats, model.calibration = fit_normal_statistics(
        holdout_nll, settings.input_size, model.settings, settings.position_norm,
        settings.false_alarm_rate,
    )
    crossed = cross_fit(model, fold_models, settings.cross_fit_rule) if fold_models else None
    motion_history = (train_motion(model, train_frames, holdout_frames, holdout_nll, settings, train_runs,
                                   holdout_runs, progress) if settings.motion.enabled else [])
    joint = (cross_fit_motion(model, fold_models, settings.cross_fit_rule)
             if fold_models and settings.motion.enabled else None)
    return TrainResult(model, history, holdout_nll, time.perf_counter() - start, motion_history, crossed,
                       joint)


def train_footage(
    encoder: Encoder,
    footage: SceneFootage,
    settings: TrainSettings,
    progress: bool = True,
    on_fold: Callable[[int, int], None] | None = None,
) -> tuple[TrainResult, dict]:
    """Train a scene model on fold 0 of ``footage``; with ``settings.cross_fit``, with a
    cross-fitted threshold.

    Cross-fitting: for each other fold (``footage.folds(settings.holdout_fraction)`` in
    all) a model of the same settings and seed (with a motion channel where the deployed
    model has one) trains without that fold's footage and scores it
    (:mod:`training.crossfit`); the deployed model, trained exactly as without
    cross-fitting, gets its thresholds (appearance, and joint where it has a motion
    channel) from all folds' scores. It costs one extra training per extra fold (of
    ``settings.cross_fit_epochs`` epochs; default half of ``epochs``).

    Args:
        encoder: the frozen encoder.
        footage: the scene's normal videos (:func:`training.data.read_footage`).
        settings: training settings (the fold models' too, but for their epochs).
        progress: progress bars.
        on_fold: called with (fold, folds) before each fold model trains.

    Returns:
        The deployed model's result (``result.cross_fit`` says what moved) and the
        footage summary for the checkpoint's meta.
    """
    folds: list[TrainResult] = []
    if settings.cross_fit:
        k = footage.folds(settings.holdout_fraction)
        fold_epochs = settings.cross_fit_epochs or max(1, settings.epochs // 2)
        fold_settings = settings.with_changes(epochs=fold_epochs)
        for fold in range(1, k):
            if on_fold is not None:
                on_fold(fold, k)
            part = footage.split(settings.holdout_fraction, fold)
            folds.append(train_scene(encoder, part.train, part.holdout, fold_settings, progress,
                                     part.train_runs, part.holdout_runs))
    data = footage.split(settings.holdout_fraction, 0)
    result = train_scene(encoder, data.train, data.holdout, settings, progress, data.train_runs,
                         data.holdout_runs, fold_models=[f.model for f in folds])
    summary = dict(data.summary)
    if result.cross_fit is not None:
        result.cross_fit = with_order(result.cross_fit, [r.model.raw_scores(r.model.raw_maps(r.holdout_nll))
                                                         for r in (result, *folds)])
        summary["cross_fit"] = result.cross_fit.summary()
    if result.motion_cross_fit is not None:
        summary["motion_cross_fit"] = result.motion_cross_fit.summary()
    return result, summary


def settings_summary(settings: TrainSettings) -> dict:
    """The settings as a plain dict (for checkpoint metadata and reports).

    Args:
        settings: the training settings.

    Returns:
        Every field by name.
    """
    return settings.model_dump()

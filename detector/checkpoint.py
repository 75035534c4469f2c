"""A scene model as a checkpoint and back: tensors plus JSON metadata.

:mod:`scenes` stores and finds checkpoints and knows nothing of models; this module is
the one place that knows what a :class:`~detector.model.SceneModel` keeps in one::

    tensors   ``head.*`` flow-head weights, the normal statistics' tensors
    meta      model kind and head config, encoder name, weights digest and pooling
              layers, input size, normalisation, calibration, score settings; for a
              scene with a motion channel ``motion`` (its settings, head config,
              normalisation, calibration and weight) and ``motion.*`` tensors
"""

from __future__ import annotations

from pathlib import Path

import torch

from detector.anomaly_map import MapStatistics
from detector.calibration import Calibration
from detector.cflow import CFlowHead
from detector.encoders import ENCODERS
from detector.model import MotionModel, SceneModel, ScoreSettings, build_head
from detector.motion import MotionSettings
from scenes.checkpoint import CheckpointError, StoredCheckpoint, read_checkpoint, write_checkpoint
from scenes.registry import SceneRegistry

#: The metadata keys a scene model writes; extra metadata may not replace them.
MODEL_KEYS = ("format_version", "package_version", "kind", "head", "encoder", "input_size",
              "normalisation", "calibration", "score", "motion")
_MOTION = "motion."  # prefix of the motion channel's tensors


def _motion_checkpoint(motion: MotionModel) -> tuple[dict[str, torch.Tensor], dict]:
    if motion.stats is None or motion.calibration is None:
        raise CheckpointError("refusing to save a motion channel without statistics and calibration")
    head = motion.head.state_dict()
    tensors = {f"{_MOTION}head.{k}": v.detach().cpu().contiguous() for k, v in head.items()}
    tensors.update({_MOTION + k: v for k, v in motion.stats.tensors().items()})
    meta = {"settings": motion.settings.model_dump(), "head": motion.head.config(),
            "normalisation": motion.stats.meta(), "calibration": motion.calibration.to_dict(),
            "weight": motion.weight, "combine": motion.combine}
    if motion.channel_calibration is not None:
        meta["channel_calibration"] = motion.channel_calibration.to_dict()
    return tensors, meta


def _motion_model(meta: dict, tensors: dict[str, torch.Tensor]) -> MotionModel:
    own = {k[len(_MOTION):]: v for k, v in tensors.items() if k.startswith(_MOTION)}
    head = CFlowHead(**meta["head"])
    head.load_state_dict({k[5:]: v for k, v in own.items() if k.startswith("head.")}, strict=True)
    return MotionModel(settings=MotionSettings.model_validate(meta["settings"]), head=head.eval(),
                       stats=MapStatistics.from_saved(meta["normalisation"], own),
                       calibration=Calibration.from_dict(meta["calibration"]), weight=float(meta["weight"]),
                       combine=meta.get("combine", "sum"),
                       channel_calibration=(Calibration.from_dict(meta["channel_calibration"])
                                            if meta.get("channel_calibration") else None))


def to_checkpoint(model: SceneModel, extra: dict | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and metadata that store ``model`` (``extra`` joins the metadata)."""
    if model.stats is None or model.calibration is None:
        raise CheckpointError("refusing to save a scene model without statistics and calibration")
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    tensors.update(model.stats.tensors())
    meta = {
        "kind": model.kind,
        "head": model.head.config(),
        "encoder": {"name": model.encoder, "weights_digest": model.encoder_digest,
                    "layers": list(ENCODERS[model.encoder].layers) if model.encoder in ENCODERS else None},
        "input_size": model.input_size,
        "normalisation": model.stats.meta(),
        "calibration": model.calibration.to_dict(),
        "score": model.settings.model_dump(),
    }
    if model.motion is not None:
        motion_tensors, meta["motion"] = _motion_checkpoint(model.motion)
        tensors.update(motion_tensors)
    clash = sorted(set(MODEL_KEYS) & set(extra or {}))
    if clash:
        raise CheckpointError(f"extra checkpoint metadata may not replace {clash}")
    return tensors, {**meta, **(extra or {})}


def from_checkpoint(stored: StoredCheckpoint) -> SceneModel:
    """The scene model a stored checkpoint holds (head in eval mode, on the CPU)."""
    meta, tensors = stored.meta, stored.tensors
    try:
        head = build_head(meta["kind"], meta["head"])
        head_state = {k[5:]: v for k, v in tensors.items() if k.startswith("head.")}
        head.load_state_dict(head_state, strict=True)
        return SceneModel(
            kind=meta["kind"],
            head=head.eval(),
            encoder=meta["encoder"]["name"],
            encoder_digest=meta["encoder"]["weights_digest"],
            input_size=int(meta["input_size"]),
            stats=MapStatistics.from_saved(meta["normalisation"], tensors),
            calibration=Calibration.from_dict(meta["calibration"]),
            settings=ScoreSettings(**meta["score"]),
            motion=_motion_model(meta["motion"], tensors) if meta.get("motion") else None,
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"corrupt or incompatible checkpoint {stored.folder}: {exc}") from exc


def save_checkpoint(model: SceneModel, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``model`` to the checkpoint folder ``path`` (created); returns the folder."""
    return write_checkpoint(path, *to_checkpoint(model, extra))


def load_checkpoint(path: str | Path) -> tuple[SceneModel, dict]:
    """Load a scene model and its metadata from the checkpoint folder ``path``."""
    stored = read_checkpoint(path)
    return from_checkpoint(stored), stored.meta


def save_scene(registry: SceneRegistry, scene: str, model: SceneModel, extra: dict | None = None) -> Path:
    """Store ``model`` as ``scene`` in ``registry``; returns the checkpoint folder."""
    return registry.save(scene, *to_checkpoint(model, extra))


def load_scene(registry: SceneRegistry, scene: str) -> tuple[SceneModel, dict]:
    """Load ``scene``'s model and metadata from ``registry``."""
    stored = registry.load(scene)
    return from_checkpoint(stored), stored.meta


def model_id(scene: str, stored: StoredCheckpoint) -> str:
    """The id score records name a scene's model by: scene, kind and weights digest."""
    return f"{scene}:{stored.meta.get('kind', '?')}:{stored.digest[:12]}"

"""Scene checkpoints: flow weights in safetensors, everything else as readable JSON.

A checkpoint is a folder::

    model.safetensors   flow-head weights and per-position normal statistics
    meta.json           format version, package version, model kind and head config,
                        encoder name and weights digest, input size, normalisation,
                        calibration, score settings, training-data summary

Nothing is pickled. Loading checks the format version and reports clearly what is wrong.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from detector.anomaly_map import MapStatistics
from detector.calibration import Calibration
from detector.encoders import ENCODERS
from detector.model import SceneModel, ScoreSettings, build_head

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or was built for something else."""


def package_version() -> str:
    try:
        return version("vigilflow")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def save_checkpoint(model: SceneModel, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``model`` to the folder ``path`` (created); returns the folder."""
    if model.stats is None or model.calibration is None:
        raise CheckpointError("refusing to save a scene model without statistics and calibration")
    folder = Path(path)
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    tensors.update(model.stats.tensors())
    meta = {
        "format_version": FORMAT_VERSION,
        "package_version": package_version(),
        "kind": model.kind,
        "head": model.head.config(),
        "encoder": {"name": model.encoder, "weights_digest": model.encoder_digest,
                    "layers": list(ENCODERS[model.encoder].layers) if model.encoder in ENCODERS else None},
        "input_size": model.input_size,
        "normalisation": model.stats.meta(),
        "calibration": model.calibration.to_dict(),
        "score": asdict(model.settings),
    }
    clash = sorted(set(meta) & set(extra or {}))
    if clash:
        raise CheckpointError(f"extra checkpoint metadata may not replace {clash}")
    meta.update(extra or {})
    # Write a complete new folder beside the old one, then swap: a crash never leaves
    # new weights next to old metadata.
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format_version": str(FORMAT_VERSION)})
    (staging / META_FILE).write_text(json.dumps(meta, indent=2))
    retired = folder.with_name(f".{folder.name}.old")
    if retired.exists():
        shutil.rmtree(retired)
    if folder.exists():
        folder.replace(retired)
    staging.replace(folder)
    shutil.rmtree(retired, ignore_errors=True)
    return folder


def read_meta(path: str | Path) -> dict:
    folder = Path(path)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"no checkpoint at {folder}: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"corrupt checkpoint {meta_path}: {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"corrupt checkpoint {meta_path}: not a JSON object")
    found = meta.get("format_version")
    if found != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {folder} has format version {found} (written by vigilflow "
            f"{meta.get('package_version', '?')}); this vigilflow {package_version()} reads "
            f"format {FORMAT_VERSION}: retrain the scene with this version"
        )
    return meta


def load_checkpoint(path: str | Path) -> tuple[SceneModel, dict]:
    """Load a scene model and its metadata from the folder ``path``."""
    folder = Path(path)
    meta = read_meta(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"no checkpoint weights at {weights}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint weights {weights}: {exc}") from exc
    try:
        head = build_head(meta["kind"], meta["head"])
        head_state = {k[5:]: v for k, v in tensors.items() if k.startswith("head.")}
        head.load_state_dict(head_state, strict=True)
        stats = MapStatistics.from_saved(meta["normalisation"], tensors)
        model = SceneModel(
            kind=meta["kind"],
            head=head.eval(),
            encoder=meta["encoder"]["name"],
            encoder_digest=meta["encoder"]["weights_digest"],
            input_size=int(meta["input_size"]),
            stats=stats,
            calibration=Calibration.from_dict(meta["calibration"]),
            settings=ScoreSettings(**meta["score"]),
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"corrupt or incompatible checkpoint {folder}: {exc}") from exc
    return model, meta

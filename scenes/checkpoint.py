"""Scene checkpoints on disk: tensors in safetensors, everything else as readable JSON.

A checkpoint is a folder::

    model.safetensors   named tensors (flow-head weights, per-position normal statistics)
    meta.json           format version, package version and whatever the writer adds

This module stores and finds checkpoints and checks their format; it knows nothing of
models. :mod:`detector.checkpoint` turns a scene model into tensors plus metadata and
back. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

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


@dataclass(frozen=True)
class StoredCheckpoint:
    """What a checkpoint folder holds: its tensors, its metadata, and the SHA-256 of its
    weights file (it identifies the model in score records)."""

    folder: Path
    tensors: dict[str, torch.Tensor]
    meta: dict
    digest: str


def write_checkpoint(folder: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` and ``meta`` (stamped with the format and package version) as the
    checkpoint folder ``folder``, replacing any old one whole; returns the folder."""
    folder = Path(folder)
    meta = {"format_version": FORMAT_VERSION, "package_version": package_version(), **meta}
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
    """The metadata of the checkpoint folder ``path``, after checking its format version."""
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


def read_checkpoint(path: str | Path) -> StoredCheckpoint:
    """Read the checkpoint folder ``path``: metadata, tensors and the weights' digest."""
    folder = Path(path)
    meta = read_meta(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"no checkpoint weights at {weights}")
    try:
        data = weights.read_bytes()
        tensors = load_tensors(data)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint weights {weights}: {exc}") from exc
    return StoredCheckpoint(folder, tensors, meta, hashlib.sha256(data).hexdigest())

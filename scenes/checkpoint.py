"""Scene checkpoints on disk: tensors in safetensors, everything else as readable JSON.

A checkpoint is a folder::

    model.safetensors   named tensors (flow-head weights, per-position normal statistics)
    meta.json           format version, package version and whatever the writer adds

This module stores and finds checkpoints and checks their format; it knows nothing of
models. :mod:`detector.checkpoint` turns a scene model into tensors plus metadata and
back. Nothing is pickled, and nothing but safetensors is read: a pickle (``torch.save``
output) in place of the weights is refused by name, never unpickled. Folders are written
0700 and files 0600: the weights are the site's trained model.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
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
FOLDER_MODE = 0o700
FILE_MODE = 0o600


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or was built for something else.

    ``status`` names the kind of problem (``corrupt`` here; the subclasses say
    ``missing``, ``unreadable``, ``refused``, ``incompatible``) and ``detail`` says what is wrong without
    the path, for listings such as ``vigil scenes``.
    """

    status = "corrupt"

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message

    @property
    def summary(self) -> str:
        """``status: detail``, e.g. ``corrupt: meta.json is not valid JSON (...)``."""
        return f"{self.status}: {self.detail}"


class CheckpointMissingError(CheckpointError):
    """A checkpoint file is not there (``detail`` names it: ``weights``, ``meta.json``)."""

    status = "missing"

    @property
    def summary(self) -> str:
        return f"missing {self.detail}"


class CheckpointUnreadableError(CheckpointError):
    """A checkpoint file is there but cannot be read (permissions, I/O)."""

    status = "unreadable"


class CheckpointRefusedError(CheckpointError):
    """A checkpoint file is in a format that is never read (a pickle, an archive)."""

    status = "refused"


class CheckpointVersionError(CheckpointError):
    """A checkpoint was written in another format version."""

    status = "incompatible"


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
    checkpoint folder ``folder`` (mode 0700, files 0600), replacing any old one whole;
    returns the folder."""
    folder = Path(folder)
    meta = {"format_version": FORMAT_VERSION, "package_version": package_version(), **meta}
    # Write a complete new folder beside the old one, then swap: a crash never leaves
    # new weights next to old metadata.
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))  # 0700
    os.chmod(staging, FOLDER_MODE)  # explicit, whatever mkdtemp does on this platform
    weights, meta_path = staging / WEIGHTS_FILE, staging / META_FILE
    save_file(tensors, str(weights), metadata={"format_version": str(FORMAT_VERSION)})
    os.chmod(weights, FILE_MODE)
    fd = os.open(meta_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(meta, indent=2))
    os.chmod(meta_path, FILE_MODE)  # os.open's mode passes through the umask
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
        raise CheckpointMissingError(f"no checkpoint at {folder}: {META_FILE} is missing", META_FILE)
    try:
        meta = json.loads(meta_path.read_text())
    except OSError as exc:
        raise CheckpointUnreadableError(f"unreadable checkpoint {meta_path}: {exc.strerror or exc}",
                                        f"{META_FILE}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"corrupt checkpoint {meta_path}: not valid JSON ({exc})",
                              f"{META_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"corrupt checkpoint {meta_path}: not a JSON object",
                              f"{META_FILE} is not a JSON object")
    found = meta.get("format_version")
    if found != FORMAT_VERSION:
        raise CheckpointVersionError(
            f"checkpoint {folder} has format version {found} (written by vigilflow "
            f"{meta.get('package_version', '?')}); this vigilflow {package_version()} reads "
            f"format {FORMAT_VERSION}: retrain the scene with this version",
            f"format version {found}, this vigilflow reads {FORMAT_VERSION}: retrain the scene",
        )
    return meta


def _foreign_format(data: bytes) -> str | None:
    """What ``data`` is when it is a format that is never read (by its magic bytes; a
    pickle is recognised, never unpickled), or None."""
    if data[:4] == b"PK\x03\x04":  # torch.save's zip archive (the default since torch 1.6)
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            names = []
        return "a pickle file" if not names or any(n.endswith(".pkl") for n in names) else "a zip archive"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # pickle PROTO 2-5
        return "a pickle file"
    return None


def _bad_header(data: bytes) -> str | None:
    """What is wrong with ``data``'s safetensors header (8-byte little-endian length,
    then that many bytes of JSON), or None when it looks right."""
    if not data:
        return "an empty file"
    if len(data) < 8:
        return f"not a safetensors file ({len(data)} bytes, no header)"
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        return f"not a safetensors file (a {size}-byte header in a {len(data)}-byte file)"
    if data[8:9] != b"{":
        return "not a safetensors file (its header is not JSON)"
    return None


def read_tensors(weights: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of the safetensors file ``weights`` and its SHA-256; anything else
    (a pickle, an archive, junk) is refused with a message naming the file."""
    weights = Path(weights)
    if not weights.is_file():
        raise CheckpointMissingError(f"no checkpoint weights at {weights}", "weights")
    try:
        data = weights.read_bytes()
    except OSError as exc:
        raise CheckpointUnreadableError(
            f"unreadable checkpoint weights {weights}: {exc.strerror or exc}",
            f"{WEIGHTS_FILE}: {exc.strerror or exc}",
        ) from exc
    foreign = _foreign_format(data)
    if foreign is not None:
        raise CheckpointRefusedError(
            f"refused checkpoint weights {weights}: {foreign}; only safetensors is accepted",
            f"not safetensors ({foreign})",
        )
    bad = _bad_header(data)
    if bad is not None:
        raise CheckpointError(f"corrupt checkpoint weights {weights}: {bad}", f"{WEIGHTS_FILE} is {bad}")
    try:
        tensors = load_tensors(data)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint weights {weights}: {exc}",
                              f"{WEIGHTS_FILE} is corrupt ({exc})") from exc
    return tensors, hashlib.sha256(data).hexdigest()


def read_checkpoint(path: str | Path) -> StoredCheckpoint:
    """Read the checkpoint folder ``path``: metadata, tensors and the weights' digest."""
    folder = Path(path)
    meta = read_meta(folder)
    tensors, digest = read_tensors(folder / WEIGHTS_FILE)
    return StoredCheckpoint(folder, tensors, meta, digest)

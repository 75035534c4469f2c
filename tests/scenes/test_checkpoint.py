"""scenes.checkpoint: only safetensors plus JSON is read; folders 0700, files 0600."""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_tensors

from scenes.checkpoint import (
    FILE_MODE,
    FOLDER_MODE,
    META_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    CheckpointMissingError,
    CheckpointRefusedError,
    CheckpointVersionError,
    read_checkpoint,
    read_meta,
    write_checkpoint,
)

TENSORS = {"head.w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "stats.mean": torch.zeros(4)}


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0 while the test runs: the modes must be set explicitly, not inherited."""
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "scene", TENSORS, {"kind": "test"})


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_round_trip(folder: Path) -> None:
    stored = read_checkpoint(folder)
    assert stored.meta["kind"] == "test" and stored.meta["format_version"] == 1
    assert set(stored.tensors) == set(TENSORS)
    assert all(torch.equal(stored.tensors[k], v) for k, v in TENSORS.items())
    assert len(stored.digest) == 64


@pytest.mark.usefixtures("open_umask")
def test_folder_is_0700_and_files_0600(tmp_path: Path) -> None:
    for _ in range(2):  # a new folder, then one replacing the old
        folder = write_checkpoint(tmp_path / "scene", TENSORS, {"kind": "test"})
        assert _mode(folder) == FOLDER_MODE == 0o700
        assert sorted(p.name for p in folder.iterdir()) == [META_FILE, WEIGHTS_FILE]
        for name in (META_FILE, WEIGHTS_FILE):
            assert _mode(folder / name) == FILE_MODE == 0o600, name
    assert [p.name for p in tmp_path.iterdir()] == ["scene"]  # no staging or retired folder left


def _torch_zip() -> bytes:
    buf = io.BytesIO()
    torch.save(TENSORS, buf)
    return buf.getvalue()


def _torch_legacy() -> bytes:
    buf = io.BytesIO()
    torch.save(TENSORS, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


@pytest.mark.parametrize(
    "make",
    [_torch_zip, _torch_legacy, lambda: pickle.dumps({"w": [1.0]}, protocol=2),
     lambda: pickle.dumps({"w": [1.0]}, protocol=5)],
    ids=["torch.save", "torch.save-legacy", "pickle-2", "pickle-5"],
)
def test_a_pickle_is_refused_by_name(folder: Path, make) -> None:
    weights = folder / WEIGHTS_FILE
    weights.write_bytes(make())
    with pytest.raises(CheckpointRefusedError) as info:
        read_checkpoint(folder)
    assert str(info.value) == (f"refused checkpoint weights {weights}: a pickle file; "
                               "only safetensors is accepted")
    assert info.value.summary == "refused: not safetensors (a pickle file)"
    assert "header too large" not in str(info.value)


def test_a_zip_archive_is_refused(folder: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(WEIGHTS_FILE, save_tensors(TENSORS))
    (folder / WEIGHTS_FILE).write_bytes(buf.getvalue())
    with pytest.raises(CheckpointRefusedError, match="a zip archive; only safetensors is accepted"):
        read_checkpoint(folder)


@pytest.mark.parametrize(
    ("junk", "what"),
    [
        (b"", "an empty file"),
        (b"\x01\x02", "not a safetensors file (2 bytes, no header)"),
        (b"hello, these are not tensors at all", "-byte header in a 35-byte file)"),
        ((4).to_bytes(8, "little") + b"[1] " + b"\0" * 8, "not a safetensors file (its header is not JSON)"),
        ((9).to_bytes(8, "little") + b'{"a": 1} ', "corrupt checkpoint weights"),
    ],
)
def test_junk_weights_name_the_file(folder: Path, junk: bytes, what: str) -> None:
    weights = folder / WEIGHTS_FILE
    weights.write_bytes(junk)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(folder)
    message = str(info.value)
    assert not isinstance(info.value, CheckpointRefusedError)
    assert message.startswith(f"corrupt checkpoint weights {weights}: ")
    assert what in message
    assert info.value.summary.startswith(f"corrupt: {WEIGHTS_FILE} is ")


def test_missing_weights_and_meta(folder: Path) -> None:
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointMissingError, match="no checkpoint weights") as info:
        read_checkpoint(folder)
    assert info.value.summary == "missing weights"
    (folder / META_FILE).unlink()
    with pytest.raises(CheckpointMissingError, match="meta.json is missing") as info:
        read_meta(folder)
    assert info.value.summary == "missing meta.json"


def test_meta_that_is_not_json_or_not_an_object(folder: Path) -> None:
    (folder / META_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint .*meta.json: not valid JSON") as info:
        read_meta(folder)
    assert info.value.summary.startswith("corrupt: meta.json is not valid JSON (")
    (folder / META_FILE).write_text("[1, 2]")
    with pytest.raises(CheckpointError) as info:
        read_meta(folder)
    assert info.value.summary == "corrupt: meta.json is not a JSON object"


def test_other_format_version(folder: Path) -> None:
    meta = json.loads((folder / META_FILE).read_text())
    (folder / META_FILE).write_text(json.dumps({**meta, "format_version": 7}))
    with pytest.raises(CheckpointVersionError, match="format version 7") as info:
        read_meta(folder)
    assert info.value.summary == "incompatible: format version 7, this vigilflow reads 1: retrain the scene"

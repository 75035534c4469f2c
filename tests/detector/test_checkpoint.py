"""Scene models as checkpoints (detector.checkpoint): bit-identical round trips, readable metadata, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from detector.checkpoint import load_checkpoint, load_scene, save_checkpoint
from detector.encoders import Encoder
from detector.model import SceneModel
from detector.scorer import EncoderMismatchError, FrameScorer
from scenes.checkpoint import (
    FORMAT_VERSION,
    META_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    package_version,
    read_meta,
)
from scenes.registry import SceneRegistry
from tests.conftest import TINY_SCENE, TINY_SIZE


@pytest.fixture
def checkpoint_copy(registry: SceneRegistry, tmp_path: Path) -> Path:
    """A private copy of the tiny scene's checkpoint folder, free to corrupt."""
    return Path(shutil.copytree(registry.path(TINY_SCENE), tmp_path / TINY_SCENE))


def test_round_trip_is_bit_identical(
    encoder: Encoder, scene_model: SceneModel, registry: SceneRegistry, clip_frames: list[np.ndarray]
) -> None:
    loaded, _meta = load_scene(registry, TINY_SCENE)
    for key, value in scene_model.head.state_dict().items():
        assert torch.equal(loaded.head.state_dict()[key], value), key
    assert loaded.calibration == scene_model.calibration
    assert loaded.settings == scene_model.settings
    batch = clip_frames[::5]
    before = FrameScorer(encoder, scene_model, TINY_SCENE).score_batch(batch)
    after = FrameScorer(encoder, loaded, TINY_SCENE).score_batch(batch)
    for a, b in zip(before, after, strict=True):
        assert a.score == b.score and a.raw == b.raw
        assert np.array_equal(a.anomaly_map, b.anomaly_map)


def test_meta_is_readable_json(
    encoder: Encoder, scene_model: SceneModel, registry: SceneRegistry, training_summary: dict
) -> None:
    folder = registry.path(TINY_SCENE)
    assert sorted(p.name for p in folder.iterdir()) == [META_FILE, WEIGHTS_FILE]
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["package_version"] == package_version() and meta["package_version"]
    assert meta["kind"] == "cflow"
    assert meta["scene"] == TINY_SCENE
    assert meta["head"] == scene_model.head.config()
    assert meta["encoder"] == {"name": "tf_efficientnet_lite0", "weights_digest": encoder.digest,
                              "layers": [2, 3, 4]}
    assert meta["input_size"] == TINY_SIZE
    assert scene_model.calibration is not None and scene_model.stats is not None
    assert meta["calibration"] == scene_model.calibration.to_dict()
    assert meta["calibration"]["method"] in ("empirical", "gumbel")
    assert meta["normalisation"] == scene_model.stats.meta()
    assert meta["normalisation"]["position_norm"] is True
    assert meta["score"] == {"reduction": "max", "topk": 0.001, "blur_sigma": 2.0, "window": 1,
                             "window_max_step": 3, "window_max_gap_ms": 2000}
    assert meta["training"] == json.loads(json.dumps(training_summary))
    assert read_meta(folder) == meta


def test_save_without_calibration_is_refused(scene_model: SceneModel, tmp_path: Path) -> None:
    import dataclasses

    untrained = dataclasses.replace(scene_model, calibration=None)
    with pytest.raises(CheckpointError, match="without statistics and calibration"):
        save_checkpoint(untrained, tmp_path / "x")
    assert not (tmp_path / "x" / META_FILE).exists()


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="meta.json is missing"):
        load_checkpoint(tmp_path)


def test_truncated_weights(checkpoint_copy: Path) -> None:
    weights = checkpoint_copy / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt checkpoint weights"):
        load_checkpoint(checkpoint_copy)


def test_missing_weights(checkpoint_copy: Path) -> None:
    (checkpoint_copy / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="no checkpoint weights"):
        load_checkpoint(checkpoint_copy)


@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe\x00binary", b"[1, 2, 3]"])
def test_garbage_meta(checkpoint_copy: Path, garbage: bytes) -> None:
    (checkpoint_copy / META_FILE).write_bytes(garbage)
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        load_checkpoint(checkpoint_copy)


def _edit_meta(folder: Path, edit) -> None:
    meta = json.loads((folder / META_FILE).read_text())
    edit(meta)
    (folder / META_FILE).write_text(json.dumps(meta))


def test_other_format_version(checkpoint_copy: Path) -> None:
    _edit_meta(checkpoint_copy, lambda m: m.update(format_version=FORMAT_VERSION + 98))
    with pytest.raises(CheckpointError, match=rf"format version {FORMAT_VERSION + 98}"):
        load_checkpoint(checkpoint_copy)


def test_meta_that_does_not_fit_the_weights(checkpoint_copy: Path) -> None:
    _edit_meta(checkpoint_copy, lambda m: m["head"].update(feature_dims=[8, 8, 8]))
    with pytest.raises(CheckpointError, match="corrupt or incompatible"):
        load_checkpoint(checkpoint_copy)


def test_meta_with_a_missing_field(checkpoint_copy: Path) -> None:
    _edit_meta(checkpoint_copy, lambda m: m.pop("head"))
    with pytest.raises(CheckpointError, match="corrupt or incompatible"):
        load_checkpoint(checkpoint_copy)


def test_checkpoint_for_another_encoder_digest(encoder: Encoder, checkpoint_copy: Path) -> None:
    _edit_meta(checkpoint_copy, lambda m: m["encoder"].update(weights_digest="feedfacefeedface"))
    model, _meta = load_checkpoint(checkpoint_copy)
    with pytest.raises(EncoderMismatchError, match="feedfacefeedface") as info:
        FrameScorer(encoder, model, TINY_SCENE)
    assert encoder.digest in str(info.value)

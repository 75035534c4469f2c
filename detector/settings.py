"""Settings that config files name, importable without torch.

The ingest and alert roles load the whole config file (strict validation of every
section) but never run a model; keeping these models free of torch keeps their start-up
to a fraction of a second.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from common.config import Strict

#: How an anomaly map becomes a frame score: its maximum, or the mean of its top fraction.
Reduction = Literal["max", "topk"]


class LearningSettings(Strict):
    """The ``detector.learning:`` section: each camera's learning period (:mod:`detector.learning`)."""

    seconds: float = Field(
        default=0.0, ge=0.0,
        description="length of each camera's learning period in footage seconds (capture time); its "
                    "scores are published as provisional while its own threshold is learned; 0: off",
    )
    min_frames: int = Field(
        default=300, ge=2,
        description="the learning period also lasts until the camera has sent this many frames",
    )
    max_frames: int = Field(
        default=36_000, ge=2,
        description="the learning period ends at this many frames, however long it was set to last "
                    "(bounds the memory it keeps per camera)",
    )
    state_dir: Path | None = Field(
        default=None,
        description="folder that keeps each camera's learned threshold across restarts (one JSON file "
                    "per camera and checkpoint); None: kept in memory only, so a restart learns again",
    )


class DetectorSettings(Strict):
    """The ``detector:`` section of the config."""

    device: str = "cpu"
    half: bool = Field(default=True, description="half-precision encoder on CUDA")
    batch_size: int = Field(default=8, ge=1, description="max frames per micro-batch")
    max_wait_ms: int = Field(default=50, ge=0, description="max wait for a micro-batch to fill")
    group: str = "vigil-detector"
    map_size: int = Field(default=64, ge=8, description="side of the published anomaly map")
    map_encoding: Literal["uint8", "float16"] = "uint8"
    cache_models: int = Field(default=16, ge=1, description="scene heads kept loaded")
    cache_mb: int = Field(default=2048, ge=1, description="memory bound of the scene-head cache")
    prefetch_batches: int | None = Field(
        default=None, ge=0,
        description="micro-batches fetched and decoded on a second thread while the model scores; "
                    "0: one thread does everything; None: 1 on CUDA, 0 on CPU",
    )
    threads: int | None = Field(
        default=None, ge=1,
        description="the model's torch threads; None: the CPUs this process may run on (its affinity). "
                    "Give each of two model processes on one machine its share (e.g. 1 of 2 cores each)",
    )
    decode_threads: int | None = Field(
        default=None, ge=1,
        description="threads that decode and resize a micro-batch's JPEGs; None: up to 4, one per CPU",
    )
    flow_threads: int | None = Field(
        default=None, ge=1,
        description="threads that compute a micro-batch's optical flow (scenes with a motion channel); "
                    "None: on CUDA up to 4, one per CPU; on a CPU 1",
    )
    flow_overlap: bool | None = Field(
        default=None,
        description="compute the optical flow while the encoder runs (True) or before it, on every "
                    "flow thread (False); None: True on CUDA, False on CPU",
    )
    live_max_age_ms: int | None = Field(
        default=2000, ge=1,
        description="skip live frames older than this (the detector is behind); None: score all",
    )
    max_frame_pixels: int = Field(
        default=40_000_000, ge=1,
        description="frames whose JPEG declares more pixels are refused before decoding (a 1 KB JPEG "
                    "can declare 30000x30000 and make the decoder allocate gigabytes)",
    )
    learning: LearningSettings = Field(default_factory=LearningSettings)
    allow_missing_scenes: bool = Field(
        default=False,
        description="start even if a configured camera's scene has no usable checkpoint (its frames are "
                    "then skipped and counted as unknown_scene / bad_checkpoint); False: refuse to start",
    )

    @property
    def on_cuda(self) -> bool:
        """Whether the model runs on a CUDA device (the helper threads' defaults follow it)."""
        return self.device.startswith("cuda")

    @property
    def prefetch(self) -> int:
        """``prefetch_batches`` resolved. On a CPU the model keeps every core busy; a fetch
        thread then only competes with the model's own threads (measured on 2 cores: 10 %
        slower with a backlog), while on a GPU it keeps the CPU work off the GPU's path."""
        if self.prefetch_batches is not None:
            return self.prefetch_batches
        return 1 if self.on_cuda else 0

    @property
    def decoders(self) -> int:
        """``decode_threads`` resolved. Decoding runs while the model's threads wait for the
        batch (without a prefetch), so it may use every core; OpenCV releases the GIL."""
        return _up_to_four_per_cpu(self.decode_threads)

    @property
    def overlap_flow(self) -> bool:
        """``flow_overlap`` resolved. On a CPU the encoder's threads keep every core busy, and a
        flow thread beside them stalls their parallel regions, so the flow runs first (see
        README "Motion" for the measurement); on a GPU the CPU is free while the encoder runs."""
        if self.flow_overlap is not None:
            return self.flow_overlap
        return self.on_cuda

    @property
    def flow_workers(self) -> int:
        """``flow_threads`` resolved. OpenCV's optical flow releases the GIL, so a batch's
        frames can run in parallel; on a CPU one thread measured fastest (OpenCV already
        spreads each flow over the cores)."""
        if self.flow_threads is None and not self.on_cuda:
            return 1
        return _up_to_four_per_cpu(self.flow_threads)


def _up_to_four_per_cpu(threads: int | None) -> int:
    """A helper-thread count as set, or by default up to 4, one per CPU."""
    return threads if threads is not None else max(1, min(4, os.cpu_count() or 1))

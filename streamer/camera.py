"""The camera config: one camera (or recorded video) to ingest, validated strictly.

Ids and URLs are checked at config load; a camera's scene id follows the one rule of
:mod:`common.ids` and a bad one is refused with the camera named. ``repr``/``str`` and
validation errors never show the URL's credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from common.config import Strict
from common.ids import CAMERA_ID_RULE, SCENE_ID_RULE, is_camera_id, is_scene_id
from common.messages import Source as SourceType
from common.redact import redact_url

__all__ = ["CameraConfig", "SourceKind"]

SourceKind = Literal["auto", "rtsp", "file", "frames"]

_LIVE_SCHEMES = ("rtsp://", "rtsps://")


class CameraConfig(Strict):
    """One camera (or recorded video) to ingest.

    ``url`` is an ``rtsp://`` / ``rtsps://`` URL, a video file or a folder of numbered
    frames; ``kind="auto"`` tells them apart (RTSP by scheme, a folder by being an existing
    directory, anything else a file). ``repr``/``str`` show the URL with credentials
    redacted; validation errors never echo the input.
    """

    # merged with Strict's (extra="forbid"): pydantic combines a subclass's config with its base's
    model_config = ConfigDict(hide_input_in_errors=True)

    id: str = Field(description="camera id: 1-128 of [A-Za-z0-9._-], starting alphanumeric")
    url: str = Field(description="rtsp(s):// URL, video file path or frame folder")
    scene: str = Field(description="scene id (selects the model)")
    fps: float | None = Field(default=None, gt=0, description="analysis fps; None = every frame")
    resize: tuple[int, int] | None = Field(default=None, description="(width, height) of published frames")
    kind: SourceKind = "auto"
    transport: Literal["tcp", "udp"] = Field(default="tcp", description="RTSP transport")
    open_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=5.0, gt=0)
    watchdog_s: float = Field(default=10.0, gt=0, description="reconnect after this long without a frame")
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    warmup_frames: int = Field(default=5, ge=0, description="decoded frames flagged warm-up after a connect")
    realtime: bool = Field(
        default=False, description="pace files at their native rate (else as fast as possible)"
    )
    loop: bool = Field(default=False, description="replay a file or folder forever")
    replay_start_ms: int | None = Field(
        default=None, ge=0, description="epoch ms of a replay's first frame; None = wall clock at start"
    )

    @field_validator("id")
    @classmethod
    def _check_id(cls, v: str) -> str:
        # Camera ids end up as Kafka keys, metric labels, file names and Redis key parts.
        if not is_camera_id(v):  # the one camera-id rule, the contracts' too
            raise ValueError(f"camera id must be {CAMERA_ID_RULE}, got {v!r}")
        return v

    @field_validator("scene")
    @classmethod
    def _check_scene(cls, v: str, info: ValidationInfo) -> str:
        """The one scene-id rule (:mod:`common.ids`); the error names the camera (``id`` is
        validated first; an invalid id has its own error and is not repeated here)."""
        if not is_scene_id(v):
            camera = info.data.get("id")
            where = f"camera {camera!r}: " if camera is not None else ""
            raise ValueError(f"{where}scene must be {SCENE_ID_RULE}, got {v!r}")
        return v

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("url must not be empty")
        return v

    @field_validator("resize")
    @classmethod
    def _check_resize(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and (v[0] < 1 or v[1] < 1):
            raise ValueError(f"resize must be (width, height) with positive sizes, got {v}")
        return v

    @model_validator(mode="after")
    def _resolve(self) -> CameraConfig:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) must be >= reconnect_initial_s "
                f"({self.reconnect_initial_s})"
            )
        lowered = self.url.lower()
        if self.kind == "auto":
            if lowered.startswith(_LIVE_SCHEMES):
                self.kind = "rtsp"
            elif "://" in self.url:
                raise ValueError(
                    f"camera {self.id}: cannot tell what kind of source {redact_url(self.url)} is; "
                    "set kind to 'rtsp' or 'file'"
                )
            elif self.url.endswith(("/", "\\")) or Path(self.url).is_dir():
                self.kind = "frames"
            else:
                self.kind = "file"
        return self

    @property
    def source(self) -> SourceType:
        """``"live"`` for RTSP, ``"replay"`` for files and frame folders."""
        return "live" if self.kind == "rtsp" else "replay"

    @property
    def display_url(self) -> str:
        """The URL with credentials redacted: what logs and errors show."""
        return redact_url(self.url)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "url" and isinstance(value, str) else value)

"""The ``alerting:`` section of the config (strict: unknown keys are errors).

Lifecycle settings come in three layers: ``alerting.lifecycle`` (the defaults),
``alerting.scenes.<scene>`` (overrides for every camera of a scene) and
``alerting.cameras.<camera>`` (overrides for one camera); :meth:`AlertingConfig.lifecycle_for`
merges them. Times are seconds of *capture time* (the messages' ``ts``), so a replay decides
exactly as the live stream did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from common.config import Strict
from common.redact import redact_url

__all__ = [
    "AlertingConfig",
    "ClipSettings",
    "LifecycleOverride",
    "LifecycleSettings",
    "LocalStoreConfig",
    "RedisStoreConfig",
    "RingSettings",
    "StoreConfig",
]

DAY_S = 86_400


class LifecycleSettings(Strict):
    """When an alert starts, updates and ends (scores are calibrated: 1.0 = the scene's threshold).

    * start: at least ``k`` of the last ``n`` scores are ``>= enter``;
    * update: the peak score rose by ``update_min_rise`` (relative) over the last published
      peak, at most one update per ``update_min_interval_s``;
    * end: ``m`` consecutive scores ``< exit``, but never before ``min_duration_s`` after the
      start; then no new alert for ``cooldown_s``.
    """

    enter: float = Field(default=1.0, gt=0, description="calibrated score that counts as a hit")
    exit: float = Field(default=0.8, gt=0, description="calibrated score below which a frame is quiet")
    k: int = Field(default=3, ge=1, description="hits needed ...")
    n: int = Field(default=5, ge=1, description="... among the last n frames to start an alert")
    m: int = Field(default=10, ge=1, description="consecutive quiet frames that end an alert")
    min_duration_s: float = Field(default=2.0, ge=0, description="an alert lasts at least this long")
    cooldown_s: float = Field(default=10.0, ge=0, description="no new alert this long after one ended")
    update_min_rise: float = Field(default=0.1, ge=0, description="relative peak rise that is published")
    update_min_interval_s: float = Field(default=1.0, ge=0, description="at most one update per interval")

    @model_validator(mode="after")
    def _consistent(self) -> LifecycleSettings:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must be <= n ({self.n})")
        if self.exit > self.enter:
            raise ValueError(f"exit ({self.exit}) must be <= enter ({self.enter}) (hysteresis)")
        return self


class LifecycleOverride(Strict):
    """Per-scene or per-camera overrides of :class:`LifecycleSettings` (unset = inherited)."""

    enter: float | None = Field(default=None, gt=0)
    exit: float | None = Field(default=None, gt=0)
    k: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1)
    m: int | None = Field(default=None, ge=1)
    min_duration_s: float | None = Field(default=None, ge=0)
    cooldown_s: float | None = Field(default=None, ge=0)
    update_min_rise: float | None = Field(default=None, ge=0)
    update_min_interval_s: float | None = Field(default=None, ge=0)


class ClipSettings(Strict):
    """The alert's clip (MP4, H.264 via PyAV) and snapshot (JPEG of the peak frame)."""

    pre_roll_s: float = Field(default=5.0, ge=0, description="footage before the start")
    post_roll_s: float = Field(default=5.0, ge=0, description="footage after the end")
    max_s: float = Field(default=120.0, gt=0, description="clips stop growing after this long")
    overlay: bool = Field(default=True, description="heat-map overlay on the clip's frames")
    crf: int = Field(default=26, ge=0, le=51, description="x264 quality (lower = better, bigger)")
    snapshot_quality: int = Field(default=90, ge=1, le=100)
    region_level: float = Field(
        default=1.0, gt=0,
        description="calibrated map level that outlines the region (else half-way from median to max)"
    )
    tmp_dir: Path | None = Field(default=None, description="where clips are encoded; None: system temp")
    max_frame_pixels: int = Field(
        default=40_000_000, ge=1,
        description="frames declaring more pixels are refused (a 1 KB JPEG can declare 30000x30000)",
    )


class RingSettings(Strict):
    """Per-camera buffer of recent frames (their JPEG bytes as received) for the pre-roll."""

    max_frames: int = Field(default=300, ge=1, description="frames kept per camera")
    max_bytes: int = Field(default=64 * 2**20, ge=1, description="bytes kept per camera (JPEGs and maps)")


class LocalStoreConfig(Strict):
    """Embedded mode: alerts in a local folder (records JSON, clips MP4, snapshots JPEG)."""

    kind: Literal["local"] = "local"
    dir: Path = Path("runs/alerts")
    retention_s: int = Field(default=7 * DAY_S, ge=1, description="alerts older than this are deleted")
    events_max: int = Field(default=10_000, ge=1, description="length cap of the event log")
    max_alerts: int = Field(default=100_000, ge=1,
                            description="alerts kept at most (the oldest written are deleted first)")


class RedisStoreConfig(Strict):
    """Alerts in Redis (docs/architecture.md, "Redis layout"; every key has a TTL of ``retention_s``).

    While Redis cannot be reached, writes go to an on-disk spool (bounded by
    ``spool_max_bytes``/``spool_max_entries``) and are replayed in order when it returns.
    The password goes in ``password`` (a secret) or in the URL (``redis://:pw@host``);
    ``repr``/``str`` show the URL redacted and validation errors never echo the input.
    """

    # merged with Strict's (extra="forbid")
    model_config = ConfigDict(hide_input_in_errors=True)

    kind: Literal["redis"] = "redis"
    url: str = Field(default="redis://localhost:6379/0",
                     description="redis:// or rediss:// (TLS), or unix:// (a socket)")
    username: str | None = Field(default=None, description="ACL user")
    password: SecretStr | None = None
    tls: bool = Field(default=False, description="TLS even for a redis:// URL")
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: bool = True
    prefix: str = Field(default="vigil:", description="prefix of every key")
    retention_s: int = Field(default=7 * DAY_S, ge=1, description="TTL of every key")
    stream_maxlen: int = Field(default=10_000, ge=1, description="approximate cap of the event stream")
    index_max: int = Field(default=10_000, ge=1,
                           description="alert ids kept in a camera's index (the newest by start time)")
    socket_timeout_s: float = Field(default=2.0, gt=0)
    spool_dir: Path = Path("runs/alert-spool")
    spool_max_bytes: int = Field(default=512 * 2**20, ge=1, description="bytes the spool holds at most")
    spool_max_entries: int = Field(default=10_000, ge=1, description="writes the spool holds at most")

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if not v.lower().startswith(("redis://", "rediss://", "unix://")):
            # redact_url needs a scheme to find the userinfo: without one, hide what precedes an '@'
            shown = redact_url(v) if "://" in v else ("***@" + v.rsplit("@", 1)[1] if "@" in v else v)
            raise ValueError(f"url must start with redis://, rediss:// or unix://, got {shown!r}")
        return v

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "url" and isinstance(value, str) else value)


StoreConfig = Annotated[LocalStoreConfig | RedisStoreConfig, Field(discriminator="kind")]


class AlertingConfig(Strict):
    """The alert role: scores + frames in, alerts (store + ``vigil.alerts``) out."""

    # an error about the whole store section must not echo it: its URL may hold a password
    model_config = ConfigDict(hide_input_in_errors=True)

    enabled: bool = True
    group: str = "vigil-alert"
    lifecycle: LifecycleSettings = LifecycleSettings()
    scenes: dict[str, LifecycleOverride] = Field(default_factory=dict, description="per-scene overrides")
    cameras: dict[str, LifecycleOverride] = Field(default_factory=dict, description="per-camera overrides")
    clip: ClipSettings = ClipSettings()
    ring: RingSettings = RingSettings()
    store: StoreConfig = Field(default_factory=LocalStoreConfig)
    join_timeout_s: float = Field(
        default=2.0, ge=0, description="a score waits this long (wall clock) for its frame"
    )
    idle_timeout_s: float = Field(
        default=30.0, gt=0,
        description="a camera silent this long (wall clock) while other records keep arriving has its "
                    "alert ended, then its state dropped; while nothing arrives at all (broker frozen "
                    "or down), 4 times this",
    )
    max_cameras: int = Field(default=1024, ge=1, description="cameras whose state (ring buffer, "
                             "alerts) is kept; beyond, the least recently active is finished and dropped")
    store_retry_max_writes: int = Field(
        default=256, ge=1,
        description="store writes kept in memory while the store fails them (disk full, unwritable); "
                    "beyond, the worker waits for the store",
    )
    store_retry_max_bytes: int = Field(default=256 * 2**20, ge=1,
                                       description="bytes of those writes (clips, snapshots) at most")

    @field_validator("store", mode="before")
    @classmethod
    def _local_by_default(cls, v: object) -> object:
        if isinstance(v, dict) and "kind" not in v:
            return {"kind": "local", **v}
        return v

    @model_validator(mode="after")
    def _overrides_resolve(self) -> AlertingConfig:
        # each override on top of the defaults must be consistent (k <= n, exit <= enter)
        for kind, table in (("scenes", self.scenes), ("cameras", self.cameras)):
            for name, layer in table.items():
                try:
                    LifecycleSettings.model_validate(
                        self.lifecycle.model_dump() | layer.model_dump(exclude_none=True))
                except ValueError as exc:
                    raise ValueError(f"{kind}.{name}: {_first_error(exc)}") from None
        return self

    def lifecycle_for(self, camera: str, scene: str) -> LifecycleSettings:
        """Defaults, then the scene's overrides, then the camera's (ValueError if inconsistent)."""
        merged = self.lifecycle.model_dump()
        for layer in (self.scenes.get(scene), self.cameras.get(camera)):
            if layer is not None:
                merged.update(layer.model_dump(exclude_none=True))
        try:
            return LifecycleSettings.model_validate(merged)
        except ValueError as exc:
            raise ValueError(f"alerting settings of camera {camera!r} (scene {scene!r}): "
                             f"{_first_error(exc)}") from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", exc)).removeprefix("Value error, ")
    return str(exc)

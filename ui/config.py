"""The ``ui`` config section: where the review page listens and what it keeps."""

from __future__ import annotations

from pydantic import Field

from common.config import Strict

__all__ = ["UiConfig"]


class UiConfig(Strict):
    """The review page (`vigil ui`, and `vigil run` when ``enabled``)."""

    enabled: bool = Field(default=True, description="`vigil run` serves the page too")
    host: str = Field(default="127.0.0.1", description="address to listen on; keep 127.0.0.1 and put "
                      "an authenticating reverse proxy in front to expose it (README)")
    port: int = Field(default=8765, ge=0, le=65535, description="0: any free port (printed)")
    history_s: float = Field(default=300.0, gt=0, le=86_400,
                             description="seconds of score line kept per camera")
    max_cameras: int = Field(default=256, ge=1, description="cameras shown at most")
    group: str = Field(default="vigil-ui", description="consumer group reading frames and scores")
    health_urls: list[str] = Field(default_factory=list, description="/healthz URLs of the ingest roles "
                                   "(deployment); without them health comes from frame arrival")
    page_size: int = Field(default=50, ge=1, le=500, description="alerts per page")

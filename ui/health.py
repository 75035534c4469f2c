"""Each camera's health for the tiles: ``online``, ``reconnecting``, ``offline``, ``finished``
or ``unknown``, from the ingest health data.

The ingest role's health (``/healthz`` body ``{"ingest": {"cameras": {id: {"state": ...}}}}``,
:meth:`streamer.ingest.IngestMetrics.health`) names a state per camera; :func:`camera_state`
maps it onto the page's words. In `vigil run` the page reads it in-process; in a deployment
it fetches the ingest roles' ``/healthz`` (``ui.health_urls``); without either, a camera is
``online`` while its frames arrive and ``offline`` after :data:`OFFLINE_AFTER_S` without one.
Only state names and numbers leave here: never a URL, so never a credential.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from common.redact import redact_url

__all__ = ["OFFLINE_AFTER_S", "HealthSource", "UrlHealth", "camera_state", "from_ingest_detail"]

log = logging.getLogger(__name__)

OFFLINE_AFTER_S = 10.0

#: ``{camera: state}`` as the ingest roles report it (their own words), or None: no report.
HealthSource = Callable[[], dict[str, str] | None]

_ONLINE = {"streaming", "starting", "throttled"}


def camera_state(ingest_state: str | None, seconds_since_frame: float | None) -> str:
    """The page's word for a camera: from the ingest state when there is one, else from how
    long ago its last frame arrived.

    >>> camera_state("streaming", None), camera_state("reconnecting", 30.0), camera_state("stalled", 1.0)
    ('online', 'reconnecting', 'offline')
    >>> camera_state(None, 2.0), camera_state(None, 60.0), camera_state(None, None)
    ('online', 'offline', 'unknown')
    >>> camera_state("eof", 1.0)
    'finished'
    """
    if ingest_state is not None:
        if ingest_state in _ONLINE:
            return "online"
        if ingest_state == "reconnecting":
            return "reconnecting"
        if ingest_state == "stalled":
            return "offline"
        return "finished"
    if seconds_since_frame is None:
        return "unknown"
    return "online" if seconds_since_frame <= OFFLINE_AFTER_S else "offline"


def from_ingest_detail(detail: Any) -> dict[str, str]:
    """``{camera: state}`` from a ``/healthz`` body or an ingest health detail; what is not of
    that shape is left out."""
    if isinstance(detail, dict) and isinstance(detail.get("ingest"), dict):
        detail = detail["ingest"]
    cameras = detail.get("cameras") if isinstance(detail, dict) else None
    if not isinstance(cameras, dict):
        return {}
    return {str(cid): str(c["state"]) for cid, c in cameras.items()
            if isinstance(c, dict) and isinstance(c.get("state"), str)}


class UrlHealth:
    """:data:`HealthSource` that fetches the ingest roles' ``/healthz`` URLs (1 s timeout
    each); a URL that does not answer is logged once per outage, redacted."""

    def __init__(self, urls: Sequence[str], timeout_s: float = 1.0) -> None:
        self.urls, self.timeout_s = list(urls), timeout_s
        self._down: set[str] = set()

    def __call__(self) -> dict[str, str] | None:
        states: dict[str, str] = {}
        answered = False
        for url in self.urls:
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:  # noqa: S310 - config
                    body = resp.read(1 << 20)
            except urllib.error.HTTPError as exc:  # 503 carries the body of an unhealthy role
                body = exc.read(1 << 20)
            except (OSError, ValueError) as exc:
                if url not in self._down:
                    self._down.add(url)
                    log.warning("ui: ingest health %s does not answer: %s", redact_url(url),
                                redact_url(str(exc)))
                continue
            self._down.discard(url)
            answered = True
            try:
                states.update(from_ingest_detail(json.loads(body)))
            except (ValueError, RecursionError):
                log.warning("ui: ingest health %s is not JSON", redact_url(url))
        return states if answered else None

"""Credentials out of URLs, before a URL reaches a log line, an error, a metric or a page."""

from __future__ import annotations

import re

_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s?#]*@")
_URL_SECRET_PARAM = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|pass|token|secret|api_?key|auth)=)[^&;#\s]*",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """Return ``url`` (or any text containing URLs) with credentials replaced by ``***``.

    ``rtsp://admin:hunter2@10.0.0.5/stream`` becomes ``rtsp://***@10.0.0.5/stream``;
    secret-looking query parameters (``?password=...``, ``&token=...``) are masked too.
    """
    text = _URL_USERINFO.sub(r"\g<scheme>***@", str(url))
    return _URL_SECRET_PARAM.sub(r"\g<key>***", text)

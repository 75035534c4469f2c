"""common.redact: credentials never survive into shown text."""

from __future__ import annotations

import pytest

from common.redact import redact_url


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://admin:s3cretPW@10.0.0.5:554/Streaming/Channels/101",
        "rtsp://admin:s3cr@tPW@cam.local/live",
        "http://user:s3cretPW@host/path?x=1",
        "rtsp://cam.local/live?user=admin&password=s3cretPW",
    ],
)
def test_redact_url_hides_password(url: str) -> None:
    red = redact_url(url)
    assert "s3cr" not in red
    assert "***" in red
    assert red.split("://")[0] == url.split("://")[0]


def test_redact_url_leaves_plain_paths_alone() -> None:
    assert redact_url("rtsp://cam.local:554/live") == "rtsp://cam.local:554/live"
    assert redact_url("/data/videos/cam@1/clip.mp4") == "/data/videos/cam@1/clip.mp4"

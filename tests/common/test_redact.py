"""common.redact: credentials never survive into shown text."""

from __future__ import annotations

import io
import logging
import string
from collections.abc import Iterator

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from common.redact import RedactingFilter, install_redaction, redact_url


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


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://admin:p%40ss:w/rd@host/cam", "rtsp://***@host/cam"),
        ("rtsp://admin:p@ss:w/rd@host/cam", "rtsp://***@host/cam"),
        ("rtsp://admin:p#ss@host/cam", "rtsp://***@host/cam"),
        ("rtsp://admin:p?ss@host/cam", "rtsp://***@host/cam"),
        ("rtsp://admin:pa ss@host/cam", "rtsp://***@host/cam"),
        ("rtsp://u:a@b@host/x", "rtsp://***@host/x"),
        ("rtsp://user:ab://cd@cam.local:554/live", "rtsp://***@cam.local:554/live"),
        ("redis://:hunter2@redis:6379/0", "redis://***@redis:6379/0"),
        ("http://u:p@[fe80::1]:80/x", "http://***@[fe80::1]:80/x"),
        ("source:rtsp://u:pw@h/x", "source:rtsp://***@h/x"),
        ("open 'rtsp://a:b c@h1/x' then 'rtsp://c:d@h2/y'", "open 'rtsp://***@h1/x' then 'rtsp://***@h2/y'"),
        ("rtsp://cam.local:554/live rtsp://u:p@h/x", "rtsp://cam.local:554/live rtsp://***@h/x"),
        ("rtsp://a:b@h1/x\nrtsp://h2/y@", "rtsp://***@h1/x\nrtsp://h2/y@"),
    ],
)
def test_userinfo_ends_at_the_last_at_before_the_host(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "text",
    [
        "rtsp://cam.local:554/live",
        "/data/videos/cam@1/clip.mp4",
        "file:///data/videos/cam@1/clip.mp4",
        "http://[::1]:8080/metrics",
        "mail ops@example.com about rtsp-cam 3",
        "camera lobby: rtsp://cam.local/live reconnected after 2.0 s",
    ],
)
def test_text_without_credentials_is_unchanged(text: str) -> None:
    assert redact_url(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{'sasl_plain_username': 'alice', 'sasl_plain_password': 'S3cret', 'ssl_password': None}",
         "{'sasl_plain_username': 'alice', 'sasl_plain_password': '***', 'ssl_password': None}"),
        ('{"password": "a\\"b", "token":"xyz", "name": "n"}',
         '{"password": "***", "token":"***", "name": "n"}'),
        ("{'sasl_oauth_token_provider': <app.Tokens object at 0x7f>}",
         "{'sasl_oauth_token_provider': <***>}"),
        ("{'ssl_password': b'k3y'}", "{'ssl_password': b'***'}"),
        ("Redis(host='r', password='pw1', port=5)", "Redis(host='r', password='***', port=5)"),
        ("connect password=pw1 user=bob", "connect password=*** user=bob"),
        # a raw '#' may be part of the secret: the fragment goes too
        ("x?api_key=abc&u=1&access_token=t#f", "x?api_key=***&u=1&access_token=***"),
        ("error: password=pw1", "error: password=***"),
        ("Authorization: Bearer abc.def", "Authorization: ***"),
        ("PASS=1 passive=2 bypass=3", "PASS=*** passive=2 bypass=3"),
    ],
)
def test_secret_key_values_are_masked(text: str, expected: str) -> None:
    assert redact_url(text) == expected


def test_redaction_is_idempotent() -> None:
    text = "rtsp://a:p w@h/x {'sasl_plain_password': 'x'} token=y"
    once = redact_url(text)
    assert redact_url(once) == once


def test_long_text_costs_linear_time() -> None:
    for text in ["password" * 20_000, "a" * 100_000 + "=1", "rtsp://" + "a@" * 20_000, "'" * 50_000]:
        redact_url(text)  # each was quadratic at some point: minutes, not milliseconds


_PASSWORD_ALPHABET = string.ascii_letters + "@:/#?% "


@given(st.text(alphabet=_PASSWORD_ALPHABET, min_size=4, max_size=24))
@example("p%40ss:w/rd")
@example("p@ss w0rd?#")
@example(" x://y@z")
@example("//@@")
def test_password_never_survives(password: str) -> None:
    assume(password not in "rtsp://user:\0@cam.local:554/live")  # not a substring of the rest
    url = f"rtsp://user:{password}@cam.local:554/live"
    red = redact_url(url)
    assert password not in red
    assert red.startswith("rtsp://")
    assert red.endswith("@cam.local:554/live")


@given(st.text(alphabet=_PASSWORD_ALPHABET, min_size=1, max_size=24),
       st.sampled_from(["rtsp", "http", "redis", "kafka+ssl"]))
def test_scheme_and_host_always_stay(password: str, scheme: str) -> None:
    red = redact_url(f"{scheme}://admin:{password}@cam-3.local/x")
    assert red == f"{scheme}://***@cam-3.local/x"


# --------------------------------------------------------------------------- logging


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger with one stream handler, redaction installed."""
    stream = io.StringIO()
    logger = logging.getLogger("tests.redact")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    install_redaction(logger)
    install_redaction(logger)  # twice: still one filter
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def test_filter_redacts_messages_arguments_and_tracebacks(captured) -> None:
    logger, stream = captured
    logger.debug("config: %s", {"sasl_plain_password": "S3cret-1"})
    logger.info("opening %s", "rtsp://admin:pa ss#2@cam/live")
    try:
        raise ConnectionError("cannot reach rtsp://admin:Tb-secret-3@cam/live")
    except ConnectionError:
        logger.exception("camera down")
    logger.warning("bad call %s %s", "password=S3cret-4")  # too few arguments
    out = stream.getvalue()
    for secret in ("S3cret-1", "pa ss#2", "Tb-secret-3", "S3cret-4"):
        assert secret not in out
    assert "rtsp://***@cam/live" in out
    assert "ConnectionError" in out and "Traceback" in out
    assert "bad call" in out


def test_uncaught_exceptions_print_redacted_in_every_thread() -> None:
    """A traceback that never went through logging (an uncaught exception, in the main
    thread or any other) shows no password either."""
    import subprocess
    import sys

    secret = "p%40ss:w/rd#?x y"
    code = (
        "import threading\n"
        "from common.redact import install_excepthooks\n"
        "install_excepthooks()\n"
        f"url = 'rtsp://admin:{secret}@10.0.0.5/cam'\n"
        "def boom():\n"
        "    raise RuntimeError(f'cannot open {url}')\n"
        "t = threading.Thread(target=boom, name='camera-gate'); t.start(); t.join()\n"
        "boom()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Exception in thread camera-gate" in proc.stderr
    assert proc.stderr.count("RuntimeError: cannot open rtsp://***@10.0.0.5/cam") == 2
    assert "p%40ss" not in proc.stderr and "w/rd" not in proc.stderr and "admin" not in proc.stderr

"""The review page's tests: a real headless Chromium (Debian's ``chromium``, driven by
Playwright through ``executable_path``), real Redis and tansu where a test claims them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.alerting.conftest import anomaly_folder  # noqa: F401 - fixture
from tests.servers import redis_server, redis_url  # noqa: F401 - fixtures


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:  # `make test` installs it (scripts/bootstrap-system.sh): a missing one is an error
        raise RuntimeError("no chromium on PATH: install Debian's chromium (make test does)")
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), headless=True,
                               args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: ``VIGIL_SCREENSHOTS`` (scripts/screenshots.sh) or the test's tmp dir."""
    out = Path(os.environ.get("VIGIL_SCREENSHOTS") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    return out

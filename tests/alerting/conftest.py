"""The alerting tests use a real redis-server (tests/servers.py) besides the shared fixtures."""

from pathlib import Path

import pytest

from tests.alerting.streams import write_checker_folder
from tests.servers import redis_server, redis_url  # noqa: F401 - fixtures


@pytest.fixture(scope="session")
def anomaly_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped clip as a frame folder with a checkerboard object in frames 60-79."""
    folder = tmp_path_factory.mktemp("composited") / "frames"
    write_checker_folder(folder)
    return folder

"""`vigil ui` as a user starts it: a real process serving a store folder, stopped with SIGTERM;
and the set-ups it refuses, with one line and exit 2."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from alerting.config import LocalStoreConfig
from alerting.store import LocalStore
from tests.alerting.store.records import record, write
from tests.vigil.test_cli import vigil

REPO = Path(__file__).resolve().parents[2]


def test_vigil_ui_serves_a_store_folder_until_sigterm(tmp_path: Path) -> None:
    store = LocalStore(LocalStoreConfig(dir=tmp_path / "alerts"))
    rec = record(status="closed")
    store.put(write(rec, snapshot=b"\xff\xd8\xffsnap"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "vigil", "ui", "--store-dir", str(tmp_path / "alerts"),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    try:
        url, deadline, seen = None, time.monotonic() + 60, []
        while url is None:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)
            line = proc.stderr.readline()
            seen.append(line)
            m = re.search(r"review page: (http://127\.0\.0\.1:\d+/)", line)
            url = m.group(1) if m else None
        listed = json.loads(urllib.request.urlopen(url + "api/alerts", timeout=10).read())
        assert [a["alert_id"] for a in listed["alerts"]] == [rec.alert_id]
        cams = json.loads(urllib.request.urlopen(url + "api/cameras", timeout=10).read())["cameras"]
        assert [(c["camera"], c["live"]) for c in cams] == [("cam", False)]
        # no live feed: the tile is the camera's newest alert's snapshot
        tile = urllib.request.urlopen(url + "api/cameras/cam/tile.jpg", timeout=10).read()
        assert tile == b"\xff\xd8\xffsnap"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "torch" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_vigil_ui_refuses_a_missing_folder_and_a_taken_port(tmp_path: Path) -> None:
    missing = vigil("ui", "--store-dir", tmp_path / "nope")
    assert missing.code == 2 and "no such folder" in missing.err
    (tmp_path / "alerts").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = vigil("ui", "--store-dir", tmp_path / "alerts", "--port", str(s.getsockname()[1]))
    assert taken.code == 2 and "cannot listen" in taken.err and "ui.port" in taken.err
    assert len(taken.err.strip().splitlines()) == 1

"""A camera password with raw ``@ : / # ? %`` and a space reaches no output of ``vigil``.

The real command runs as a subprocess (``python -m vigil``), at DEBUG (``-v``):

* ``vigil -v run`` with an RTSP camera whose URL carries the password (its port is closed,
  so it reconnects and logs warnings naming the URL) beside a replayed clip that is scored
  and raises alerts (an eager lifecycle), ``/metrics`` and ``/healthz`` read while it runs,
  stopped with SIGTERM once the replay is recorded;
* ``vigil -v ingest`` with the same RTSP camera on the in-process bus, stopped with SIGTERM;
* ``vigil --config bad.yaml run`` on configs that fail validation beside that URL.

Every stdout, stderr, metrics and health body, and every file the runs wrote (score CSVs,
alert records and event log, anything else under their working folder), is searched for
the password, for each distinctive fragment of it and for its percent-encoded form (a
camera configured with the encoded password, too). The redacted URL must show in the
logs, so the test notices the URL vanishing from them altogether.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from scenes.registry import SceneRegistry
from tests.conftest import CLIP, REPO, TINY_SCENE

PASSWORD = "p@ss:w/rd#?x%y z"
ENCODED = urllib.parse.quote(PASSWORD, safe="")  # p%40ss%3Aw%2Frd%23%3Fx%25y%20z
#: The password, its fragments between the special characters, and its encoded form.
SECRETS = (PASSWORD, "p@ss", "ss:w", "w/rd", "rd#?x", "x%y z", "y z", ENCODED, "p%40ss", "%2Frd%23")
REDACTED = "rtsp://***@127.0.0.1"
REPLAY_FRAMES = 60  # the 10 fps, 120-frame clip sampled at 5 fps


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CLOSED_PORT = free_port()  # nothing listens there: every connect is refused


def rtsp_camera(cam_id: str, password: str = PASSWORD) -> dict:
    """A camera that never connects, reconnecting quickly: warnings name its URL."""
    return {"id": cam_id, "url": f"rtsp://admin:{password}@127.0.0.1:{CLOSED_PORT}/cam",
            "scene": TINY_SCENE, "fps": 5, "open_timeout_s": 1, "read_timeout_s": 1, "watchdog_s": 1,
            "reconnect_initial_s": 0.2, "reconnect_max_s": 0.5}


def write_config(folder: Path, registry: SceneRegistry, cameras: list[dict], port: int) -> Path:
    data = {
        "scenes": {"root": str(registry.root)},
        "cameras": cameras,
        "detector": {"batch_size": 8, "max_wait_ms": 20, "map_size": 32},
        "recorder": {"dir": str(folder / "scores")},
        "ops": {"port": port},
        "alerting": {
            # eager: about every other frame of the clip is a hit, so alerts start and end
            "lifecycle": {"enter": 0.001, "exit": 0.001, "k": 1, "n": 1, "m": 1, "min_duration_s": 0.0,
                          "cooldown_s": 0.0, "update_min_interval_s": 0.0},
            "clip": {"pre_roll_s": 0.0, "post_roll_s": 0.0, "tmp_dir": str(folder / "tmp")},
            "store": {"kind": "local", "dir": str(folder / "alerts")},
        },
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def get(port: int, path: str) -> str:
    """An ops page's body (a 503 health report too)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.read().decode()


def sample(metrics: str, name: str, camera: str) -> float:
    found = re.search(rf'^{name}\{{camera="{camera}"\}} (\S+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@dataclass
class Outputs:
    """Every text the runs produced, by where it came from."""

    texts: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def add_tree(self, folder: Path) -> None:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.name != "config.yaml":  # the input holds the password, by design
                self.files.append(path)
                self.texts[str(path)] = path.read_bytes().decode("utf-8", "replace")


def vigil_process(folder: Path, logs: Path, *argv: str) -> subprocess.Popen[bytes]:
    """``python -m vigil ARGV`` in ``folder``; stdout and stderr to files in ``logs`` (a
    DEBUG run writes more than a pipe holds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "stdout").open("wb") as out, (logs / "stderr").open("wb") as err:
        return subprocess.Popen([sys.executable, "-m", "vigil", *argv], cwd=folder, env=env,
                                stdout=out, stderr=err)


def poll_until(proc: subprocess.Popen[bytes], port: int, done, timeout: float) -> tuple[str, str]:
    """Read /metrics and /healthz until ``done(metrics)`` (or the timeout); the last bodies."""
    deadline = time.monotonic() + timeout
    metrics = health = ""
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            metrics, health = get(port, "/metrics"), get(port, "/healthz")
        except OSError:  # the ops server is not up yet
            time.sleep(0.5)
            continue
        if done(metrics):
            break
        time.sleep(0.5)
    return metrics, health


def stop(proc: subprocess.Popen[bytes], logs: Path, what: str, outputs: Outputs,
         terminate: bool = True) -> int:
    """SIGTERM (if still running and ``terminate``), wait, and keep its stdout and stderr."""
    if terminate and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=90)
    for stream in ("stdout", "stderr"):
        outputs.texts[f"{what} {stream}"] = (logs / stream).read_bytes().decode("utf-8", "replace")
    return code


@pytest.fixture(scope="module")
def outputs(registry: SceneRegistry, tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    found = Outputs()

    # vigil run: the replay is scored and raises alerts while the RTSP cameras reconnect
    run_dir = tmp_path_factory.mktemp("leak-run")
    port = free_port()
    replay = {"id": "replay", "url": str(CLIP), "scene": TINY_SCENE, "fps": 5, "replay_start_ms": 0}
    config = write_config(run_dir, registry, [replay, rtsp_camera("door"), rtsp_camera("gate", ENCODED)],
                          port)
    logs = tmp_path_factory.mktemp("leak-logs")
    proc = vigil_process(run_dir, logs / "run", "-v", "--config", str(config), "run")

    def replay_recorded(metrics: str) -> bool:
        return (sample(metrics, "vigil_recorder_scores_written_total", "replay") >= REPLAY_FRAMES
                and sample(metrics, "vigil_ingest_reconnects_total", "door") >= 3)

    metrics, health = poll_until(proc, port, replay_recorded, timeout=240)
    found.texts["run /metrics"], found.texts["run /healthz"] = metrics, health
    time.sleep(1.0)  # the alert role ends its last alert
    found.texts["run /healthz (end)"] = get(port, "/healthz") if proc.poll() is None else ""
    found.texts["run exit"] = str(stop(proc, logs / "run", "run", found))
    found.add_tree(run_dir)

    # vigil ingest: the RTSP camera alone, on the in-process bus
    ingest_dir = tmp_path_factory.mktemp("leak-ingest")
    port = free_port()
    config = write_config(ingest_dir, registry, [rtsp_camera("door")], port)
    proc = vigil_process(ingest_dir, logs / "ingest", "-v", "--config", str(config), "ingest")
    metrics, health = poll_until(
        proc, port, lambda m: sample(m, "vigil_ingest_reconnects_total", "door") >= 3, timeout=60)
    found.texts["ingest /metrics"], found.texts["ingest /healthz"] = metrics, health
    found.texts["ingest exit"] = str(stop(proc, logs / "ingest", "ingest", found))
    found.add_tree(ingest_dir)

    # configs that fail validation beside the URL: each error is one line, exit 2
    bad_dir = tmp_path_factory.mktemp("leak-bad")
    url = f"rtsp://admin:{PASSWORD}@127.0.0.1:{CLOSED_PORT}/cam"
    bad = {  # one camera per error: pydantic reports them all in one go
        "cameras": [{**rtsp_camera("c1"), "bogus": 1}, {**rtsp_camera("c2"), "fps": "fast"},
                    {"id": "c3", "url": url}, {**rtsp_camera("c4"), "id": "c4/x"},
                    {**rtsp_camera("c5"), "url": f"http://admin:{PASSWORD}@127.0.0.1/c"},
                    {**rtsp_camera("c6"), "reconnect_max_s": 0.1}],
        "not-a-list": {"door": url},
    }
    for name, cameras in bad.items():
        path = bad_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"cameras": cameras}))
        proc = vigil_process(bad_dir, logs / name, "--config", str(path), "run")
        found.texts[f"bad config {name} exit"] = str(stop(proc, logs / name, f"bad config {name}", found,
                                                         terminate=False))
    # YAML that does not parse, its broken line holding the URL: PyYAML's error quotes a
    # snippet of that line, cut at a length that depends on the text before the password
    for user in ("admin", "viewer"):
        path = bad_dir / f"broken-{user}.yaml"
        path.write_text(f'cameras:\n  - id: door\n    url: "rtsp://{user}:{PASSWORD}@127.0.0.1:{CLOSED_PORT}/cam\n'
                        "    scene: [campus\n")
        name = f"broken-yaml-{user}"
        proc = vigil_process(bad_dir, logs / name, "--config", str(path), "run")
        found.texts[f"bad config {name} exit"] = str(stop(proc, logs / name, f"bad config {name}", found,
                                                         terminate=False))
    return found


def test_the_runs_did_what_is_searched(outputs: Outputs) -> None:
    """Scores, alerts and reconnects flowed; every bad config was refused."""
    texts = outputs.texts
    assert texts["run exit"] == "0", texts["run stderr"][-3000:]
    summary = json.loads(texts["run stdout"].strip().splitlines()[-1])
    assert summary["scores_recorded"]["replay"] == REPLAY_FRAMES
    assert summary["alerts_started"] >= 1
    names = {p.name for p in outputs.files}
    assert "replay.csv" in names and "events.jsonl" in names
    assert any(p.parent.name == "alerts" and p.suffix == ".json" for p in outputs.files)
    for where in ("run", "ingest"):
        assert sample(texts[f"{where} /metrics"], "vigil_ingest_reconnects_total", "door") >= 3
        assert '"door"' in texts[f"{where} /healthz"]
        assert "reconnecting to" in texts[f"{where} stderr"]
    assert texts["ingest exit"] in ("0", "1"), texts["ingest stderr"][-3000:]
    for name, text in texts.items():
        if name.startswith("bad config") and name.endswith("exit"):
            assert text == "2", texts[name.replace(" exit", " stderr")]


def test_the_redacted_url_shows_in_the_logs(outputs: Outputs) -> None:
    for where in ("run stderr", "ingest stderr"):
        assert f"{REDACTED}:{CLOSED_PORT}/cam" in outputs.texts[where]


def test_the_password_reaches_no_output(outputs: Outputs) -> None:
    leaks = [f"{where}: {secret!r} in ...{text[max(0, i - 80):i + 80]!r}..."
             for where, text in outputs.texts.items() for secret in SECRETS
             if (i := text.find(secret)) >= 0]
    assert not leaks, "\n".join(leaks)

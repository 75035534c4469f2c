"""``vigil`` end to end, in process: train a tiny scene on the shipped clip, score the clip."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamer.video import iter_video_frames
from tests.conftest import CLIP, CLIP_FRAMES
from vigil.cli import main

TINY_CONFIG = """\
training:
  input_size: 128
  epochs: 3              # the command line's --epochs 1 wins
  image_batch: 8
  fiber_batch: 2048
  coupling_blocks: 2
  cond_dim: 32
  blur_sigma: 2.0
  max_frames_per_video: 32
  holdout_fraction: 0.25 # 32 frames: 24 to train on, 8 to calibrate
  false_alarm_rate: 0.001
  feature_cache_mb: 256
detector:
  batch_size: 16
"""


@dataclass
class Run:
    code: int
    out: str
    err: str


def vigil(*argv: str | Path) -> Run:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return Run(code, out.getvalue(), err.getvalue())


@dataclass
class Trained:
    config: Path
    registry: Path
    train: Run
    score: Run
    out: Path
    train_log: list[logging.LogRecord]


class Records(logging.Handler):
    """Keeps the records it is given (a module fixture cannot use ``caplog``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def trained_cli(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    registry, out = root / "registry", root / "out"
    logger, handler = logging.getLogger("vigil"), Records()
    logger.addHandler(handler)
    try:
        train = vigil("--config", config, "train", "--scene", "t", "--videos", CLIP, "--epochs", "1",
                      "--registry", registry, "-q")
    finally:
        logger.removeHandler(handler)
    score = vigil("--config", config, "score", "--scene", "t", CLIP, "-o", out,
                  "--registry", registry, "-q")
    return Trained(config, registry, train, score, out, handler.records)


def test_train_writes_a_checkpoint(trained_cli: Trained) -> None:
    assert trained_cli.train.code == 0, trained_cli.train.err
    report = json.loads(trained_cli.train.out.strip().splitlines()[-1])
    assert report["scene"] == "t"
    assert report["threshold_method"] == "gumbel"
    lo, hi = report["threshold_interval_90"]
    assert lo < hi and report["holdout_frames"] == 8
    meta = json.loads((trained_cli.registry / "t" / "meta.json").read_text())
    assert meta["input_size"] == 128
    training = meta["training"]
    assert training["settings"]["epochs"] == 1
    assert len(training["history"]) == 1
    assert (training["train_frames"], training["holdout_frames"]) == (24, 8)


def test_train_cross_fit_calibrates_on_every_frame(trained_cli: Trained, tmp_path: Path) -> None:
    """``--cross-fit``: the threshold rests on all 32 frames (4 folds of 8, each scored by a
    model that did not train on them); the deployed model is the one plain training gives."""
    registry = tmp_path / "registry"
    run = vigil("--config", trained_cli.config, "train", "--scene", "t", "--videos", CLIP, "--epochs", "1",
                "--cross-fit", "--registry", registry, "-q")
    assert run.code == 0, run.err
    report = json.loads(run.out.strip().splitlines()[-1])
    assert report["cross_fit_folds"] == 4 and report["holdout_frames"] == 32
    lo, hi = report["threshold_interval_90"]
    assert lo < report["threshold_raw"] < hi  # the interval of the threshold the rule made
    meta = json.loads((registry / "t" / "meta.json").read_text())
    crossed = meta["training"]["cross_fit"]
    assert crossed["folds"] == 4 and crossed["normal_frames"] == 32
    plain = json.loads((trained_cli.registry / "t" / "meta.json").read_text())
    assert crossed["threshold_before"] == plain["calibration"]["threshold"]
    assert meta["calibration"]["threshold"] == crossed["threshold_after"]


def test_train_warns_that_a_threshold_rests_on_few_held_out_frames(trained_cli: Trained) -> None:
    """8 held-out frames cannot show a 1-in-1000 tail: the 0.1 % threshold is extrapolated."""
    warnings = [r.getMessage() for r in trained_cli.train_log
                if r.levelno == logging.WARNING and "held-out frames" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith("scene t: the 0.1 % threshold rests on 8 held-out frames (fewer than 1000 "
                                  "it takes to see one such frame); it is extrapolated (gumbel fit), 90 % "
                                  "interval ")
    assert warnings[0].endswith(": give it more normal footage with `vigil calibrate`")


def test_score_writes_csv_video_and_timeline(trained_cli: Trained) -> None:
    assert trained_cli.score.code == 0, trained_cli.score.err
    summary = json.loads(trained_cli.score.out.strip().splitlines()[-1])
    assert summary["frames"] == CLIP_FRAMES
    out = trained_cli.out
    with (out / "scores.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["seq", "score", "raw"]
    assert [int(r[0]) for r in rows[1:]] == list(range(CLIP_FRAMES))
    scores = [float(r[1]) for r in rows[1:]]
    assert all(s == s for s in scores)  # no NaN
    assert sum(s >= 1.0 for s in scores) == summary["above_threshold"]
    frames = list(iter_video_frames(out / "overlay.mp4"))
    assert len(frames) == CLIP_FRAMES
    assert frames[0].image.shape == (192, 256, 3)
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scenes_lists_the_trained_scene(trained_cli: Trained) -> None:
    run = vigil("--config", trained_cli.config, "scenes", "--registry", trained_cli.registry)
    assert run.code == 0
    assert run.out.startswith("t\tcflow\ttf_efficientnet_lite0\tthreshold ")


def test_score_unknown_scene_exits_2(trained_cli: Trained, tmp_path: Path) -> None:
    run = vigil("--config", trained_cli.config, "score", "--scene", "nope", CLIP, "-o", tmp_path,
                "--registry", trained_cli.registry, "-q")
    assert run.code == 2
    assert "vigil: error: unknown scene 'nope'" in run.err
    assert "known scenes: t" in run.err
    assert "Traceback" not in run.err


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  epoch: 3\n")
    run = vigil("--config", bad, "scenes", "--registry", tmp_path)
    assert run.code == 2
    assert "training.epoch: unknown key" in run.err


def test_train_unreadable_video_exits_2(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    config = tmp_path / "c.yaml"
    config.write_text(TINY_CONFIG)
    run = vigil("--config", config, "train", "--scene", "x", "--videos", text,
                "--registry", tmp_path / "reg", "-q")
    assert run.code == 2
    assert "notes.mp4" in run.err


def test_train_without_footage_exits_2(tmp_path: Path) -> None:
    run = vigil("train", "--scene", "x", "--registry", tmp_path, "-q")
    assert run.code == 2
    assert "--videos" in run.err


def test_invalid_scene_id_exits_2(tmp_path: Path) -> None:
    run = vigil("score", "--scene", "../evil", CLIP, "-o", tmp_path / "o", "--registry", tmp_path, "-q")
    assert run.code == 2
    assert "invalid scene id" in run.err


def test_ingest_role_ends_when_every_replay_has_ended(tmp_path: Path) -> None:
    config = tmp_path / "ingest.yaml"
    config.write_text(f"cameras:\n  - {{id: replay, url: '{CLIP}', scene: s, fps: 5}}\n")
    run = vigil("--config", config, "ingest")  # would block forever if it waited for a stop
    assert run.code == 0


def test_python_dash_m_vigil_is_the_cli() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "vigil", "--help"], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and "every replay has ended" in " ".join(done.stdout.split())


def test_roles_without_a_model_do_not_load_torch() -> None:
    """`vigil ingest` and `vigil alert` load the whole config but never the model stack."""
    import subprocess
    import sys

    code = ("import sys; import vigil.cli, vigil.runner, vigil.config, alerting.worker; "
            "from vigil.runner import Pipeline; from vigil.config import VigilConfig; "
            "Pipeline(VigilConfig(), roles=('ingest',)).close(); "
            "print(sorted(m for m in ('torch', 'timm', 'FrEIA') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("role", ["ingest", "alert"])
def test_a_refused_start_of_a_role_without_a_model_exits_2_without_torch(role: str, tmp_path: Path) -> None:
    """The error path too: printing a refused `vigil ingest` / `vigil alert` start (a bad config
    key, a replay that is not there) loads no model stack, so it takes well under a second."""
    import subprocess
    import sys

    bad_key = tmp_path / "bad-key.yaml"
    bad_key.write_text("alerting:\n  idle_timeout: 3\n")
    no_file = tmp_path / "no-file.yaml"
    no_file.write_text(f"cameras:\n  - {{id: gone, url: '{tmp_path / 'gone.mp4'}', scene: s}}\n")
    repo = Path(__file__).resolve().parents[2]
    code = ("import sys; from vigil.cli import main; code = main(sys.argv[1:]); "
            "print(sorted(m for m in ('torch', 'timm', 'FrEIA') if m in sys.modules)); sys.exit(code)")
    for config, said in ((bad_key, "alerting.idle_timeout: unknown key"),
                         *([(no_file, "camera gone: video file not found")] if role == "ingest" else [])):
        done = subprocess.run([sys.executable, "-c", code, "--config", str(config), role],
                              capture_output=True, text=True, timeout=120, cwd=repo)
        assert done.returncode == 2, done.stderr
        assert said in done.stderr and "Traceback" not in done.stderr
        assert done.stdout.strip() == "[]"


def test_every_user_error_class_is_found_once_its_module_is_imported() -> None:
    """The lazy list of user errors names real classes (a renamed one would be traced, not printed)."""
    import importlib

    from vigil import cli

    for module, _name in cli._USER_ERRORS:
        importlib.import_module(module)
    assert len(cli._user_errors()) == len(cli._USER_ERRORS)

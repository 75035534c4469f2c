"""Broken set-ups fail loudly: one error line naming what is wrong, and a non-zero exit code.

Each test drives the real ``vigil`` entry point (in process) on one broken set-up: a
camera's scene without a checkpoint or with a broken one, a replay that cannot be opened
or breaks off, corrupt frames (skipped and counted), a truncated video (ended early),
``vigil score`` failing half-way (no partial result), an encoder without weights.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import yaml

from scenes.registry import SceneRegistry
from streamer import video
from streamer.video import iter_video_frames
from streamer.writer import VideoWriter
from tests.conftest import CLIP, CLIP_FRAMES, TINY_SCENE
from tests.vigil.test_cli import Run, vigil
from vigil.config import VigilConfig
from vigil.demo import stream_config
from vigil.runner import Pipeline

#: The detector settings of these tests: small batches, short waits.
DETECTOR = {"batch_size": 8, "max_wait_ms": 20, "map_size": 32}


def write_config(path: Path, root: Path, cameras: list[dict], **sections: object) -> Path:
    data = {"scenes": {"root": str(root)}, "cameras": cameras,
            "recorder": {"dir": str(path.parent / "scores")},
            "alerting": {"store": {"dir": str(path.parent / "alerts")}}, **sections}
    data["detector"] = {**DETECTOR, **data.get("detector", {})}  # type: ignore[dict-item]
    path.write_text(yaml.safe_dump(data))
    return path


def camera(url: Path | str, scene: str = TINY_SCENE, cam_id: str = "gate") -> dict:
    return {"id": cam_id, "url": str(url), "scene": scene, "replay_start_ms": 0}


def one_error_line(run: Run) -> str:
    """The run's error: exactly one ``vigil: error:`` line and no traceback."""
    assert "Traceback" not in run.err
    lines = [line for line in run.err.splitlines() if line.startswith("vigil: error:")]
    assert len(lines) == 1, run.err
    return lines[0]


def frame_folder(folder: Path, n: int = 24, corrupt: tuple[int, ...] = ()) -> Path:
    """``n`` numbered JPEGs of the clip; those numbered in ``corrupt`` truncated mid-image."""
    import cv2

    folder.mkdir(parents=True)
    for frame in iter_video_frames(CLIP, max_frames=n):
        ok, data = cv2.imencode(".jpg", frame.image)
        assert ok
        blob = data.tobytes()
        if frame.seq in corrupt:
            blob = blob[: len(blob) // 3]
        (folder / f"{frame.seq:03d}.jpg").write_bytes(blob)
    return folder


def registry_copy(registry: SceneRegistry, dest: Path) -> Path:
    """A writable copy of the session's (read-only) registry."""
    shutil.copytree(registry.root, dest)
    return dest


def damaged_clip(path: Path) -> Path:
    """The clip with 3000 bytes of noise about a sixth of the way in: a run of undecodable
    packets after a few good frames."""
    import random

    data = bytearray(CLIP.read_bytes())
    rnd = random.Random(0)
    for k in range(20_000, 23_000):
        data[k] = rnd.randrange(256)
    path.write_bytes(bytes(data))
    return path


# ----------------------------------------------------------------------------- scenes at start


def test_run_refuses_a_camera_whose_scene_has_no_checkpoint(registry: SceneRegistry, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", registry.root, [camera(CLIP, scene="lobby")])
    run = vigil("--config", config, "run")
    assert run.code == 2
    assert one_error_line(run) == (
        f"vigil: error: camera gate: scene 'lobby' has no checkpoint in {registry.root} (known scenes: "
        f"{TINY_SCENE}); train it with `vigil train --scene lobby ...` (detector.allow_missing_scenes: "
        "true starts anyway)")
    assert not (tmp_path / "scores").exists()  # nothing ran


def test_run_refuses_a_broken_checkpoint_naming_camera_and_scene(registry: SceneRegistry,
                                                                  tmp_path: Path) -> None:
    root = registry_copy(registry, tmp_path / "models")
    weights = root / TINY_SCENE / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    config = write_config(tmp_path / "c.yaml", root, [camera(CLIP)])
    run = vigil("--config", config, "run")
    assert run.code == 2
    line = one_error_line(run)
    assert line.startswith(f"vigil: error: camera gate: scene '{TINY_SCENE}': checkpoint {root / TINY_SCENE} "
                           "is broken: corrupt: model.safetensors is not a safetensors file")


def test_run_refuses_a_scene_built_for_another_encoder(registry: SceneRegistry, tmp_path: Path) -> None:
    root = registry_copy(registry, tmp_path / "models")
    meta_path = root / TINY_SCENE / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["encoder"]["weights_digest"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    config = write_config(tmp_path / "c.yaml", root, [camera(CLIP)])
    run = vigil("--config", config, "run")
    assert run.code == 2
    assert one_error_line(run).startswith(
        f"vigil: error: camera gate: scene {TINY_SCENE}: checkpoint was built for encoder "
        f"tf_efficientnet_lite0 (weights {'0' * 64}), but the loaded encoder is tf_efficientnet_lite0 "
        "(weights ")


def test_detect_checks_every_checkpoint_without_cameras(registry: SceneRegistry, tmp_path: Path) -> None:
    """`vigil detect` serves every camera of a deployment: a broken scene no camera of this
    config names is refused too (the healthy one is not mentioned)."""
    root = registry_copy(registry, tmp_path / "models")
    shutil.copytree(root / TINY_SCENE, root / "old")
    (root / "old" / "meta.json").write_text("{not json")
    config = write_config(tmp_path / "c.yaml", root, [])
    run = vigil("--config", config, "detect")
    assert run.code == 2
    line = one_error_line(run)
    assert line.startswith(f"vigil: error: scene 'old': checkpoint {root / 'old'} is broken: corrupt: "
                           "meta.json is not valid JSON")
    assert f"'{TINY_SCENE}'" not in line


def test_allow_missing_scenes_starts_anyway_with_a_warning(registry: SceneRegistry, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    folder = frame_folder(tmp_path / "frames", n=6)
    config = write_config(tmp_path / "c.yaml", registry.root,
                          [camera(folder, scene="lobby"), camera(folder, cam_id="door")],
                          detector={"allow_missing_scenes": True})
    with caplog.at_level(logging.WARNING):
        run = vigil("--config", config, "run")
    assert run.code == 0, run.err
    assert "camera gate: scene 'lobby' has no checkpoint" in caplog.text
    assert "starting anyway (detector.allow_missing_scenes): its frames are skipped" in caplog.text
    summary = json.loads(run.out.strip().splitlines()[-1])
    assert summary["scores_recorded"] == {"gate": 0, "door": 6}  # the healthy camera is scored


# ----------------------------------------------------------------------------- replays


@pytest.mark.parametrize("command", ["ingest", "run"])
def test_missing_replay_file_exits_2_naming_the_camera(command: str, registry: SceneRegistry,
                                                       tmp_path: Path) -> None:
    missing = tmp_path / "gone.mp4"
    config = write_config(tmp_path / "c.yaml", registry.root, [camera(CLIP, cam_id="ok"), camera(missing)])
    run = vigil("--config", config, command)
    assert run.code == 2
    assert one_error_line(run) == f"vigil: error: camera gate: video file not found: {missing}"


def test_text_file_named_mp4_exits_2_naming_the_camera(registry: SceneRegistry, tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    config = write_config(tmp_path / "c.yaml", registry.root, [camera(text)])
    run = vigil("--config", config, "run")
    assert run.code == 2
    assert one_error_line(run).startswith(
        f"vigil: error: camera gate: cannot open video source {text}: not a video or unreadable (")


def test_replay_that_breaks_off_exits_1_naming_the_camera(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A replay that opens but turns out corrupt half-way: the run ends, the camera is named."""
    monkeypatch.setattr(video, "FILE_MAX_BAD_PACKETS", 2)  # the damage is a run of > 2 bad packets
    clip = damaged_clip(tmp_path / "damaged.mp4")
    config = write_config(tmp_path / "c.yaml", tmp_path / "models", [camera(clip)])
    run = vigil("--config", config, "ingest")
    assert run.code == 1
    assert one_error_line(run) == (f"vigil: error: camera gate: video source {clip} is corrupt: 2 packets "
                                   "in a row failed to decode")
    summary = json.loads(run.out.strip().splitlines()[-1])
    assert 0 < summary["ingest"]["gate"]["published"] < CLIP_FRAMES


def test_frame_folder_of_unreadable_files_exits_1_naming_the_camera(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i:03d}.jpg").write_text("not an image")
    config = write_config(tmp_path / "c.yaml", tmp_path / "models", [camera(folder)])
    run = vigil("--config", config, "ingest")
    assert run.code == 1
    assert one_error_line(run) == f"vigil: error: camera gate: no readable image in frame folder {folder} " \
                                  "(3 unreadable)"
    assert json.loads(run.out)["ingest"]["gate"] == {"read": 0, "published": 0, "dropped": 0,
                                                     "skipped_corrupt": 3}


def test_corrupt_jpegs_are_skipped_and_counted_in_the_summary(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    folder = frame_folder(tmp_path / "frames", n=24, corrupt=(5, 17))
    config = write_config(tmp_path / "c.yaml", tmp_path / "models", [camera(folder)])
    with caplog.at_level(logging.INFO):
        run = vigil("--config", config, "ingest")
    assert run.code == 0, run.err
    assert json.loads(run.out)["ingest"] == {
        "gate": {"read": 22, "published": 22, "dropped": 0, "skipped_corrupt": 2}}
    assert ("camera gate: ingest finished: 22 frames read, 22 published, 0 dropped, 2 skipped as corrupt, "
            "0 too large, 0 reconnect attempts") in caplog.text


def test_truncated_video_says_it_ended_early(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    truncated = tmp_path / "cut.mp4"
    data = CLIP.read_bytes()
    truncated.write_bytes(data[: len(data) // 5])
    config = write_config(tmp_path / "c.yaml", tmp_path / "models", [camera(truncated)])
    with caplog.at_level(logging.WARNING):
        run = vigil("--config", config, "ingest")
    assert run.code == 0, run.err
    published = json.loads(run.out)["ingest"]["gate"]["published"]
    assert 0 < published < CLIP_FRAMES // 2
    [record] = [r for r in caplog.records if "ended early" in r.getMessage()]
    assert record.levelname == "WARNING"
    line = record.getMessage()
    assert re.fullmatch(rf"camera gate: {re.escape(str(truncated))} ended early at frame \d+ of "
                        rf"{CLIP_FRAMES} \(truncated or damaged\)", line)
    assert f"frame {published} of" in line  # every decoded frame was published


# ----------------------------------------------------------------------------- vigil score


def test_score_skips_and_counts_corrupt_frames(registry: SceneRegistry, tmp_path: Path) -> None:
    folder = frame_folder(tmp_path / "frames", n=12, corrupt=(0, 7))  # the first one too
    out = tmp_path / "out"
    run = vigil("score", "--scene", TINY_SCENE, folder, "-o", out, "--registry", registry.root,
                "--no-video", "-q")
    assert run.code == 0, run.err
    report = json.loads(run.out)
    assert (report["frames"], report["skipped_corrupt"]) == (10, 2)
    with (out / "scores.csv").open() as fh:
        assert [int(row["seq"]) for row in csv.DictReader(fh)] == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "out"]  # no staging left


def test_score_failing_half_way_leaves_no_result(registry: SceneRegistry, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video, "FILE_MAX_BAD_PACKETS", 2)
    clip = damaged_clip(tmp_path / "damaged.mp4")
    fresh = tmp_path / "fresh"
    run = vigil("score", "--scene", TINY_SCENE, clip, "-o", fresh, "--registry", registry.root, "-q")
    assert run.code == 2
    assert one_error_line(run) == (f"vigil: error: video source {clip} is corrupt: 2 packets in a row "
                                   "failed to decode")
    assert not fresh.exists()
    # Into a folder with an older result: the older result stays as it was.
    older = tmp_path / "older"
    older.mkdir()
    (older / "scores.csv").write_text("seq,score,raw\n0,0.5,1.0\n")
    run = vigil("score", "--scene", TINY_SCENE, clip, "-o", older, "--registry", registry.root, "-q")
    assert run.code == 2
    assert [p.name for p in older.iterdir()] == ["scores.csv"]
    assert (older / "scores.csv").read_text() == "seq,score,raw\n0,0.5,1.0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.mp4", "older"]  # no staging left


def test_score_into_an_older_result_replaces_it_whole(registry: SceneRegistry, tmp_path: Path) -> None:
    folder = frame_folder(tmp_path / "frames", n=4)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("scores.csv", "overlay.mp4", "notes.txt"):
        (out / name).write_text("older")
    run = vigil("score", "--scene", TINY_SCENE, folder, "-o", out, "--registry", registry.root,
                "--no-video", "-q")
    assert run.code == 0, run.err
    # the older overlay is not this run's: gone; the user's own file is left alone
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "scores.csv", "timeline.png"]
    assert (out / "scores.csv").read_text().startswith("seq,score,raw\n0,")


def test_score_into_a_file_exits_2(registry: SceneRegistry, tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file")
    run = vigil("score", "--scene", TINY_SCENE, CLIP, "-o", tmp_path / "out", "--registry", registry.root,
                "-q")
    assert run.code == 2
    assert one_error_line(run) == f"vigil: error: output folder {tmp_path / 'out'} is a file"


# ----------------------------------------------------------------------------- errors that point right


def test_encoder_without_weights_names_the_config_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("encoder:\n  name: resnet18\n")
    run = vigil("--config", config, "train", "--scene", "x", "--videos", CLIP, "--registry", tmp_path, "-q")
    assert run.code == 2
    assert one_error_line(run) == (
        "vigil: error: encoder 'resnet18' needs a weights file (config key encoder.weights, or "
        "--encoder-weights): no pretrained weights ship with it and random weights are never used")


def test_demo_records_a_real_latency(registry: SceneRegistry, tmp_path: Path) -> None:
    """The demo's stream: ``latency_ms`` is capture to score, not milliseconds since 1970."""
    registry_copy(registry, tmp_path / "scenes")
    short = tmp_path / "short.mp4"
    with VideoWriter(short, 10, 256, 192) as writer:
        for frame in iter_video_frames(CLIP, max_frames=12):
            writer.write(frame.image)
    cfg = stream_config(VigilConfig(detector=DETECTOR), tmp_path, short)
    with Pipeline(cfg, ("ingest", "detect", "record")) as pipeline:
        assert pipeline.wait(timeout=120)
    with (tmp_path / "scores" / "demo-cam.csv").open() as fh:
        latency = [float(row["latency_ms"]) for row in csv.DictReader(fh)]
    assert len(latency) == 12
    assert all(0 <= ms < 60_000 for ms in latency), latency

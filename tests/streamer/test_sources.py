"""Camera sources: config, replays of the test clip and frame folders, and RTSP against a real server."""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from common.config import Strict
from common.ids import SCENE_ID_RULE
from streamer.camera import CameraConfig
from streamer.sources import (
    CapturedFrame,
    FileSource,
    FpsSampler,
    FrameDirSource,
    RtspSource,
    SourceError,
    open_source,
)
from tests.rtsp import RtspStream, free_tcp_port
from vigil.config import ConfigError, parse_config

CLIP = Path(__file__).resolve().parents[2] / "vigil" / "data" / "campus_clip.mp4"  # 120 frames, 10 fps
START_MS = 1_700_000_000_000


def clip_camera(**kw: object) -> CameraConfig:
    return CameraConfig(id="cam1", url=str(CLIP), scene="01", replay_start_ms=START_MS, **kw)


def take(source: FileSource | FrameDirSource | RtspSource, n: int) -> list[CapturedFrame]:
    frames = iter(source)
    try:
        return list(itertools.islice(frames, n))
    finally:
        frames.close()  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- config


def test_camera_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError, match="bogus"):
        CameraConfig(id="cam1", url=str(CLIP), scene="01", bogus=1)  # type: ignore[call-arg]
    for bad in ("", "cam 1", "cam/1", "-cam", "x" * 129):
        with pytest.raises(ValidationError):
            CameraConfig(id=bad, url=str(CLIP), scene="01")
    with pytest.raises(ValidationError):
        CameraConfig(id="cam1", url=str(CLIP), scene="01", fps=0)
    with pytest.raises(ValidationError):
        CameraConfig(id="cam1", url=str(CLIP), scene="01", resize=(0, 10))
    with pytest.raises(ValidationError):
        CameraConfig(id="cam1", url=str(CLIP), scene="01", reconnect_initial_s=5, reconnect_max_s=1)


BAD_SCENES = ["a/b", "../x", "s" * 70]


@pytest.mark.parametrize("scene", BAD_SCENES, ids=["slash", "dotdot", "70-chars"])
def test_camera_config_refuses_a_bad_scene_and_names_the_camera(scene: str) -> None:
    with pytest.raises(ValidationError) as err:
        CameraConfig(id="gate-1", url="rtsp://10.0.0.5/s", scene=scene)
    (only,) = err.value.errors()
    assert only["loc"] == ("scene",)
    assert only["msg"] == f"Value error, camera 'gate-1': scene must be {SCENE_ID_RULE}, got {scene!r}"


@pytest.mark.parametrize("scene", BAD_SCENES, ids=["slash", "dotdot", "70-chars"])
def test_config_file_refuses_a_bad_scene_and_names_the_camera(scene: str) -> None:
    cameras = [{"id": "gate-0", "url": "rtsp://10.0.0.4/s", "scene": "01"},
               {"id": "gate-1", "url": "rtsp://10.0.0.5/s", "scene": scene}]
    with pytest.raises(ConfigError) as err:
        parse_config({"cameras": cameras})
    assert str(err.value) == (f"config: cameras.1.scene: Value error, camera 'gate-1': "
                              f"scene must be {SCENE_ID_RULE}, got {scene!r}")


def test_camera_config_bad_id_and_scene_are_both_reported() -> None:
    with pytest.raises(ValidationError) as err:
        CameraConfig(id="gate 1", url="rtsp://10.0.0.5/s", scene="../x")
    assert [e["loc"] for e in err.value.errors()] == [("id",), ("scene",)]
    assert err.value.errors()[1]["msg"] == f"Value error, scene must be {SCENE_ID_RULE}, got '../x'"


def test_camera_config_is_strict() -> None:
    assert issubclass(CameraConfig, Strict)
    config = CameraConfig.model_config
    assert config["extra"] == "forbid" and config["hide_input_in_errors"] is True
    assert CameraConfig(id="c", url=str(CLIP), scene="s" * 64).scene == "s" * 64  # the longest id


def test_camera_config_kinds(tmp_path: Path) -> None:
    live = CameraConfig(id="gate-1", url="rtsp://10.0.0.5:554/stream1", scene="01")
    assert (live.kind, live.source, live.transport) == ("rtsp", "live", "tcp")
    assert clip_camera().kind == "file" and clip_camera().source == "replay"
    folder = CameraConfig(id="stc.01_0014", url=str(tmp_path), scene="01")
    assert (folder.kind, folder.source) == ("frames", "replay")
    assert CameraConfig(id="c", url="http://example/x.mp4", scene="01", kind="file").kind == "file"
    with pytest.raises(ValidationError, match="set kind"):
        CameraConfig(id="c", url="http://example/x.mp4", scene="01")


def test_camera_config_redacts_credentials() -> None:
    cam = CameraConfig(id="cam1", url="rtsp://admin:hunter2@10.0.0.5/stream?token=abc123", scene="01")
    for text in (repr(cam), str(cam), cam.display_url, repr(RtspSource(cam))):
        assert "hunter2" not in text and "abc123" not in text
        assert "rtsp://***@10.0.0.5/stream" in text
    assert cam.url.startswith("rtsp://admin:hunter2@")  # the real URL is still there to connect with
    # validation errors never echo the input
    with pytest.raises(ValidationError) as err:
        CameraConfig(id="cam 1", url="rtsp://admin:hunter2@10.0.0.5/s", scene="01", fps=-1)
    assert "hunter2" not in str(err.value)
    with pytest.raises(ValidationError) as err:
        CameraConfig(id="cam1", url="http://admin:hunter2@10.0.0.5/s", scene="01")
    assert "hunter2" not in str(err.value) and "***" in str(err.value)


# ----------------------------------------------------------------------------- sampling, back-off


def test_fps_sampler() -> None:
    keep = FpsSampler(5.0).keep
    assert [t for t in range(0, 2000, 100) if keep(t)] == list(range(0, 2000, 200))
    keep = FpsSampler(10.0).keep  # 25 -> 10 fps: about 10 per second, never two within 80 ms
    kept = [t for t in range(0, 10_000, 40) if keep(t)]
    assert 98 <= len(kept) <= 101 and min(np.diff(kept)) >= 80
    sampler = FpsSampler(5.0)
    assert sampler.keep(5000) and not sampler.keep(5100)
    assert sampler.keep(0)  # the source restarted: start over
    assert all(FpsSampler(None).keep(t) for t in (0, 0, 1))


# ----------------------------------------------------------------------------- file and folder replays


def test_file_source_fast_reads_every_frame_in_order() -> None:
    started = time.monotonic()
    frames = list(open_source(clip_camera()))
    elapsed = time.monotonic() - started
    assert [f.seq for f in frames] == list(range(120))
    assert [f.ts_ms for f in frames] == [START_MS + 100 * i for i in range(120)]
    assert frames[0].image.shape == (192, 256, 3) and frames[0].image.dtype == np.uint8
    assert not any(f.warmup for f in frames) and all(f.reconnects == 0 for f in frames)
    assert elapsed < 8.0  # 12 s of video, read as fast as possible


def test_file_source_paced_runs_at_native_rate() -> None:
    started = time.monotonic()
    paced = take(open_source(clip_camera(realtime=True)), 11)  # 0 .. 1000 ms of media
    paced_s = time.monotonic() - started
    started = time.monotonic()
    fast = take(open_source(clip_camera()), 11)
    fast_s = time.monotonic() - started
    assert [f.seq for f in paced] == [f.seq for f in fast] == list(range(11))
    assert 0.9 <= paced_s < 3.0
    assert fast_s < paced_s


def test_file_source_samples_to_analysis_fps_and_resizes() -> None:
    frames = list(open_source(clip_camera(fps=5, resize=(128, 96))))
    assert len(frames) == 60  # 10 fps -> 5 fps halves the frames
    assert [f.seq for f in frames] == list(range(0, 120, 2))
    assert all(b.ts_ms - a.ts_ms == 200 for a, b in itertools.pairwise(frames))
    assert {f.image.shape for f in frames} == {(96, 128, 3)}


def test_file_source_loop_keeps_seq_and_time_increasing() -> None:
    frames = take(open_source(clip_camera(fps=5, loop=True)), 130)  # more than two passes of 60
    seqs = [f.seq for f in frames]
    assert seqs == list(range(0, 260, 2))  # the second pass continues at 120
    assert all(b.ts_ms - a.ts_ms == 200 for a, b in itertools.pairwise(frames))


def test_replay_time_base_defaults_to_wall_clock() -> None:
    before = int(time.time() * 1000)
    first = take(open_source(CameraConfig(id="cam1", url=str(CLIP), scene="01")), 2)
    assert before <= first[0].ts_ms <= int(time.time() * 1000)
    assert first[1].ts_ms - first[0].ts_ms == 100


def _write_frames(folder: Path, indices: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in indices:
        image = np.full((48, 64, 3), i * 10 % 256, dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"{i:03d}.jpg"), image)


def test_frame_dir_source_seq_from_names(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "01_0014"
    _write_frames(folder, [0, 1, 2, 3, 5, 6, 8])
    (folder / "007.jpg").write_bytes(b"not a jpeg")  # unreadable: logged and skipped
    (folder / "notes.txt").write_text("ignored")
    cam = CameraConfig(id="stc-01_0014", url=str(folder), scene="01", replay_start_ms=0, resize=(32, 24))
    source = open_source(cam)
    assert isinstance(source, FrameDirSource)
    with caplog.at_level(logging.WARNING):
        frames = list(source)
    assert [f.seq for f in frames] == [0, 1, 2, 3, 5, 6, 8]
    assert [f.ts_ms for f in frames] == [i * 40 for i in (0, 1, 2, 3, 5, 6, 8)]  # 25 fps for folders
    assert {f.image.shape for f in frames} == {(24, 32, 3)}
    assert "stc-01_0014" in caplog.text and "007.jpg" in caplog.text


def test_frame_dir_source_passes_jpeg_files_on_undecoded(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Replayed at their own size, JPEG files go on as their own bytes and are only checked
    (a decode at 1/8 scale); a corrupt one is still logged and skipped."""
    folder = tmp_path / "01_0001"
    _write_frames(folder, [0, 1, 2])
    good = (folder / "001.jpg").read_bytes()
    (folder / "002.jpg").write_bytes(good[: len(good) // 3])  # truncated inside the image data
    (folder / "003.jpg").write_bytes(good[:10])  # truncated before the frame header
    full_decodes: list[int] = []
    real_imdecode = cv2.imdecode

    def counting_imdecode(buf: np.ndarray, flags: int) -> np.ndarray | None:
        if flags == cv2.IMREAD_COLOR:
            full_decodes.append(flags)
        return real_imdecode(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", counting_imdecode)
    cam = CameraConfig(id="stc", url=str(folder), scene="01", replay_start_ms=0)
    with caplog.at_level(logging.WARNING):
        frames = list(open_source(cam))
    assert full_decodes == []
    assert [f.seq for f in frames] == [0, 1]
    assert frames[1].jpeg == good and frames[1].decoded is None
    assert frames[1].size == (64, 48)
    assert frames[1].image.shape == (48, 64, 3) and abs(float(frames[1].image.mean()) - 10) < 3
    assert "002.jpg" in caplog.text and "003.jpg" in caplog.text


def test_frame_dir_source_loop_and_sampling(tmp_path: Path) -> None:
    _write_frames(tmp_path / "f", list(range(10)))
    cam = CameraConfig(id="c", url=str(tmp_path / "f"), scene="01", replay_start_ms=0, loop=True, fps=12.5)
    frames = take(open_source(cam), 12)
    assert [f.seq for f in frames] == list(range(0, 24, 2))  # pass 2 continues at seq 10
    assert [f.ts_ms for f in frames] == list(range(0, 24 * 40, 80))


def test_missing_replay_raises_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cam9"):
        open_source(CameraConfig(id="cam9", url=str(tmp_path / "nope.mp4"), scene="01"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="empty"):
        open_source(CameraConfig(id="cam9", url=str(tmp_path / "empty"), scene="01"))


def test_stop_ends_a_looping_replay_promptly() -> None:
    stop = threading.Event()
    source = open_source(clip_camera(loop=True, realtime=True), stop)
    got: list[int] = []

    def read() -> None:
        for frame in source:
            got.append(frame.seq)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.5)
    stop.set()
    reader.join(timeout=2.0)
    assert not reader.is_alive() and 2 <= len(got) <= 10


# ----------------------------------------------------------------------------- RTSP (real server)


def rtsp_camera(url: str, **kw: object) -> CameraConfig:
    settings: dict[str, object] = dict(transport="udp", open_timeout_s=5, read_timeout_s=1, watchdog_s=2,
                                       reconnect_initial_s=0.2, reconnect_max_s=1, warmup_frames=3)
    settings.update(kw)
    return CameraConfig(id="gate", url=url, scene="01", **settings)  # type: ignore[arg-type]


def test_rtsp_source_reads_frames(rtsp_stream: RtspStream) -> None:
    source = open_source(rtsp_camera(rtsp_stream.url, resize=(128, 96)))
    assert isinstance(source, RtspSource) and source.live and source.source_type == "live"
    before = int(time.time() * 1000)
    frames = take(source, 8)
    assert [f.seq for f in frames] == list(range(8))
    assert [f.warmup for f in frames] == [True] * 3 + [False] * 5
    assert {f.image.shape for f in frames} == {(96, 128, 3)}
    assert all(before <= f.ts_ms <= int(time.time() * 1000) for f in frames)
    assert all(a.ts_ms <= b.ts_ms for a, b in itertools.pairwise(frames))
    assert float(frames[-1].image.std()) > 5.0  # a real picture, not a blank frame


def test_rtsp_source_reconnects_after_publisher_restart(rtsp_stream: RtspStream) -> None:
    stop = threading.Event()
    events: list[tuple[int, float, str]] = []
    source = RtspSource(rtsp_camera(rtsp_stream.url), stop, on_reconnect=lambda *e: events.append(e))
    frames: list[CapturedFrame] = []

    def read() -> None:
        for frame in source:
            frames.append(frame)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        _wait_for(lambda: len(frames) >= 10, 15, "first frames from RTSP")
        rtsp_stream.stop()
        _wait_for(lambda: source.reconnects >= 1, 10, "the source to notice the lost stream")
        before_restart = len(frames)
        rtsp_stream.start()
        _wait_for(lambda: len(frames) >= before_restart + 10, 20, "frames after the publisher restarted")
    finally:
        stop.set()
        reader.join(timeout=5)
    assert not reader.is_alive()
    after = [f for f in frames if f.reconnects >= 1]
    assert after and after[0].warmup and [f.warmup for f in after[:4]] == [True, True, True, False]
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs)) and after[0].seq > frames[before_restart - 1].seq
    assert events and events[0][0] == 1 and "lost" in events[0][2]


def test_rtsp_dead_url_retries_with_backoff_and_stops(caplog: pytest.LogCaptureFixture) -> None:
    port = free_tcp_port()  # nothing listens there
    stop = threading.Event()
    delays: list[float] = []
    cam = rtsp_camera(f"rtsp://viewer:s3cret@127.0.0.1:{port}/cam", reconnect_initial_s=0.05,
                      reconnect_max_s=0.2)
    source = RtspSource(cam, stop, on_reconnect=lambda attempt, delay, why: delays.append(delay))
    got: list[CapturedFrame] = []
    reader = threading.Thread(target=lambda: got.extend(source), daemon=True)
    with caplog.at_level(logging.INFO, logger="streamer.sources"):
        reader.start()
        _wait_for(lambda: len(delays) >= 6, 10, "six reconnect attempts")
        assert reader.is_alive()  # still retrying, not crashed
        stopped = time.monotonic()
        stop.set()
        reader.join(timeout=2.0)
    assert not reader.is_alive() and time.monotonic() - stopped < 1.5
    assert not got and source.reconnects >= 6
    assert delays[:4] == [0.05, 0.1, 0.2, 0.2] and max(delays) == 0.2
    assert "gate" in caplog.text and "reconnecting" in caplog.text
    assert "s3cret" not in caplog.text and "***@127.0.0.1" in caplog.text


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def test_a_file_that_is_no_video_is_refused_when_the_source_is_made(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(SourceError, match=rf"^camera cam9: cannot open video source {re.escape(str(text))}: "
                                          r"not a video or unreadable \("):
        open_source(CameraConfig(id="cam9", url=str(text), scene="01"))


def test_a_truncated_file_plays_what_it_has_and_says_it_ended_early(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    cut = tmp_path / "cut.mp4"
    data = CLIP.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    source = open_source(CameraConfig(id="cam9", url=str(cut), scene="01", replay_start_ms=0))
    with caplog.at_level(logging.WARNING, logger="streamer"):
        frames = list(source)
    assert 0 < len(frames) < 120
    assert (f"camera cam9: {cut} ended early at frame {len(frames)} of 120 (truncated or damaged)"
            in caplog.text)
    assert source.frames_skipped == 1  # the last, partial packet does not decode

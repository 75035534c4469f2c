"""A camera's learning period: provisional scores, a raise-only threshold from its own
footage, per camera and checkpoint, kept across restarts."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from common.bus import InProcessBus
from common.messages import FRAMES_TOPIC, FrameMessage
from detector.learning import LearnedThreshold, LearningPeriod, SiteStore, learn_threshold
from detector.settings import DetectorSettings, LearningSettings
from tests.conftest import TINY_SCENE
from tests.detector.test_worker import drain, make_worker, scores_of

T0 = 1_700_000_000_000
FAR = 0.001


def feed(lp: LearningPeriod, scores, camera: str = "cam", model: str = "01:cflow:aaa", fps: float = 10.0,
         first_seq: int = 0) -> list[tuple[float, bool]]:
    return [lp.observe(camera, model, first_seq + i, T0 + int((first_seq + i) * 1000 / fps), s, FAR)
            for i, s in enumerate(scores)]


def test_scores_are_provisional_until_the_period_and_its_frames_are_over() -> None:
    lp = LearningPeriod(LearningSettings(seconds=10.0, min_frames=150))
    out = feed(lp, np.zeros(200))  # 10 fps: 10 s pass at frame 100, 150 frames at frame 149
    flags = [p for _s, p in out]
    assert flags[:149] == [True] * 149 and flags[149:] == [False] * 51


def test_a_busier_camera_gets_a_higher_threshold_a_quieter_one_keeps_the_checkpoints() -> None:
    rng = np.random.default_rng(0)
    settings = LearningSettings(seconds=30.0, min_frames=100)
    lp = LearningPeriod(settings)
    busy = rng.normal(1.0, 0.5, 600)  # a camera whose normal footage often reaches 1.0
    quiet = rng.normal(-0.5, 0.1, 600)
    out_busy = feed(lp, busy, camera="busy")
    out_quiet = feed(lp, quiet, camera="quiet")
    scale_busy, scale_quiet = out_busy[-1][0], out_quiet[-1][0]
    assert scale_quiet == 1.0  # raise-only: never lowered
    fitted = lp.learned[("busy", "01:cflow:aaa")]
    assert scale_busy == fitted.scale == fitted.fitted > 2.0
    lo, hi = fitted.interval
    assert lo <= fitted.fitted <= hi
    # On more of the busy camera's footage, the learned threshold keeps (about) its promise.
    later = rng.normal(1.0, 0.5, 20_000) / scale_busy
    assert float((later >= 1.0).mean()) < 3 * FAR


def test_state_is_per_camera_and_per_checkpoint() -> None:
    lp = LearningPeriod(LearningSettings(seconds=5.0, min_frames=10))
    feed(lp, np.full(60, 3.0) + np.linspace(0, 0.1, 60), camera="a")
    assert lp.observe("a", "01:cflow:aaa", 100, T0 + 10_000, 0.0, FAR)[1] is False
    # another camera, and the same camera with a new checkpoint, learn on their own
    assert lp.observe("b", "01:cflow:aaa", 0, T0, 0.0, FAR) == (1.0, True)
    assert lp.observe("a", "01:cflow:bbb", 101, T0 + 10_100, 0.0, FAR) == (1.0, True)


def test_redelivered_frames_are_not_counted_twice() -> None:
    lp = LearningPeriod(LearningSettings(seconds=1000.0, min_frames=20))
    feed(lp, np.zeros(10))
    feed(lp, np.zeros(10))  # the same seqs again (an at-least-once redelivery)
    assert len(lp._learning[("cam", "01:cflow:aaa")].scores) == 10


def test_off_by_default() -> None:
    lp = LearningPeriod(DetectorSettings().learning)
    assert not lp.enabled and lp.observe("cam", "m", 0, T0, 5.0, FAR) == (1.0, False)


def test_learned_threshold_survives_a_restart(tmp_path) -> None:
    settings = LearningSettings(seconds=5.0, min_frames=10, state_dir=tmp_path)
    first = LearningPeriod(settings, SiteStore(tmp_path))
    scale = feed(first, np.linspace(0, 4, 60))[-1][0]
    assert scale > 1.0
    files = list(tmp_path.rglob("*.json"))
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["cam/01_cflow_aaa.json"]
    again = LearningPeriod(settings, SiteStore(tmp_path))
    assert again.observe("cam", "01:cflow:aaa", 500, T0 + 50_000, 2.0, FAR) == (scale, False)


def test_a_damaged_state_file_is_ignored_loudly_and_learned_again(tmp_path, caplog) -> None:
    store = SiteStore(tmp_path)
    store.path("cam", "01:cflow:aaa").parent.mkdir(parents=True)
    store.path("cam", "01:cflow:aaa").write_text("{not json")
    lp = LearningPeriod(LearningSettings(seconds=5.0, min_frames=10), store)
    with caplog.at_level(logging.ERROR):
        assert lp.observe("cam", "01:cflow:aaa", 0, T0, 0.0, FAR) == (1.0, True)
    assert "unreadable learned threshold" in caplog.text
    # a file of another camera's result (copied by hand) is refused too
    other = learn_threshold("other", "01:cflow:aaa", np.linspace(0, 4, 60), 6.0, FAR)
    store.path("cam", "01:cflow:aaa").write_text(json.dumps(other.to_json()))
    assert store.load("cam", "01:cflow:aaa") is None


def test_a_failed_save_keeps_the_threshold_in_memory(tmp_path, caplog) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("x")  # a file where the camera's folder should go: mkdir fails
    lp = LearningPeriod(LearningSettings(seconds=5.0, min_frames=10), SiteStore(blocked))
    with caplog.at_level(logging.ERROR):
        scale = feed(lp, np.linspace(0, 4, 60))[-1][0]
    assert scale > 1.0 and lp.save_failures == 1
    assert "cannot keep camera cam's learned threshold" in caplog.text
    assert lp.observe("cam", "01:cflow:aaa", 100, T0 + 20_000, 1.0, FAR) == (scale, False)


def test_learned_threshold_json_round_trip() -> None:
    t = LearnedThreshold("cam", "01:cflow:aaa", 1.5, 1.5, (1.2, 1.9), "empirical", 600, 60.0)
    assert LearnedThreshold.from_json(json.loads(json.dumps(t.to_json()))) == t


def test_the_detector_publishes_provisional_scores_then_scaled_ones(encoder, registry, clip_frames,
                                                                      tmp_path) -> None:
    # Frames at 2 fps: a 5-second period of at least 8 frames ends at the 11th frame (seq 10).
    bus = InProcessBus()
    producer = bus.producer()
    frames = clip_frames[:30]
    for seq, image in enumerate(frames):
        msg = FrameMessage.from_image(image, camera="cam", scene=TINY_SCENE, seq=seq, ts=T0 + seq * 500,
                                      source="replay")
        producer.send(FRAMES_TOPIC, *msg.to_record())
    worker, metrics = make_worker(bus, encoder, registry,
                                  learning={"seconds": 5.0, "min_frames": 8, "state_dir": str(tmp_path)})
    drain(worker)
    learned_scores = scores_of(bus)
    assert [s.provisional for s in learned_scores] == [True] * 10 + [False] * 20
    (learned,) = worker.scorer.learning.learned.values()
    assert learned.frames == 11 and learned.scale >= 1.0
    assert metrics.provisional.labels("cam")._value.get() == 10

    # Without a learning period, the same frames score scale times higher after the period.
    plain_bus = InProcessBus()
    plain_producer = plain_bus.producer()
    for seq, image in enumerate(frames):
        msg = FrameMessage.from_image(image, camera="cam", scene=TINY_SCENE, seq=seq, ts=T0 + seq * 500,
                                      source="replay")
        plain_producer.send(FRAMES_TOPIC, *msg.to_record())
    plain, _ = make_worker(plain_bus, encoder, registry)
    drain(plain)
    plain_scores = scores_of(plain_bus)
    assert not any(s.provisional for s in plain_scores)
    for a, b in zip(learned_scores, plain_scores, strict=True):
        expected = b.score if a.provisional else b.score / learned.scale
        assert a.score == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert a.raw == b.raw

    # A restarted worker with the same state folder is not provisional for this camera.
    again_bus = InProcessBus()
    msg = FrameMessage.from_image(frames[0], camera="cam", scene=TINY_SCENE, seq=100, ts=T0 + 60_000,
                                  source="replay")
    again_bus.producer().send(FRAMES_TOPIC, *msg.to_record())
    again, _ = make_worker(again_bus, encoder, registry,
                           learning={"seconds": 5.0, "min_frames": 8, "state_dir": str(tmp_path)})
    drain(again)
    (score,) = scores_of(again_bus)
    assert not score.provisional

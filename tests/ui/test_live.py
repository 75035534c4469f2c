"""The camera tiles' state (:class:`ui.live.LiveView`) and its feed from the bus."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
from prometheus_client import CollectorRegistry

from common.bus import InProcessBus
from common.messages import FRAMES_TOPIC, SCORES_TOPIC, FrameMessage, ScoreMessage
from ui.live import LiveFeed, LiveView

T0 = 1_700_000_000_000


def frame(camera: str, seq: int, ts: int | None = None, value: int = 90) -> FrameMessage:
    image = np.full((48, 64, 3), value, np.uint8)
    return FrameMessage.from_image(image, camera=camera, scene="01", seq=seq, ts=T0 + seq * 100 if ts is None
                                   else ts, source="live")


def score(camera: str, seq: int, value: float, ts: int | None = None) -> ScoreMessage:
    amap = np.zeros((12, 16), np.float32)
    amap[4:8, 6:10] = value
    return ScoreMessage(camera=camera, scene="01", seq=seq, ts=T0 + seq * 100 if ts is None else ts,
                        source="live", score=value, raw=value, model="01:cflow:abc", latency_ms=5.0,
                        anomaly_map=amap)


def test_frames_and_scores_join_in_either_order_and_the_tile_shows_the_overlay() -> None:
    view = LiveView(history_s=60)
    view.add_score(score("gate", 1, 0.2))  # the score before its frame
    view.add_frame(frame("gate", 1))
    view.add_frame(frame("gate", 2))
    view.add_score(score("gate", 2, 3.0))
    [cam] = view.cameras()
    assert cam["camera"] == "gate" and cam["seq"] == 2 and cam["score"] == 3.0 and cam["tile"]
    assert cam["seconds_since_frame"] is not None and "url" not in cam
    tile = cv2.imdecode(np.frombuffer(view.tile("gate"), np.uint8), cv2.IMREAD_COLOR)
    assert tile.shape == (48, 64, 3)
    assert not np.all(tile == tile[0, 0])  # the heat overlay (and its score label) is drawn
    assert view.tile("gate") == view.tile("gate")  # drawn once per frame
    assert view.tile("nobody") is None and view.points("nobody") == []


def test_the_score_line_keeps_the_last_history_seconds_in_order() -> None:
    view = LiveView(history_s=10)
    for seq in range(0, 300):  # 30 s at 10 fps
        view.add_score(score("gate", seq, 0.5))
    view.add_score(score("gate", 100, 9.0))  # a redelivered old score: not drawn again
    points = view.points("gate")
    assert points[-1] == (T0 + 299 * 100, 0.5) and points[0][0] >= T0 + 299 * 100 - 10_000
    assert all(a[0] < b[0] for a, b in zip(points, points[1:], strict=False))


def test_cameras_are_bounded_and_never_mixed() -> None:
    view = LiveView(max_cameras=3)
    for i in range(5):
        view.add_frame(frame(f"cam{i}", 1, value=40 * i))
        view.add_score(score(f"cam{i}", 1, float(i)))
    assert [c["camera"] for c in view.cameras()] == ["cam2", "cam3", "cam4"]
    assert {c["camera"]: c["score"] for c in view.cameras()} == {"cam2": 2.0, "cam3": 3.0, "cam4": 4.0}


def test_the_feed_skips_garbage_and_keeps_going() -> None:
    bus = InProcessBus(partitions=1)
    bus.ensure_topics([FRAMES_TOPIC, SCORES_TOPIC])
    producer = bus.producer()
    producer.send(FRAMES_TOPIC, b"gate", b"not a jpeg", [("schema", b"1")])
    producer.send(SCORES_TOPIC, b"gate", b"\x00\x00\x00\x05garbage")
    for topic, msg in ((FRAMES_TOPIC, frame("gate", 1)), (SCORES_TOPIC, score("gate", 1, 1.5))):
        producer.send(topic, *msg.to_record())
    producer.flush()
    view, stop, registry = LiveView(), threading.Event(), CollectorRegistry()
    feed = LiveFeed(bus.consumer("vigil-ui", [FRAMES_TOPIC, SCORES_TOPIC]), view, stop, registry).start()
    deadline = time.monotonic() + 10
    while not view.cameras() or view.cameras()[0]["score"] is None:
        assert time.monotonic() < deadline and feed.alive
        time.sleep(0.05)
    stop.set()
    feed.join(5)
    assert view.cameras()[0]["score"] == 1.5 and feed.error is None
    assert registry.get_sample_value("vigil_ui_records_skipped_total", {"reason": "bad_message"}) == 2

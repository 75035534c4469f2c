"""The frame ring buffer's caps and the region box of an anomaly map."""

from __future__ import annotations

import numpy as np
import pytest

from alerting.clip import estimate_fps
from alerting.region import hot_region
from alerting.ring import FrameRing, RingEntry


def entry(seq: int, size: int = 100, ts_step: int = 100) -> RingEntry:
    return RingEntry(seq, 1000 + seq * ts_step, 64, 48, b"\xff\xd8\xff" + b"x" * (size - 3))


def test_ring_caps_frames_and_bytes() -> None:
    ring = FrameRing(max_frames=5, max_bytes=10_000)
    for seq in range(8):
        ring.add(entry(seq))
    assert len(ring) == 5 and ring.oldest_seq == 3 and ring.bytes == 500
    small = FrameRing(max_frames=100, max_bytes=350)
    evicted = []
    for seq in range(6):
        evicted += small.add(entry(seq))[1]
    assert [e.seq for e in evicted] == [0, 1, 2] and small.bytes == 300 and small.bytes <= small.max_bytes
    # a map attached to a frame counts too
    got, out = small.attach(5, 1.5, np.zeros((8, 8), np.float32), "m")
    assert got is not None and got.score == 1.5 and [e.seq for e in out] == [3, 4]
    assert small.bytes == 100 + 256


def test_ring_ignores_redelivered_frames_and_selects_pre_roll() -> None:
    ring = FrameRing(max_frames=50, max_bytes=10**6)
    for seq in range(0, 20, 2):
        ring.add(entry(seq))
    assert ring.add(entry(10)) == (False, [])  # held already
    assert ring.add(entry(7)) == (False, [])  # older than the newest: a redelivery
    assert [e.seq for e in ring.since_ts(1000 + 1000, 16)] == [10, 12, 14, 16]
    assert [e.seq for e in ring.between(3, 9)] == [4, 6, 8]
    assert ring.attach(99, 1.0, None, "m") == (None, [])
    assert estimate_fps(list(ring.between(0, 18))) == pytest.approx(5.0)


def test_region_is_the_largest_hot_area_scaled_to_the_frame() -> None:
    amap = np.zeros((32, 32), np.float32)
    amap[10:14, 20:28] = 1.5  # the large hot area
    amap[2, 2] = 3.0  # a hotter speck
    r = hot_region(amap, 256, 192)
    assert r is not None and r.as_list() == [160, 60, 224, 84] and (r.width, r.height) == (256, 192)
    # nothing reaches the level: the top 1 % is outlined instead
    cool = np.zeros((32, 32), np.float32)
    cool[5:8, 5:8] = 0.6
    r2 = hot_region(cool, 320, 320)
    assert r2 is not None and r2.as_list() == [50, 50, 80, 80]
    assert hot_region(np.zeros((8, 8), np.float32), 64, 64) is None
    assert hot_region(np.full((8, 8), np.nan, np.float32), 64, 64) is None

"""Hypothesis strategies of poison records: what a broken, truncated or hostile producer could
put on ``vigil.frames`` and ``vigil.scores`` (random bytes, truncated valid records, wrong
types and huge values in headers and JSON fields, JPEG bombs), and the helpers the poison
tests of every consumer share."""

from __future__ import annotations

import json
import struct

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from common.messages import FrameMessage, ScoreMessage, encode_jpeg

#: Modest and fast: every consumer's poison test runs these many examples.
POISON_SETTINGS = settings(max_examples=50, deadline=None, database=None,
                           suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

T0 = 1_700_000_000_000
HUGE_INT = b"9" * 5000  # past Python's int-from-text limit: int() raises a plain ValueError


def small_jpeg(seed: int = 0, width: int = 32, height: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_jpeg(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def jpeg_bomb(side: int = 30000) -> bytes:
    """A valid ~700-byte JPEG whose frame header declares ``side`` x ``side`` pixels: decoding
    it allocates gigabytes (OpenCV's own limit is 2**30 pixels)."""
    data = bytearray(small_jpeg())
    i = data.find(b"\xff\xc0")
    data[i + 5:i + 7] = side.to_bytes(2, "big")
    data[i + 7:i + 9] = side.to_bytes(2, "big")
    return bytes(data)


def frame_headers(camera: str, scene: str, seq: int, ts: int, width: int = 32, height: int = 24,
                  source: str = "replay") -> list[tuple[str, bytes]]:
    return [("schema", b"1"), ("camera", camera.encode()), ("scene", scene.encode()),
            ("seq", str(seq).encode()), ("ts", str(ts).encode()), ("source", source.encode()),
            ("width", str(width).encode()), ("height", str(height).encode())]


_NAMES = ("schema", "camera", "scene", "seq", "ts", "source", "width", "height")
_BAD_HEADER_VALUES = st.one_of(
    st.binary(max_size=24),
    st.sampled_from([HUGE_INT, b"-1", b"-" + HUGE_INT, b"1e3", b"0x10", b" 1", b"", b"\xff\xfe",
                     "\u0661\u0662".encode(), b"99", b"0", b"4294967296", b"NaN", b"live\x00",
                     b"../../etc", b"a/b", b"x" * 300, b"65535"]),
)


@st.composite
def frame_records(draw: st.DrawFn, camera: str = "poison", scene: str = "campus",
                  seq: int = 0) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """``(key, value, headers)`` of a frame record that is most likely broken."""
    jpeg = small_jpeg(draw(st.integers(0, 3)))
    headers = frame_headers(camera, scene, seq, T0 + seq)
    key: bytes | None = camera.encode()
    kind = draw(st.sampled_from(["random_value", "truncated", "flipped", "bad_header", "dropped_header",
                                 "duplicate_header", "random_headers", "bad_key", "bomb", "mismatch"]))
    value = jpeg
    if kind == "random_value":
        value = draw(st.one_of(st.binary(max_size=512),
                               st.binary(max_size=64).map(lambda b: b"\xff\xd8\xff" + b)))
    elif kind == "truncated":
        value = jpeg[:draw(st.integers(0, len(jpeg) - 1))]
    elif kind == "flipped":
        data = bytearray(jpeg)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        value = bytes(data)
    elif kind == "bad_header":
        i = draw(st.integers(0, len(headers) - 1))
        headers[i] = (headers[i][0], draw(_BAD_HEADER_VALUES))
    elif kind == "dropped_header":
        del headers[draw(st.integers(0, len(headers) - 1))]
    elif kind == "duplicate_header":
        headers.append(headers[draw(st.integers(0, len(headers) - 1))])
    elif kind == "random_headers":
        headers = draw(st.lists(st.tuples(st.one_of(st.sampled_from(_NAMES), st.text(max_size=8)),
                                          _BAD_HEADER_VALUES), max_size=10))
    elif kind == "bad_key":
        key = draw(st.one_of(st.none(), st.binary(max_size=16)))
    elif kind == "bomb":
        value = jpeg_bomb(draw(st.sampled_from([30000, 65535, 40000])))
    else:  # declared size far from the JPEG's
        i = _NAMES.index(draw(st.sampled_from(["width", "height"])))
        headers[i] = (headers[i][0], draw(st.sampled_from([b"1", b"65535", b"1000000000", HUGE_INT])))
    return key, value, headers


def score_value(header: dict, payload: bytes) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack(">I", len(head)) + head + payload


def valid_score_header(camera: str = "poison", seq: int = 0, scene: str = "campus") -> dict:
    return {"schema": 1, "camera": camera, "scene": scene, "seq": seq, "ts": T0 + seq, "source": "replay",
            "score": 0.5, "raw": 1.0, "model": "campus:cflow:0123456789ab", "latency_ms": 3.0,
            "map_shape": [4, 4], "map_encoding": "uint8", "map_lo": 0.0, "map_hi": 2.0}


_JSON_JUNK = st.one_of(
    st.none(), st.booleans(), st.text(max_size=12), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.sampled_from([10**400, -(10**30), 1e308, -1e308, 2**63, -1, 0, 1.5, "../x", "a/b", "", "x" * 300]),
)
_SCORE_FIELDS = ("schema", "camera", "scene", "seq", "ts", "source", "score", "raw", "model", "latency_ms",
                 "map_shape", "map_encoding", "map_lo", "map_hi")


@st.composite
def score_records(draw: st.DrawFn, camera: str = "poison", seq: int = 0,
                  scene: str = "campus") -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """``(key, value, headers)`` of a score record that is most likely broken."""
    header = valid_score_header(camera, seq, scene)
    payload = bytes(16)
    key: bytes | None = camera.encode()
    kind = draw(st.sampled_from(["random_value", "truncated", "wrong_type", "missing", "bad_payload",
                                 "not_object", "deep", "bad_key", "huge_map", "flipped"]))
    if kind == "random_value":
        return key, draw(st.binary(max_size=256)), []
    if kind == "truncated":
        value = score_value(header, payload)
        return key, value[:draw(st.integers(0, len(value) - 1))], []
    if kind == "flipped":
        data = bytearray(score_value(header, payload))
        for _ in range(draw(st.integers(1, 6))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return key, bytes(data), []
    if kind == "wrong_type":
        for name in draw(st.lists(st.sampled_from(_SCORE_FIELDS), min_size=1, max_size=3)):
            header[name] = draw(_JSON_JUNK)
    elif kind == "missing":
        del header[draw(st.sampled_from(_SCORE_FIELDS))]
    elif kind == "bad_payload":
        payload = draw(st.binary(max_size=40))
    elif kind == "not_object":
        head = json.dumps(draw(_JSON_JUNK)).encode()
        return key, struct.pack(">I", len(head)) + head, []
    elif kind == "deep":  # nesting past json's recursion limit: RecursionError, not ValueError
        head = b"[" * 100_000
        return key, struct.pack(">I", len(head)) + head, []
    elif kind == "bad_key":
        key = draw(st.one_of(st.none(), st.binary(max_size=16)))
    else:  # a map of a plausible shape whose values overflow the uint8 range or float16
        header.update(map_lo=-1e308, map_hi=1e308)
    return key, score_value(header, payload), []


def good_frame(image: np.ndarray, camera: str, seq: int, scene: str = "campus",
               ts: int | None = None) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return FrameMessage.from_image(image, camera=camera, scene=scene, seq=seq,
                                   ts=T0 + seq * 100 if ts is None else ts, source="replay").to_record()


def good_score(camera: str, seq: int, score: float = 0.3, scene: str = "campus",
               ts: int | None = None) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return ScoreMessage(camera=camera, scene=scene, seq=seq, ts=T0 + seq * 100 if ts is None else ts,
                        source="replay", score=score, raw=score, model="campus:cflow:0123456789ab",
                        latency_ms=1.0, anomaly_map=np.full((8, 8), score, np.float32)).to_record()


def total(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """Sum of a metric's samples (``name`` as exposed, e.g. ``..._total``) matching ``labels``."""
    out = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                out += sample.value
    return out


def by_label(registry: CollectorRegistry, name: str, label: str) -> dict[str, float]:
    """A metric's samples by the value of one label."""
    out: dict[str, float] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name:
                out[sample.labels[label]] = out.get(sample.labels[label], 0.0) + sample.value
    return out

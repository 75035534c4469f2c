"""Wire formats of the ``vigil.frames`` and ``vigil.scores`` topics.

See docs/architecture.md, "Message contracts".

Both messages carry the common envelope ``schema`` (integer version), ``camera``, ``scene``,
``seq`` (frame index within the source, monotonic), ``ts`` (capture time, epoch ms) and
``source`` (``"live"`` or ``"replay"``); the Kafka key of both is the camera id (UTF-8).

``vigil.frames`` (:class:`FrameMessage`)
    value: the JPEG bytes of the frame. Headers (UTF-8 text, integers in decimal):
    ``schema``, ``camera``, ``scene``, ``seq``, ``ts``, ``source``, ``width``, ``height``.
    Unknown extra headers (tracing, ...) are ignored; a repeated known header is an error.

``vigil.scores`` (:class:`ScoreMessage`)
    value: a compact binary record, no headers needed::

        offset 0      uint32, big-endian: N, the length of the JSON header in bytes
        offset 4      N bytes: UTF-8 JSON object (the header, see below)
        offset 4 + N  the anomaly map, row-major, H * W values:
                      map_encoding "uint8":   1 byte per value
                      map_encoding "float16": 2 bytes per value, little-endian IEEE half

    The JSON header holds the envelope plus ``score`` (calibrated, 1.0 = the scene's
    threshold), ``raw`` (model units), ``model`` (checkpoint id), ``latency_ms``,
    ``provisional`` (true while the camera's learning period runs: its threshold is still
    being learned; absent in records of older writers, read as false),
    ``map_shape`` ([H, W]), ``map_encoding`` and, for ``uint8``, ``map_lo``/``map_hi``:
    the value range used for quantisation. A map ``m`` is stored as
    ``q = round((clip(m, lo, hi) - lo) / (hi - lo) * 255)`` and read back as
    ``lo + q / 255 * (hi - lo)``, with ``lo = min(0, min(m))`` and
    ``hi = max(2, max(m))`` (:data:`UINT8_MIN_HI`). Calibrated maps put the scene's normal
    median at 0 and its threshold at 1, so a typical map keeps a resolution of 2/255 around
    the threshold, and neither a hot map nor a "more normal than the median" region is ever
    clipped; the round-trip error is at most ``(hi - lo) / 510``
    (:meth:`ScoreMessage.quantisation_error`). ``float16`` keeps about 3 significant digits
    (relative error <= 2**-11) and is limited to ``|m| <= 65504``.

Ids follow :mod:`common.ids`: a ``camera`` outside the camera-id rule raises
:class:`BadCameraIdError`, a ``scene`` outside the scene-id rule :class:`BadSceneIdError`
(both :class:`MessageError`). Integers (``schema``, ``seq``, ``ts``, ``width``, ``height``)
fit a signed 64-bit integer (:data:`MAX_INT`); ``map_lo``/``map_hi`` and every map value fit
float32.

Anything that cannot be parsed raises :class:`MessageError` (a :class:`ValueError`) whose
text names what was wrong, so a consumer can log it, count it and move on -- whatever the
bytes: over-long digit strings, numbers beyond float range and JSON nested past Python's
recursion limit included. Constructing a message with invalid fields raises the same error.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from common.ids import CAMERA_ID_RULE, SCENE_ID_RULE, is_camera_id, is_scene_id

__all__ = [
    "FRAMES_TOPIC",
    "JPEG_MAGIC",
    "MAX_INT",
    "SCHEMA_VERSION",
    "SCORES_TOPIC",
    "SOURCES",
    "SUPPORTED_SCHEMAS",
    "UINT8_MIN_HI",
    "BadCameraIdError",
    "BadSceneIdError",
    "FrameMessage",
    "MapEncoding",
    "MessageError",
    "ScoreMessage",
    "Source",
    "decode_jpeg",
    "encode_jpeg",
    "jpeg_size",
]

#: Version written into every message this code produces.
SCHEMA_VERSION = 1
#: Versions this code can read.
SUPPORTED_SCHEMAS: frozenset[int] = frozenset({1})

#: Topic names fixed by the architecture.
FRAMES_TOPIC = "vigil.frames"
SCORES_TOPIC = "vigil.scores"

Source = Literal["live", "replay"]
SOURCES: tuple[str, ...] = ("live", "replay")

MapEncoding = Literal["uint8", "float16"]
MAP_ENCODINGS: tuple[str, ...] = ("uint8", "float16")

#: Every JPEG starts with an SOI marker followed by the first marker's 0xFF.
JPEG_MAGIC = b"\xff\xd8\xff"

#: Lower bound of the upper end of the uint8 quantisation range (twice the threshold).
UINT8_MIN_HI = 2.0

#: Largest integer of any field: a signed 64-bit integer (Kafka, Redis scores, numpy all take it).
MAX_INT = 2**63 - 1
_MAX_INT_DIGITS = len(str(MAX_INT))

_FLOAT16_MAX = float(np.finfo(np.float16).max)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_LEN = struct.Struct(">I")
_FRAME_HEADERS = ("schema", "camera", "scene", "seq", "ts", "source", "width", "height")

Headers = Iterable[tuple[str, bytes]]


class MessageError(ValueError):
    """A message cannot be built or parsed; the text says which field and why."""


class BadSceneIdError(MessageError):
    """A message's ``scene`` is not a valid scene id (:mod:`common.ids`)."""


class BadCameraIdError(MessageError):
    """A message's ``camera`` is not a valid camera id (:mod:`common.ids`)."""


# ----------------------------------------------------------------------------- validation


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a field in an error text may be huge."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"  # repr() may refuse it
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise MessageError(f"{name} must be a non-empty string, got {_shown(value)}")
    return value


def _check_int(name: str, value: Any, minimum: int = 0) -> int:
    # bool is an int subclass; numpy integers are accepted and normalised
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise MessageError(f"{name} must be an integer, got {type(value).__name__} {_shown(value)}")
    if value < minimum:
        raise MessageError(f"{name} must be >= {minimum}, got {_shown(value)}")
    if value > MAX_INT:
        raise MessageError(f"{name} must be <= {MAX_INT} (a signed 64-bit integer), got {_shown(value)}")
    return int(value)


def _check_float(name: str, value: Any, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise MessageError(f"{name} must be a number, got {type(value).__name__} {_shown(value)}")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond float range (JSON allows any number of digits)
        raise MessageError(f"{name} must be finite, got {_shown(value)}") from None
    if not math.isfinite(value):
        raise MessageError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise MessageError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_envelope(msg: Any) -> None:
    """Validate (and normalise, on a frozen dataclass) the common envelope fields."""
    schema = _check_int("schema", msg.schema, 0)
    if schema not in SUPPORTED_SCHEMAS:
        raise MessageError(f"unsupported schema version {schema} (supported: {sorted(SUPPORTED_SCHEMAS)})")
    _check_str("camera", msg.camera)
    if not is_camera_id(msg.camera):
        raise BadCameraIdError(f"camera: invalid camera id {_shown(msg.camera)}: use {CAMERA_ID_RULE}")
    if not is_scene_id(msg.scene):
        raise BadSceneIdError(f"scene: invalid scene id {_shown(msg.scene)}: use {SCENE_ID_RULE}")
    if msg.source not in SOURCES:
        raise MessageError(f"source must be one of {SOURCES}, got {_shown(msg.source)}")
    object.__setattr__(msg, "schema", schema)
    object.__setattr__(msg, "seq", _check_int("seq", msg.seq))
    object.__setattr__(msg, "ts", _check_int("ts", msg.ts))


def _check_key(key: bytes | None, camera: str) -> None:
    """The record key, when present, must be the camera id (it decides the partition)."""
    if key is None:
        return
    if not isinstance(key, bytes | bytearray | memoryview):
        raise MessageError(f"record key must be bytes, got {type(key).__name__}")
    if bytes(key) != camera.encode("utf-8"):
        raise MessageError(f"record key {_shown(bytes(key))} does not match camera {_shown(camera)}")


def _as_bytes(name: str, value: Any) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise MessageError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


# ----------------------------------------------------------------------------- JPEG


def encode_jpeg(bgr: np.ndarray, quality: int = 90) -> bytes:
    """Encode a BGR (H x W x 3) or grey (H x W) ``uint8`` image as JPEG bytes.

    Raises :class:`ValueError` for an image of the wrong type or shape or a quality outside
    1..100.
    """
    if not isinstance(bgr, np.ndarray) or bgr.dtype != np.uint8:
        raise ValueError(f"encode_jpeg needs a uint8 numpy image, got {getattr(bgr, 'dtype', type(bgr))}")
    if not (bgr.ndim == 2 or (bgr.ndim == 3 and bgr.shape[2] == 3)) or 0 in bgr.shape:
        raise ValueError(f"encode_jpeg needs an HxWx3 (BGR) or HxW image, got shape {bgr.shape}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be within 1..100, got {quality}")
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV only fails on invalid input, checked above
        raise ValueError(f"OpenCV could not encode a {bgr.shape} image as JPEG")
    return buf.tobytes()


#: start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from a JPEG's frame header, without decoding the image;
    :class:`MessageError` if the bytes are not a JPEG or end before the header."""
    if not data.startswith(JPEG_MAGIC):
        raise MessageError(f"not a JPEG (starts with {data[:4]!r}, {len(data)} bytes)")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise MessageError(f"JPEG marker expected at byte {i}, found 0x{data[i]:02x}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan: no frame header before it
            break
        if marker in _SOF_MARKERS and i + 9 <= len(data):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            if width and height:
                return width, height
            raise MessageError(f"JPEG frame header gives an empty size {width}x{height}")
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    raise MessageError(f"no JPEG frame header in {len(data)} bytes")


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode JPEG bytes to a BGR ``uint8`` H x W x 3 image; :class:`MessageError` on garbage."""
    data = _as_bytes("JPEG payload", data)
    if not data.startswith(JPEG_MAGIC):
        raise MessageError(f"payload is not a JPEG (starts with {data[:4]!r}, {len(data)} bytes)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise MessageError(f"JPEG payload of {len(data)} bytes cannot be decoded")
    return image


# ----------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class FrameMessage:
    """One frame on ``vigil.frames``: the envelope, the frame size and the JPEG bytes."""

    camera: str
    scene: str
    seq: int
    ts: int  # capture time, epoch milliseconds
    source: Source
    width: int
    height: int
    jpeg: bytes = field(repr=False)
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_envelope(self)
        object.__setattr__(self, "width", _check_int("width", self.width, 1))
        object.__setattr__(self, "height", _check_int("height", self.height, 1))
        jpeg = _as_bytes("jpeg", self.jpeg)
        if not jpeg.startswith(JPEG_MAGIC):
            raise MessageError(f"frame payload is not a JPEG (starts with {jpeg[:4]!r}, {len(jpeg)} bytes)")
        object.__setattr__(self, "jpeg", jpeg)

    @classmethod
    def from_image(cls, bgr: np.ndarray, *, camera: str, scene: str, seq: int, ts: int,
                   source: Source, quality: int = 90) -> FrameMessage:
        """Build a message from a BGR ``uint8`` image (JPEG-encoded at ``quality``)."""
        jpeg = encode_jpeg(bgr, quality)
        return cls(camera=camera, scene=scene, seq=seq, ts=ts, source=source,
                   width=int(bgr.shape[1]), height=int(bgr.shape[0]), jpeg=jpeg)

    def image(self) -> np.ndarray:
        """The decoded BGR frame (:class:`MessageError` if the JPEG is corrupt)."""
        return decode_jpeg(self.jpeg)

    def to_record(self) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        """``(key, value, headers)`` for the bus: key = camera, value = JPEG."""
        headers = [
            ("schema", str(self.schema).encode()),
            ("camera", self.camera.encode("utf-8")),
            ("scene", self.scene.encode("utf-8")),
            ("seq", str(self.seq).encode()),
            ("ts", str(self.ts).encode()),
            ("source", self.source.encode()),
            ("width", str(self.width).encode()),
            ("height", str(self.height).encode()),
        ]
        return self.camera.encode("utf-8"), self.jpeg, headers

    @classmethod
    def from_record(cls, key: bytes | None, value: bytes, headers: Headers | None) -> FrameMessage:
        """Parse a bus record; :class:`MessageError` names the missing or malformed part."""
        fields = _frame_headers(headers)
        text: dict[str, str] = {}
        for name in _FRAME_HEADERS:
            if name not in fields:
                raise MessageError(f"frame record lacks the {name!r} header")
            try:
                text[name] = fields[name].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MessageError(f"frame header {name!r} is not UTF-8: {fields[name][:32]!r}") from exc
        ints = {name: _parse_int_header(name, text[name])
                for name in ("schema", "seq", "ts", "width", "height")}
        if ints["schema"] not in SUPPORTED_SCHEMAS:
            raise MessageError(
                f"unsupported schema version {ints['schema']} (supported: {sorted(SUPPORTED_SCHEMAS)})"
            )
        msg = cls(camera=text["camera"], scene=text["scene"], seq=ints["seq"], ts=ints["ts"],
                  source=text["source"], width=ints["width"], height=ints["height"],  # type: ignore[arg-type]
                  jpeg=_as_bytes("frame value", value) if value is not None else b"",
                  schema=ints["schema"])
        _check_key(key, msg.camera)
        return msg


def _frame_headers(headers: Headers | None) -> dict[str, bytes]:
    if headers is None:
        raise MessageError("frame record has no headers")
    out: dict[str, bytes] = {}
    try:
        items = list(headers)
    except TypeError as exc:
        raise MessageError(f"frame headers must be a list of (name, bytes) pairs, got {headers!r}") from exc
    for item in items:
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)):
            raise MessageError(f"frame header {item!r} is not a (name, bytes) pair")
        name, raw = item
        if name not in _FRAME_HEADERS:
            continue  # forward compatible: ignore headers this version does not know
        if name in out:
            raise MessageError(f"frame header {name!r} appears more than once")
        out[name] = _as_bytes(f"frame header {name!r}", raw)
    return out


def _parse_int_header(name: str, text: str) -> int:
    """A decimal integer header; :class:`MessageError` for anything else, an over-long digit
    string included (``int()`` itself refuses more than 4300 digits with a plain ValueError)."""
    digits = text[1:] if text[:1] == "-" else text
    if not (text.isascii() and digits.isdigit()):
        raise MessageError(f"frame header {name!r} must be a decimal integer, got {_shown(text)}")
    if len(digits) > _MAX_INT_DIGITS:
        raise MessageError(f"frame header {name!r} must be a decimal integer of at most {_MAX_INT_DIGITS} "
                           f"digits (a signed 64-bit integer), got {len(text)} characters")
    return int(text)


# ----------------------------------------------------------------------------- scores


@dataclass(frozen=True, eq=False)
class ScoreMessage:
    """One scored frame on ``vigil.scores``.

    ``anomaly_map`` is stored as a read-only float32 H x W copy. Messages compare by
    identity (``eq=False``: an array has no single truth value); compare fields explicitly.
    """

    camera: str
    scene: str
    seq: int
    ts: int  # capture time of the frame, epoch milliseconds
    source: Source
    score: float  # calibrated: 1.0 = the scene's threshold
    raw: float  # model units
    model: str  # checkpoint id
    latency_ms: float  # capture (or ingest) to score
    anomaly_map: np.ndarray = field(repr=False)
    map_encoding: MapEncoding = "uint8"
    schema: int = SCHEMA_VERSION
    provisional: bool = False  # scored during the camera's learning period (detector.learning)

    def __post_init__(self) -> None:
        _check_envelope(self)
        _check_str("model", self.model)
        if not isinstance(self.provisional, bool):
            raise MessageError(f"provisional must be true or false, got {_shown(self.provisional)}")
        object.__setattr__(self, "score", _check_float("score", self.score))
        object.__setattr__(self, "raw", _check_float("raw", self.raw))
        object.__setattr__(self, "latency_ms", _check_float("latency_ms", self.latency_ms, 0.0))
        if self.map_encoding not in MAP_ENCODINGS:
            raise MessageError(f"map_encoding must be one of {MAP_ENCODINGS}, got {self.map_encoding!r}")
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, refused below
                amap = np.array(self.anomaly_map, dtype=np.float32, copy=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise MessageError(f"anomaly_map is not a numeric array: {str(exc)[:200]}") from exc
        if amap.ndim != 2 or 0 in amap.shape:
            raise MessageError(f"anomaly_map must be a non-empty 2-D (H x W) array, got shape {amap.shape}")
        if not np.isfinite(amap).all():
            raise MessageError(f"anomaly_map has {int((~np.isfinite(amap)).sum())} non-finite values "
                               "(or values beyond float32)")
        if self.map_encoding == "float16" and float(np.abs(amap).max()) > _FLOAT16_MAX:
            raise MessageError(
                f"anomaly_map reaches {float(np.abs(amap).max()):g}, beyond float16's range; use uint8"
            )
        amap.setflags(write=False)
        object.__setattr__(self, "anomaly_map", amap)

    def quantisation_range(self) -> tuple[float, float]:
        """``(lo, hi)`` used for the uint8 encoding of this message's map."""
        return _uint8_range(self.anomaly_map)

    def quantisation_error(self) -> float:
        """Upper bound of ``|decoded - anomaly_map|`` after a round trip in this encoding."""
        if self.map_encoding == "uint8":
            lo, hi = self.quantisation_range()
            return (hi - lo) / 510.0
        # half precision: 11 significant bits; subnormals (< 2**-14) have an absolute step of 2**-24
        return max(float(np.abs(self.anomaly_map).max()) * 2.0**-11, 2.0**-25)

    def header(self) -> dict[str, Any]:
        """The JSON header of the binary record."""
        h: dict[str, Any] = {
            "schema": self.schema, "camera": self.camera, "scene": self.scene, "seq": self.seq,
            "ts": self.ts, "source": self.source, "score": self.score, "raw": self.raw,
            "model": self.model, "latency_ms": self.latency_ms, "provisional": self.provisional,
            "map_shape": list(self.anomaly_map.shape), "map_encoding": self.map_encoding,
        }
        if self.map_encoding == "uint8":
            h["map_lo"], h["map_hi"] = self.quantisation_range()
        return h

    def to_bytes(self) -> bytes:
        """The binary record (see the module docstring)."""
        header = self.header()
        amap = self.anomaly_map
        if self.map_encoding == "uint8":
            lo, hi = header["map_lo"], header["map_hi"]
            # in float64: a map spanning most of float32's range would overflow float32 here
            scaled = (amap.astype(np.float64) - lo) * (255.0 / (hi - lo))
            payload = np.clip(np.rint(scaled), 0, 255).astype(np.uint8).tobytes()
        else:
            payload = amap.astype("<f2").tobytes()
        head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
        return _LEN.pack(len(head)) + head + payload

    def to_record(self) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        """``(key, value, headers)`` for the bus: key = camera, value = binary record, no headers."""
        return self.camera.encode("utf-8"), self.to_bytes(), []

    @classmethod
    def from_bytes(cls, value: bytes) -> ScoreMessage:
        """Parse a binary record; :class:`MessageError` names what is wrong with it."""
        data = _as_bytes("score record", value)
        if len(data) < _LEN.size:
            raise MessageError(f"score record of {len(data)} bytes is too short for its length prefix")
        (n,) = _LEN.unpack_from(data)
        if n > len(data) - _LEN.size:
            raise MessageError(
                f"score record header length {n} exceeds the {len(data) - _LEN.size} bytes after the prefix"
            )
        try:
            text = data[_LEN.size:_LEN.size + n].decode("utf-8")
            header = json.loads(text, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as exc:  # ValueError: also an integer of > 4300 digits
            raise MessageError(f"score record header is not valid UTF-8 JSON: {str(exc)[:200]}") from exc
        except RecursionError:  # nested deeper than Python's recursion limit
            raise MessageError(f"score record header of {n} bytes nests too deeply to parse") from None
        if not isinstance(header, dict):
            raise MessageError(f"score record header must be a JSON object, got {type(header).__name__}")
        amap, encoding = _decode_map(header, data[_LEN.size + n:])
        missing = [k for k in ("schema", "camera", "scene", "seq", "ts", "source", "score", "raw",
                               "model", "latency_ms") if k not in header]
        if missing:
            raise MessageError(f"score record header lacks {', '.join(missing)}")
        _check_int("schema", header["schema"], 0)
        return cls(camera=header["camera"], scene=header["scene"], seq=header["seq"], ts=header["ts"],
                   source=header["source"], score=header["score"], raw=header["raw"], model=header["model"],
                   latency_ms=header["latency_ms"], anomaly_map=amap, map_encoding=encoding,
                   schema=header["schema"], provisional=header.get("provisional", False))

    @classmethod
    def from_record(cls, key: bytes | None, value: bytes, headers: Headers | None = None) -> ScoreMessage:
        """Parse a bus record (headers are not used); the key, if any, must be the camera."""
        msg = cls.from_bytes(value)
        _check_key(key, msg.camera)
        return msg


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} in JSON")


def _uint8_range(amap: np.ndarray) -> tuple[float, float]:
    lo = min(0.0, float(amap.min()))
    hi = max(UINT8_MIN_HI, float(amap.max()))
    return lo, hi


def _decode_map(header: Mapping[str, Any], payload: bytes) -> tuple[np.ndarray, MapEncoding]:
    # Check the schema first: a future version may lay the map out differently.
    schema = header.get("schema")
    if isinstance(schema, int) and not isinstance(schema, bool) and schema not in SUPPORTED_SCHEMAS:
        raise MessageError(f"unsupported schema version {schema} (supported: {sorted(SUPPORTED_SCHEMAS)})")
    shape = header.get("map_shape")
    if not (isinstance(shape, list) and len(shape) == 2
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise MessageError(f"score record map_shape must be [H, W] with positive integers, got {shape!r}")
    encoding = header.get("map_encoding")
    if encoding not in MAP_ENCODINGS:
        raise MessageError(f"score record map_encoding must be one of {MAP_ENCODINGS}, got {encoding!r}")
    h, w = shape
    itemsize = 1 if encoding == "uint8" else 2
    if len(payload) != h * w * itemsize:
        raise MessageError(
            f"score record map payload is {len(payload)} bytes, expected {h * w * itemsize} "
            f"for a {h}x{w} {encoding} map"
        )
    if encoding == "float16":
        return np.frombuffer(payload, dtype="<f2").reshape(h, w).astype(np.float32), "float16"
    lo = _check_float("map_lo", header.get("map_lo"))
    hi = _check_float("map_hi", header.get("map_hi"))
    if not hi > lo:
        raise MessageError(f"score record quantisation range is empty: map_lo={lo}, map_hi={hi}")
    if max(-lo, hi) > _FLOAT32_MAX:
        raise MessageError(f"score record quantisation range map_lo={lo:g}, map_hi={hi:g} is beyond float32 "
                           "(the map's values are float32)")
    # in float64, kept within [lo, hi]: lo + 255 * step may not fit float32 on the way there
    q = np.frombuffer(payload, dtype=np.uint8).reshape(h, w).astype(np.float64)
    return np.clip(lo + q * ((hi - lo) / 255.0), lo, hi).astype(np.float32), "uint8"

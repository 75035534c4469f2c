"""Motion evidence for a scene model: dense optical flow between a camera's consecutive frames.

A single frame cannot show speed: a sprinter looks like a pedestrian. The motion channel
computes OpenCV's DIS optical flow between a frame and an earlier frame of its camera's
run (the previous one, or ``span`` frames back; fewer at a run's start), both as small
grey images (``MotionSettings.size``), divides it by the number of source frames between
them (``seq`` step, so sampling at an analysis fps keeps the units: pixels per source
frame), and pools it over ``cell`` x ``cell`` pixels into a feature map per grid cell:
the last two channels below (``channels: speed``, the default) or all four (``channels:
flow``)::

    mean u, mean v          the cell's mean displacement (direction of travel)
    log1p(mean |flow|)      how fast the cell moves on average
    log1p(max |flow|)       its fastest pixel

A scene's motion head (a CFLOW-AD flow over these features, conditioned on the grid
position) learns how fast things normally move where; its standardised NLL map joins the
appearance map.

A frame has motion evidence only when its camera's previous frame is at most
``max_step`` source frames before it (and, where capture times are known, at most
``max_gap_ms`` earlier). The first frame of a camera, and the first after a
gap, a reconnect or a seq jump, has none and is scored on appearance alone, with the
appearance-only calibration (see :class:`~detector.model.SceneModel`).

>>> import numpy as np
>>> s = MotionSettings(size=32, cell=8, channels="flow")
>>> a = np.zeros((32, 32), np.uint8); a[8:16, 8:16] = 255
>>> flow_features(a, np.roll(a, 2, axis=1), 1, s).shape
(4, 4, 4)
>>> flow_features(a, np.roll(a, 2, axis=1), 1, MotionSettings(size=32, cell=8)).shape
(2, 4, 4)
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from common.config import Strict
from detector.temporal import follows

#: Channels of the motion feature map per ``channels`` setting (see the module docstring).
MOTION_CHANNELS = {"flow": 4, "speed": 2}

_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class MotionSettings(Strict):
    """How motion features are computed; stored in the checkpoint of a scene with motion."""

    model_config = {"frozen": True}

    size: int = Field(default=256, ge=16, description="side of the grey frames the flow is computed on")
    cell: int = Field(default=16, ge=1, description="flow pooled over cell x cell pixels")
    max_step: int = Field(default=3, ge=1, description="previous frame at most this many source frames "
                                                     "back; beyond, the frame has no motion evidence")
    max_gap_ms: int = Field(default=2000, ge=1, description="previous frame captured at most this long "
                                                          "before (when capture times are known)")
    preset: Literal["ultrafast", "fast", "medium"] = "medium"
    span: int = Field(default=1, ge=1, description="flow against the frame this many frames back in "
                                                 "the camera's run (fewer at the run's start)")
    channels: Literal["flow", "speed"] = Field(
        default="speed", description="flow: direction and speed per cell; speed: speed only")

    @property
    def grid(self) -> int:
        """Side of the motion feature map."""
        return self.size // self.cell

    @property
    def n_channels(self) -> int:
        """Channels of the motion feature map."""
        return MOTION_CHANNELS[self.channels]


def motion_frame(bgr: np.ndarray, settings: MotionSettings) -> np.ndarray:
    """A BGR frame (any size) -> the grey ``size`` x ``size`` uint8 image the flow reads."""
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    interp = cv2.INTER_AREA if min(grey.shape[:2]) > settings.size else cv2.INTER_LINEAR
    return cv2.resize(grey, (settings.size, settings.size), interpolation=interp)


def flow_features(prev: np.ndarray, cur: np.ndarray, step: int, settings: MotionSettings) -> np.ndarray:
    """Motion features (channels, grid, grid) float32 between two grey frames ``step`` source frames apart.

    Args:
        prev: the camera's previous grey frame (:func:`motion_frame`).
        cur: this frame, grey, same size.
        step: source frames between them (``seq`` difference, >= 1).
        settings: the scene's motion settings.

    Returns:
        The pooled flow features (see the module docstring), in pixels per source frame.
    """
    if step < 1:
        raise ValueError(f"frames must be at least one source frame apart, got step {step}")
    dis = cv2.DISOpticalFlow_create(_PRESETS[settings.preset])
    flow = dis.calc(prev, cur, None) / float(step)
    g, c = settings.grid, settings.cell
    crop = flow[: g * c, : g * c]
    u, v = np.ascontiguousarray(crop[..., 0]), np.ascontiguousarray(crop[..., 1])
    mag = cv2.magnitude(u, v)
    out = np.empty((4, g, g), np.float32)
    out[2] = np.log1p(_cell_sum(mag, g, c) / (c * c))
    out[3] = np.log1p(mag.reshape(g * c, g, c).max(axis=2).reshape(g, c, g).max(axis=1))
    if settings.channels == "speed":
        return out[2:].copy()
    out[0] = _cell_sum(u, g, c) / (c * c)
    out[1] = _cell_sum(v, g, c) / (c * c)
    return out


def _cell_sum(values: np.ndarray, g: int, c: int) -> np.ndarray:
    """Sums of a (g*c, g*c) array over its g x g cells of c x c (rows first: contiguous reads)."""
    return values.reshape(g * c, g, c).sum(axis=2).reshape(g, c, g).sum(axis=1)


@dataclass(frozen=True)
class FlowPair:
    """Two grey frames of a camera's run whose flow gives a frame's motion features: what
    :meth:`MotionTracker.pair` returns, computed by :meth:`features` (on any thread: the
    tracker's state is not touched, and OpenCV releases the GIL)."""

    prev: np.ndarray
    cur: np.ndarray
    step: int
    settings: MotionSettings

    def features(self) -> np.ndarray:
        """The motion features (see :func:`flow_features`)."""
        return flow_features(self.prev, self.cur, self.step, self.settings)


@dataclass
class _Seen:
    seq: int
    ts_ms: int | None
    frame: np.ndarray


class MotionTracker:
    """Per-camera streaming state: each camera's last ``span`` grey frames of its run, with their ``seq``.

    :meth:`features` is called for a camera's frames in order (they are, within a
    partition, and a micro-batch keeps the order of its records). State is keyed by camera
    only, so cameras sharing a batch never see each other's frames, and it survives
    micro-batches. At most ``max_cameras`` cameras are remembered (least recently seen
    dropped; a dropped camera's next frame is a gap).

    >>> s = MotionSettings(size=32, cell=8)
    >>> t = MotionTracker(s)
    >>> f = np.zeros((32, 32, 3), np.uint8)
    >>> t.features("cam", 0, f) is None, t.features("cam", 1, f).shape, t.features("cam", 9, f) is None
    (True, (2, 4, 4), True)
    >>> t.features("cam", 10, f, ts_ms=0) is not None, t.features("cam", 11, f, ts_ms=60_000) is None
    (True, True)
    """

    def __init__(self, settings: MotionSettings, max_cameras: int = 1024) -> None:
        self.settings = settings
        self.max_cameras = max_cameras
        self._runs: OrderedDict[str, deque[_Seen]] = OrderedDict()

    def features(self, camera: str, seq: int, bgr: np.ndarray, ts_ms: int | None = None) -> np.ndarray | None:
        """This frame's motion features, or None when it has no usable previous frame (a gap).

        Args:
            camera: the stream the frame belongs to.
            seq: its frame number in the source.
            bgr: the frame, at the model's input size.
            ts_ms: its capture time, when known: a frame captured more than ``max_gap_ms``
                after the previous one (a reconnect, a stall) is a gap too.

        Returns:
            The motion features (channels, grid, grid), or None.
        """
        pair = self.pair(camera, seq, bgr, ts_ms)
        return None if pair is None else pair.features()

    def pair(self, camera: str, seq: int, bgr: np.ndarray, ts_ms: int | None = None) -> FlowPair | None:
        """Record this frame in its camera's run and return the frames its motion features
        come from (None: a gap), without computing the flow: :meth:`features` in two steps,
        so that a batch's flows can be computed in parallel while the state is updated in
        record order. Arguments as for :meth:`features`."""
        s = self.settings
        seen = _Seen(seq, ts_ms, motion_frame(bgr, s))
        run = self._runs.pop(camera, None)
        continues = run is not None and follows(run[-1].seq, run[-1].ts_ms, seq, ts_ms, s.max_step,
                                                s.max_gap_ms)
        if run is None or not continues:
            run = deque(maxlen=s.span + 1)
        run.append(seen)
        self._runs[camera] = run
        while len(self._runs) > self.max_cameras:
            self._runs.popitem(last=False)
        if not continues:
            return None
        ref = run[0]  # span frames back, or the run's first frame
        return FlowPair(ref.frame, seen.frame, seq - ref.seq, s)

    def forget(self, camera: str) -> None:
        """Drop a camera's state (its next frame is a gap)."""
        self._runs.pop(camera, None)

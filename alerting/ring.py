"""A bounded per-camera buffer of recent frames, joined with their scores as they arrive.

Frames are kept as the JPEG bytes they came in on ``vigil.frames`` (no re-encode), so the
byte cap counts what is really held; a frame's score and anomaly map are attached when its
score record arrives. The oldest frames fall out when either cap is exceeded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

__all__ = ["FrameRing", "RingEntry"]


@dataclass
class RingEntry:
    seq: int
    ts: int
    width: int
    height: int
    jpeg: bytes = field(repr=False)
    score: float | None = None
    amap: np.ndarray | None = field(default=None, repr=False)
    model: str | None = None

    @property
    def nbytes(self) -> int:
        return len(self.jpeg) + (self.amap.nbytes if self.amap is not None else 0)


class FrameRing:
    """Frames of one camera in seq order, capped at ``max_frames`` and ``max_bytes``."""

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        if max_frames < 1 or max_bytes < 1:
            raise ValueError(f"ring caps must be positive, got {max_frames} frames / {max_bytes} bytes")
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self._entries: OrderedDict[int, RingEntry] = OrderedDict()
        self.bytes = 0
        #: highest frame seq ever added (frames arrive in seq order per camera)
        self.newest_seq: int | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, seq: int) -> bool:
        return seq in self._entries

    def get(self, seq: int) -> RingEntry | None:
        return self._entries.get(seq)

    @property
    def oldest_seq(self) -> int | None:
        return next(iter(self._entries)) if self._entries else None

    def add(self, entry: RingEntry) -> tuple[bool, list[RingEntry]]:
        """Append a frame; returns ``(added, evicted)``. A frame already held, or older than
        the newest one (a redelivery), is not added."""
        if entry.seq in self._entries or (self.newest_seq is not None and entry.seq <= self.newest_seq):
            return False, []
        self._entries[entry.seq] = entry
        self.bytes += entry.nbytes
        self.newest_seq = entry.seq
        return True, self._evict()

    def attach(self, seq: int, score: float, amap: np.ndarray | None, model: str) -> tuple[RingEntry | None,
                                                                                           list[RingEntry]]:
        """Attach a score (and map) to the held frame ``seq``; returns ``(entry or None, evicted)``."""
        entry = self._entries.get(seq)
        if entry is None:
            return None, []
        before = entry.nbytes
        entry.score, entry.amap, entry.model = score, amap, model
        self.bytes += entry.nbytes - before
        evicted = self._evict(keep=seq)
        return entry, evicted

    def between(self, first_seq: int, last_seq: int) -> Iterator[RingEntry]:
        """Held frames with ``first_seq <= seq <= last_seq``, in order."""
        for seq, entry in self._entries.items():
            if seq > last_seq:
                break
            if seq >= first_seq:
                yield entry

    def since_ts(self, first_ts: int, last_seq: int) -> list[RingEntry]:
        """Held frames with ``ts >= first_ts`` and ``seq <= last_seq`` (the pre-roll)."""
        return [e for e in self.between(-1, last_seq) if e.ts >= first_ts]

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _evict(self, keep: int | None = None) -> list[RingEntry]:
        evicted = []
        while self._entries and (len(self._entries) > self.max_frames or self.bytes > self.max_bytes):
            seq = next(iter(self._entries))
            if seq == keep and len(self._entries) == 1:
                break
            entry = self._entries.pop(seq)
            self.bytes -= entry.nbytes
            evicted.append(entry)
        return evicted

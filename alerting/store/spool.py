"""The on-disk spool: writes waiting for Redis, one fsynced file each, bounded in entries and bytes.

A spool file (``NNNNNNNNNNNN.spool``, numbered in write order) is a magic line, a 4-byte
big-endian length, that many bytes of JSON (the operation, with the sizes of its blobs), then
the blobs themselves. Files are written to ``.tmp`` and renamed, so a crash never leaves a
half-written entry (leftover ``.tmp`` files are removed on open: they were never acknowledged).

A write that fails (disk full, unwritable) raises :class:`~alerting.store.base.StoreWriteError`
naming the file; nothing spooled before is touched and the counts stay as they were. A spool
file that cannot be read back (damaged) raises :class:`CorruptSpoolEntry`; :meth:`Spool.quarantine`
moves it aside (``*.bad``) so that one damaged file cannot hold up the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from alerting.store.base import SpoolFullError, StoreError, StoreWriteError, write_atomic

__all__ = ["CorruptSpoolEntry", "Spool"]


class CorruptSpoolEntry(StoreError):  # noqa: N818 - an entry, not an event
    """A spool file that is not a complete spool entry."""

_SPOOL_MAGIC = b"VIGILSPOOL1\n"
_LEN = struct.Struct(">I")


class Spool:
    """Writes waiting for Redis, one fsynced file each (``NNNNNNNNNNNN.spool``), oldest first."""

    def __init__(self, directory: Path, max_bytes: int, max_entries: int) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_entries = max_bytes, max_entries
        for stale in self.dir.glob("*.tmp"):  # a crash mid-write: the write was never acknowledged
            stale.unlink()
        files = self.files()
        self._next = (int(files[-1].stem) + 1) if files else 0
        self.bytes = sum(f.stat().st_size for f in files)
        self.count = len(files)

    def files(self) -> list[Path]:
        """The spooled writes, oldest first."""
        return sorted(self.dir.glob("*.spool"))

    def __len__(self) -> int:
        return self.count

    def append(self, op: dict[str, Any], blobs: dict[str, bytes]) -> Path:
        """Spool one operation with its (non-empty) blobs; :class:`SpoolFullError` if it does not fit."""
        names = [k for k, v in blobs.items() if v]
        head = json.dumps({**op, "blobs": {k: len(blobs[k]) for k in names}}).encode()
        data = _SPOOL_MAGIC + _LEN.pack(len(head)) + head + b"".join(blobs[k] for k in names)
        if self.count + 1 > self.max_entries or self.bytes + len(data) > self.max_bytes:
            raise SpoolFullError(f"alert spool {self.dir} is full ({self.count} writes, {self.bytes} bytes; "
                            f"limits {self.max_entries} / {self.max_bytes})")
        path = self.dir / f"{self._next:012d}.spool"
        write_atomic(path, data, path.with_suffix(".tmp"))
        _fsync_dir(self.dir)
        self._next += 1
        self.count += 1
        self.bytes += len(data)
        return path

    @staticmethod
    def read(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The operation and blobs of one spool file (:class:`CorruptSpoolEntry` if it is not a
        complete entry)."""
        data = path.read_bytes()
        if not data.startswith(_SPOOL_MAGIC):
            raise CorruptSpoolEntry(f"{path} is not a spool file")
        try:
            pos = len(_SPOOL_MAGIC)
            (n,) = _LEN.unpack_from(data, pos)
            pos += _LEN.size
            if pos + n > len(data):
                raise ValueError(f"header of {n} bytes, file of {len(data)}")
            op = json.loads(data[pos:pos + n])
            pos += n
            blobs = {}
            for name, size in op.pop("blobs").items():
                if not isinstance(size, int) or size < 0 or pos + size > len(data):
                    raise ValueError(f"blob {name!r} of {size!r} bytes does not fit")
                blobs[name] = data[pos:pos + size]
                pos += size
        except (struct.error, ValueError, RecursionError, TypeError, KeyError, AttributeError) as exc:
            raise CorruptSpoolEntry(f"{path} is damaged: {exc}") from None
        if not isinstance(op.get("op"), str):
            raise CorruptSpoolEntry(f"{path} is damaged: no operation")
        return op, blobs

    def remove(self, path: Path) -> None:
        """Forget one applied write (:class:`StoreWriteError` if its file cannot be removed)."""
        try:
            size = path.stat().st_size
            path.unlink()
        except OSError as exc:
            raise StoreWriteError(path, exc) from exc
        self.count -= 1
        self.bytes -= size

    def quarantine(self, path: Path) -> Path:
        """Move a damaged spool file aside (``*.bad``, kept for inspection, not replayed)."""
        size = path.stat().st_size
        bad = path.with_suffix(".bad")
        try:
            os.replace(path, bad)
        except OSError as exc:
            raise StoreWriteError(path, exc) from exc
        self.count -= 1
        self.bytes -= size
        return bad


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

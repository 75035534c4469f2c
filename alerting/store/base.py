"""What every alert store shares: the :class:`AlertStore` protocol, the write and its result, the errors."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from alerting.events import AlertRecord
from common.files import replace_file

__all__ = ["AlertStore", "AlertWrite", "PutResult", "SpoolFullError", "StoreError", "StoreUnavailableError",
           "StoreWriteError"]


class StoreError(RuntimeError):
    """The store refused or failed an operation."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached right now (Redis down, timeout)."""


class SpoolFullError(StoreUnavailableError):
    """Redis is unreachable and the spool has no room for another write."""


class StoreWriteError(StoreError):
    """The store could not write to its disk (full, read-only, no permission). The message
    names the path and the cause; ``errno`` is the operating system's error number. Nothing
    stored before is harmed (files are replaced atomically)."""

    def __init__(self, path: object, exc: OSError) -> None:
        self.path, self.errno = path, exc.errno
        cause = exc.strerror or str(exc)
        name = errno.errorcode.get(exc.errno, "") if isinstance(exc.errno, int) else ""
        super().__init__(f"cannot write {path}: {cause}" + (f" ({name})" if name else ""))


def write_atomic(path: Path, data: bytes, tmp: Path | None = None) -> None:
    """Replace ``path`` by ``data`` all at once (:func:`common.files.replace_file`):
    :class:`StoreWriteError` if it cannot be written, and then the old file is untouched and
    no temporary file is left."""
    try:
        replace_file(path, data, tmp)
    except OSError as exc:
        raise StoreWriteError(path, exc) from exc


@dataclass(frozen=True)
class AlertWrite:
    """One idempotent store write: the record, optionally its clip, snapshot and event."""

    record: AlertRecord
    event: dict[str, Any] | None = None
    clip: bytes | None = None
    snapshot: bytes | None = None

    @property
    def event_id(self) -> str | None:
        return None if self.event is None else self.event["event_id"]


@dataclass(frozen=True)
class PutResult:
    """What a write did, and whether its event still has to be published."""

    stored: bool  # the record was written (False: a newer version is stored, or spooled)
    publish: bool  # the event is not known to be on vigil.alerts yet: publish it
    spooled: bool = False


class AlertStore(Protocol):
    """Alert records, clips, snapshots, per-camera index and event log."""

    def clip_key(self, alert_id: str) -> str: ...

    def snapshot_key(self, alert_id: str) -> str: ...

    def put(self, write: AlertWrite) -> PutResult: ...

    def mark_published(self, alert_id: str, event_ids: list[str]) -> None: ...

    def get(self, alert_id: str) -> AlertRecord | None: ...

    def clip(self, alert_id: str) -> bytes | None: ...

    def snapshot(self, alert_id: str) -> bytes | None: ...

    def list(self, camera: str | None = None, limit: int = 100) -> list[AlertRecord]:
        """Newest first (by start time)."""
        ...

    def events(self, after: str | None, block_ms: int = 0, count: int = 100) -> list[tuple[str, dict | None]]:
        """Events after cursor ``after`` (``None``: from the beginning), ``(cursor, event)`` pairs;
        ``event`` is None for an entry of the log that is not a valid event (logged by the
        store), so that a reader's cursor moves past it."""
        ...

    def latest_cursor(self) -> str:
        """A cursor after the newest event (to follow only new ones)."""
        ...

    def pending(self) -> int:
        """Writes waiting in the spool."""
        ...

    def drain(self) -> int:
        """Apply spooled writes; returns how many were applied."""
        ...

    def close(self) -> None: ...

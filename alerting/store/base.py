"""What every alert store shares: the :class:`AlertStore` protocol, the write and its result, the errors."""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from alerting.events import AlertRecord
from common.files import replace_file

__all__ = ["REVIEW_MARKS", "AlertStore", "AlertWrite", "PutResult", "SpoolFullError", "StoreError",
           "StoreUnavailableError", "StoreWriteError", "make_review", "page_filter"]

#: An operator's marks on an alert (the review page): seen and real, or a false alarm.
REVIEW_MARKS = ("reviewed", "false_alarm")



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


def make_review(record: AlertRecord, mark: str, note: str = "", now_ms: int | None = None) -> dict[str, Any]:
    """An operator's mark on ``record`` as the store keeps it: the mark, when, and what the
    alert was decided with (camera, model, threshold, peak score), so that calibration work
    can later use false-alarm marks without the alert (which expires with its retention).

    >>> from alerting.events import AlertRecord
    >>> rec = AlertRecord("c-000000001", "c", "s", "live", "s:cflow:ab", 1.0, 0.8, 1, 1, 5, 1.5, 1, 5,
    ...                   "closed", 9, "clip", None)
    >>> make_review(rec, "false_alarm", now_ms=7)["mark"]
    'false_alarm'
    """
    if mark not in REVIEW_MARKS:
        raise ValueError(f"review mark must be one of {', '.join(REVIEW_MARKS)}, got {str(mark)[:40]!r}")
    if not isinstance(note, str) or len(note) > 500:
        raise ValueError("review note must be text of at most 500 characters")
    return {"mark": mark, "note": note, "at_ms": int(time.time() * 1000) if now_ms is None else now_ms,
            "alert_id": record.alert_id, "camera": record.camera, "model": record.model,
            "threshold": record.threshold, "peak_score": record.peak_score, "start_ts": record.start_ts}


def page_filter(items: list[tuple[int, str]], since_ts: int | None, before: tuple[int, str] | None
                ) -> list[tuple[int, str]]:
    """``(start_ts, alert_id)`` pairs of a listing page: ``start_ts >= since_ts`` and strictly
    before the cursor ``before`` (the last pair of the previous page), newest first.

    >>> page_filter([(1, "a"), (3, "c"), (2, "b")], since_ts=2, before=None)
    [(3, 'c'), (2, 'b')]
    >>> page_filter([(1, "a"), (3, "c"), (2, "b")], since_ts=None, before=(3, "c"))
    [(2, 'b'), (1, 'a')]
    """
    kept = [i for i in items if (since_ts is None or i[0] >= since_ts) and (before is None or i < before)]
    return sorted(kept, reverse=True)


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

    def cameras(self) -> list[str]:
        """Cameras with stored alerts."""
        ...

    def list(self, camera: str | None = None, limit: int = 100, since_ts: int | None = None,
             before: tuple[int, str] | None = None) -> list[AlertRecord]:
        """Newest first (by start time, then id); only alerts that started at ``since_ts`` or
        later, and only those before the cursor ``before`` = ``(start_ts, alert_id)`` of the
        previous page's last alert (paging)."""
        ...

    def set_review(self, alert_id: str, mark: str | None, note: str = "") -> dict | None:
        """Store an operator's mark (:data:`REVIEW_MARKS`) on a stored alert, or clear it
        (``mark`` None); returns the review kept (None when cleared). :class:`LookupError`
        when no such alert is stored; :class:`ValueError` for a mark that is not one of them."""
        ...

    def reviews(self, alert_ids: list[str]) -> dict[str, dict]:
        """The reviews of those alerts that have one."""
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

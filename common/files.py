"""Replacing a file all at once: the one atomic write every component uses (alert stores,
the spool, the detector's learned camera thresholds)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["replace_file"]


def replace_file(path: Path, data: bytes, tmp: Path | None = None) -> None:
    """Replace ``path`` by ``data`` all at once, through ``tmp`` (default ``.NAME.tmp`` beside
    it), fsynced. On failure the :class:`OSError` propagates, the old file is untouched and
    no temporary file is left.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "x.json"
    >>> replace_file(p, b"{}"); p.read_bytes(), sorted(q.name for q in p.parent.iterdir())
    (b'{}', ['x.json'])
    """
    tmp = tmp or path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise

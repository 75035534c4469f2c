"""The on-disk spool: bounded, and still there after a restart."""

from __future__ import annotations

import pytest

from alerting.store import Spool, SpoolFullError


def test_spool_is_bounded_and_survives_a_restart(tmp_path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000, max_entries=3)
    for i in range(3):
        spool.append({"op": "mark", "alert_id": "a", "event_ids": [str(i)]}, {"clip": b"x" * 10})
    with pytest.raises(SpoolFullError):
        spool.append({"op": "mark", "alert_id": "a", "event_ids": []}, {})
    again = Spool(tmp_path, max_bytes=10_000, max_entries=5)
    assert len(again) == 3
    op, blobs = Spool.read(again.files()[0])
    assert op["event_ids"] == ["0"] and blobs == {"clip": b"x" * 10}
    with pytest.raises(SpoolFullError):
        Spool(tmp_path, max_bytes=10, max_entries=99).append({"op": "mark"}, {"clip": b"y" * 100})

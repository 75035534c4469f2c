"""A full or unwritable disk under the local store or the alert spool: one clear error naming the
path, the metric rises, the alert role keeps consuming, nothing already stored is harmed, and
the writes kept in memory are stored once there is room again.

The realistic case runs on a 1 MiB tmpfs (mounted by the test where ``mount`` is allowed: root
with CAP_SYS_ADMIN); elsewhere the same test fills a simulated disk whose writes fail with
ENOSPC (``VIGIL_TEST_SIMULATED_DISK=1`` forces that). The EACCES case is simulated too (as
root, ``chmod 0500`` does not stop a write)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import alerting.store.local as local_mod
import alerting.store.spool as spool_mod
from alerting.config import LocalStoreConfig, RedisStoreConfig
from alerting.store import LocalStore, RedisStore, Spool, SpoolingStore, StoreWriteError
from common.messages import FRAMES_TOPIC, SCORES_TOPIC
from tests.alerting.store.records import record, write
from tests.alerting.test_poison import Rig, eager_config

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class Disk:
    """A small disk to fill: a real tmpfs, or a simulated one whose writes fail once full."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.monkeypatch = root, monkeypatch
        self.kind = "tmpfs" if self._mount() else "simulated"

    def _mount(self) -> bool:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.environ.get("VIGIL_TEST_SIMULATED_DISK"):  # to run the fallback where tmpfs works
            return False
        try:
            name = f"vigil-test-{uuid.uuid4().hex[:8]}"
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", name, str(self.root)],
                                  capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0

    def fill(self) -> None:
        if self.kind == "tmpfs":
            with open(self.root / "filler", "wb", buffering=0) as fh:
                for chunk in (65536, 4096, 1):
                    with contextlib.suppress(OSError):
                        while True:
                            fh.write(b"\0" * chunk)
            return
        real_open = open

        def full_open(path, mode="r", *args, **kw):  # writes into the disk fail: it is full
            if any(c in mode for c in "wax") and str(path).startswith(str(self.root)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return real_open(path, mode, *args, **kw)

        for mod in (local_mod, spool_mod):
            self.monkeypatch.setattr(mod, "open", full_open, raising=False)

    def free(self) -> None:
        if self.kind == "tmpfs":
            (self.root / "filler").unlink()
            return
        for mod in (local_mod, spool_mod):
            self.monkeypatch.delattr(mod, "open", raising=False)

    def unmount(self) -> None:
        if self.kind == "tmpfs":
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True, timeout=10)


@pytest.fixture
def disk(tmp_path, monkeypatch) -> Iterator[Disk]:
    d = Disk(tmp_path / "disk", monkeypatch)
    try:
        yield d
    finally:
        d.unmount()


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def alert(rig: Rig, camera: str, first: int, hot: range) -> None:
    for seq in range(first, first + 8):
        rig.pair(camera, seq, 2.0 if seq in hot else 0.3)


def test_a_full_disk_under_the_local_store_is_survived_and_recovered(disk, tmp_path, caplog) -> None:
    cfg = eager_config(tmp_path, store={"kind": "local", "dir": str(disk.root / "alerts")})
    rig = Rig(cfg)
    alert(rig, "cam", 0, range(2, 4))
    rig.drain()
    [first] = rig.store.list("cam")
    assert first.status == "closed" and first.clip_ready
    before = snapshot(disk.root / "alerts")
    events_before = (disk.root / "alerts" / "events.jsonl").read_bytes()

    disk.fill()
    alert(rig, "cam", 20, range(22, 24))
    with caplog.at_level(logging.INFO, logger="alerting.worker"):
        t0 = time.monotonic()
        rig.drain()  # the worker keeps consuming: nothing waits for the disk
        assert time.monotonic() - t0 < 20
    assert rig.value("vigil_alert_scores_in_total", camera="cam") == 16  # every score processed
    assert rig.worker.queued_writes >= 2  # start and end of the second alert, kept in memory
    assert rig.value("vigil_alert_store_errors_total", reason="ENOSPC") >= 1
    assert rig.metrics.store_queued._value.get() == rig.worker.queued_writes
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert str(disk.root / "alerts") in line and "No space left on device" in line and "ENOSPC" in line
    assert rig.bus.lag("alert", [FRAMES_TOPIC, SCORES_TOPIC]) > 0  # the second alert's records are held
    # nothing stored before is harmed, no temporary file is left, the event log reads whole
    after = snapshot(disk.root / "alerts")
    for name, data in before.items():
        if name != "events.jsonl":
            assert after[name] == data, name
    assert after["events.jsonl"].startswith(events_before)
    assert [json.loads(line) for line in after["events.jsonl"].splitlines()]
    assert not [n for n in after if n.endswith(".tmp")]
    assert [r.alert_id for r in rig.store.list("cam")] == [first.alert_id]

    disk.free()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="alerting.worker"):
        rig.worker._queue_retry_at = 0.0
        rig.worker.housekeeping(now=time.monotonic() + 5)
    assert rig.worker.queued_writes == 0
    assert any("writable again" in r.getMessage() for r in caplog.records)
    second = [r for r in rig.store.list("cam") if r.alert_id != first.alert_id]
    assert len(second) == 1 and second[0].status == "closed" and second[0].clip_ready
    states = [(e["alert_id"], e["state"]) for e in rig.events()]
    assert (second[0].alert_id, "start") in states and (second[0].alert_id, "end") in states
    rig.worker.finish_all()
    assert rig.bus.lag("alert", [FRAMES_TOPIC, SCORES_TOPIC]) == 0


def test_a_full_disk_under_the_spool_is_a_clear_error_that_harms_nothing(disk) -> None:
    cfg = RedisStoreConfig(url="redis://127.0.0.1:9/0", socket_timeout_s=0.2, spool_dir=disk.root / "spool")
    store = SpoolingStore(RedisStore(cfg), Spool(cfg.spool_dir, cfg.spool_max_bytes, cfg.spool_max_entries))
    assert store.put(write(record("cam-000000001", start_seq=1, version=1), clip=b"c" * 1000)).spooled
    before = snapshot(disk.root / "spool")
    disk.fill()
    with pytest.raises(StoreWriteError) as info:
        store.put(write(record("cam-000000002", start_seq=2, version=2), clip=b"c" * 200_000))
    assert str(disk.root / "spool") in str(info.value) and "ENOSPC" in str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert store.pending() == 1 and store.spool.bytes == sum(len(v) for v in before.values())
    after = {k: v for k, v in snapshot(disk.root / "spool").items() if k != "filler"}
    assert after == before  # the spooled write is intact, no temporary file is left
    disk.free()
    assert store.put(write(record("cam-000000002", start_seq=2, version=2), clip=b"c" * 1000)).spooled
    assert store.pending() == 2


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_failing_write_leaves_every_stored_file_as_it_was(tmp_path, monkeypatch, code) -> None:
    store = LocalStore(LocalStoreConfig(dir=tmp_path / "alerts"))
    store.put(write(record("cam-000000001", start_seq=1, version=1), clip=b"first clip", snapshot=b"jpg"))
    before = snapshot(tmp_path / "alerts")

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(local_mod.os, "fsync", failing_fsync)
    with pytest.raises(StoreWriteError) as info:  # a newer version of the same alert, with a new clip
        store.put(write(record("cam-000000001", start_seq=1, version=2), "update", clip=b"second clip"))
    assert errno.errorcode[code] in str(info.value) and str(tmp_path / "alerts") in str(info.value)
    monkeypatch.undo()
    assert snapshot(tmp_path / "alerts") == before  # clip, record, index, event log: untouched
    assert store.get("cam-000000001").version == 1  # type: ignore[union-attr]


def test_an_event_line_that_cannot_be_appended_whole_is_cut_off(tmp_path, monkeypatch) -> None:
    store = LocalStore(LocalStoreConfig(dir=tmp_path / "alerts"))
    store.put(write(record("cam-000000001", start_seq=1, version=1)))
    log_before = store.events_path.read_bytes()
    real_open = open

    class HalfWriter:
        def __init__(self, fh) -> None:
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.fh.close()

        def seek(self, *a):
            return self.fh.seek(*a)

        def truncate(self, n):
            return self.fh.truncate(n)

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self) -> None:
            self.fh.flush()

    def half_open(path, mode="r", *a, **kw):
        fh = real_open(path, mode, *a, **kw)
        return HalfWriter(fh) if mode == "ab" else fh

    monkeypatch.setattr(local_mod, "open", half_open, raising=False)
    with pytest.raises(StoreWriteError):
        store.put(write(record("cam-000000002", start_seq=2, version=2)))
    assert store.events_path.read_bytes() == log_before  # the half line was cut off again
    monkeypatch.undo()
    assert store.put(write(record("cam-000000002", start_seq=2, version=2))).publish
    entries = [json.loads(line) for line in store.events_path.read_text().splitlines()]
    assert [e["event"]["alert_id"] for e in entries] == ["cam-000000001", "cam-000000002"]


def test_a_retried_write_does_not_append_its_event_twice(tmp_path, monkeypatch) -> None:
    store = LocalStore(LocalStoreConfig(dir=tmp_path / "alerts"))
    write_atomic = local_mod.write_atomic

    def record_write_fails(path, data):
        if path.parent.name == "alerts":
            raise StoreWriteError(path, ENOSPC)
        write_atomic(path, data)

    monkeypatch.setattr(local_mod, "write_atomic", record_write_fails)
    w = write(record("cam-000000001", start_seq=1, version=1))
    with pytest.raises(StoreWriteError):
        store.put(w)  # the event line went in, the record (with its marker) did not
    monkeypatch.undo()
    assert store.put(w).publish
    assert [e[1]["event_id"] for e in store.events(None)] == [w.event_id]  # once


def test_the_alert_worker_counts_an_unwritable_store_by_reason(tmp_path, monkeypatch, caplog) -> None:
    rig = Rig(eager_config(tmp_path))

    def denied(fd):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(local_mod.os, "fsync", denied)
    with caplog.at_level(logging.ERROR, logger="alerting.worker"):
        alert(rig, "cam", 0, range(2, 4))
        rig.drain()
    assert rig.value("vigil_alert_store_errors_total", reason="EACCES") >= 1
    assert rig.worker.queued_writes >= 1 and rig.value("vigil_alert_scores_in_total", camera="cam") == 8
    [line] = [r.getMessage() for r in caplog.records]
    assert "Permission denied" in line and str(tmp_path / "alerts") in line
    monkeypatch.undo()
    rig.worker._queue_retry_at = 0.0
    rig.worker.housekeeping(now=time.monotonic() + 5)
    assert rig.worker.queued_writes == 0 and [r.status for r in rig.store.list("cam")] == ["closed"]

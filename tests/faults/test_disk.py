"""The alert store's disk fills up during a replay, under the roles as processes.

The alert role's local store (``kind: local``) and, in a second alert role of its own group,
the on-disk spool of a Redis store whose Redis is down both lie on a small tmpfs, mounted by
the test (root with CAP_SYS_ADMIN: here and on CI). Where ``mount`` is refused (or with
``VIGIL_TEST_SIMULATED_DISK=1``) the alert roles run with a ``sitecustomize`` that makes every
write under the disk fail with ENOSPC while a flag file exists: the same decision as
tests/alerting/test_disk_full.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.faults.deploy import (
    CHECKER,
    NORMAL,
    Deployment,
    Role,
    camera,
    check_store,
    paced_folder,
    tracebacks,
    wait_for,
)
from tests.servers import RedisServer

STEP = 12  # frame k is seq 12k: about 2 frames/s
#: normal frames, an anomaly (stored before the disk fills), normal frames (the disk fills
#: here), a second anomaly (while it is full), normal frames for its end and clip
CONTENT = NORMAL[:3] + CHECKER[:6] + NORMAL[3:15] + CHECKER[6:12] + NORMAL[15:26]
FULL_AFTER_SCORES_S = 2.0  # the disk stays full this long after the last frame was scored

_SITECUSTOMIZE = '''\
import builtins, errno, os
_root = os.environ.get("VIGIL_TEST_SIM_DISK")
if _root:
    _open = builtins.open
    def _full_open(path, mode="r", *args, **kw):
        if (any(c in mode for c in "wax") and isinstance(path, (str, os.PathLike))
                and os.fspath(path).startswith(_root) and os.path.exists(_root + ".full")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
        return _open(path, mode, *args, **kw)
    builtins.open = _full_open
'''


class Disk:
    """A small disk for the alert roles: a real tmpfs, or a simulated one (see the module)."""

    def __init__(self, root: Path, size: str = "4m") -> None:
        self.root = root
        root.mkdir(parents=True)
        self.kind = "tmpfs" if self._mount(size) else "simulated"
        self.env: dict[str, str] = {}
        if self.kind == "simulated":
            site = root.parent / "sim-site"
            site.mkdir()
            (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
            path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
            self.env = {"PYTHONPATH": path, "VIGIL_TEST_SIM_DISK": str(root)}

    def _mount(self, size: str) -> bool:
        if os.environ.get("VIGIL_TEST_SIMULATED_DISK"):
            return False
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}",
                                   f"vigil-test-{uuid.uuid4().hex[:8]}", str(self.root)],
                                  capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0

    def fill(self) -> None:
        if self.kind == "simulated":
            Path(f"{self.root}.full").touch()
            return
        with open(self.root / "filler", "wb", buffering=0) as fh:
            for chunk in (65536, 4096, 1):
                with contextlib.suppress(OSError):
                    while True:
                        fh.write(b"\0" * chunk)
        with contextlib.suppress(OSError):  # the disk is full: not one byte more
            with open(self.root / "probe", "wb", buffering=0) as fh:
                fh.write(b"x")
            raise AssertionError(f"{self.root} is not full")

    def free(self) -> None:
        if self.kind == "simulated":
            Path(f"{self.root}.full").unlink()
            return
        (self.root / "filler").unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.root / "probe").unlink()

    def unmount(self) -> None:
        if self.kind == "tmpfs":
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True, timeout=10)


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the filler, by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.name not in ("filler", "probe")}


def local_records(store: Path) -> list[dict]:
    """The alert records of the local store, read from its files (no store opened)."""
    return [json.loads(p.read_text())["record"] for p in sorted((store / "alerts").glob("*.json"))]


def complete(store: Path, rec: dict) -> bool:
    clip = store / "clips" / f"{rec['alert_id']}.mp4"
    snap = store / "snaps" / f"{rec['alert_id']}.jpg"
    return (rec["status"] == "closed" and rec["clip_ready"] and clip.exists() and snap.exists()
            and clip.read_bytes()[4:8] == b"ftyp" and snap.read_bytes()[:2] == b"\xff\xd8")


def start_role(d: Deployment, name: str, cfg: dict, env: dict[str, str]) -> Role:
    """A role process with ``env`` added to its environment (the simulated disk)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        role = Role(d.work, name, "alert", cfg)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    d.roles.append(role)
    return role


@pytest.mark.kafka
def test_the_alert_stores_disk_fills_up(tmp_path: Path, registry, checker_folder: Path, fault_row) -> None:
    """1 camera replays 2 anomalies at 2 frames/s. Once the first alert is stored complete, the
    disk under the local store and under the spool (of a second alert role whose Redis is down)
    is filled until every frame is scored; then it is freed, and Redis started. Each role logs
    one error naming its path and counts ENOSPC; the detector keeps scoring; what was stored
    before is untouched; every alert ends up stored exactly once."""
    disk = Disk(tmp_path / "disk")
    store_dir, spool_dir = disk.root / "alerts", disk.root / "spool"
    redis = RedisServer(tmp_path / "redis")  # not started: the spool role's Redis is down
    redis.workdir.mkdir()
    seqs = paced_folder(tmp_path / "cam", checker_folder, CONTENT, step=STEP)
    expected = {("disk0", s) for s in seqs}
    first = (seqs[3], seqs[8])
    second = (seqs[21], seqs[26])
    try:
        with Deployment(tmp_path, registry.root, redis.url, [camera("disk0", tmp_path / "cam")],
                        store={"kind": "local", "dir": str(store_dir), "retention_s": 3600}) as d:
            [detect] = d.start_roles("detect")
            alert = start_role(d, "alert", d.config("alert"), disk.env)
            spool_cfg = d.config("alert-spool")
            spool_cfg["alerting"] = spool_cfg["alerting"] | {
                "group": "vigil-alert-spool",
                "store": {"kind": "redis", "url": redis.url, "retention_s": 3600, "spool_dir": str(spool_dir),
                          "socket_timeout_s": 1.0}}
            spooler = start_role(d, "alert-spool", spool_cfg, disk.env)
            for r in (alert, spooler):
                r.wait_serving()
            obs = d.observe()
            ingest = d.start("ingest", "ingest", wait=False)
            roles = [detect, alert, spooler, ingest]

            def first_stored() -> bool:
                recs = local_records(store_dir) if (store_dir / "alerts").exists() else []
                return (any(complete(store_dir, r) for r in recs)
                        and spooler.metric("vigil_alert_spooled_writes") >= 2)

            wait_for(first_stored, 60, "the first alert stored (local) and spooled", roles)
            before, spooled_before = files(store_dir), files(spool_dir)
            [rec1] = local_records(store_dir)
            assert first[0] <= rec1["start_seq"] <= first[1], rec1
            disk.fill()
            filled = time.monotonic()
            scored_at_fill = len(obs.scored())

            obs.wait(lambda: expected <= set(obs.scores), 60, "a score for every frame", roles)
            time.sleep(FULL_AFTER_SCORES_S)
            scored_while_full = len(obs.scored()) - scored_at_fill
            errors = {r.name: r.metric("vigil_alert_store_errors_total", reason="ENOSPC")
                      for r in (alert, spooler)}
            queued = {r.name: r.metric("vigil_alert_store_queued_writes") for r in (alert, spooler)}
            lines = {r.name: [ln for ln in r.grep("ERROR") if "No space left on device" in ln]
                     for r in (alert, spooler)}
            during, spooled_during = files(store_dir), files(spool_dir)
            full_s = time.monotonic() - filled

            disk.free()
            freed = time.monotonic()

            def local_done() -> bool:
                recs = local_records(store_dir)
                return sum(complete(store_dir, r) for r in recs) >= 2 and not alert.metric(
                    "vigil_alert_store_queued_writes")

            done = wait_for(local_done, 60, "the second alert stored once the disk is free", roles)
            wait_for(lambda: not spooler.metric("vigil_alert_store_queued_writes"), 60,
                     "the spool role's writes kept in memory spooled", roles)
            spool_done = time.monotonic()
            redis.start()
            anomalies = {"disk0": [first, second]}
            wait_for(lambda: check_store(redis.url, tmp_path / "check-spool", anomalies).lost == 0, 60,
                     "the spooled alerts applied to Redis", roles)
            ingest.proc.wait(30)
            for r in (alert, spooler):
                r.stop()
            redis_stored = check_store(redis.url, tmp_path / "check-spool", anomalies)

            from alerting.config import LocalStoreConfig
            from alerting.store import LocalStore

            store = LocalStore(LocalStoreConfig(dir=store_dir, retention_s=3600))
            recs = sorted(store.list("disk0"), key=lambda r: r.start_seq)
            event_ids = [e["event_id"] for _id, e in store.events(None, count=100_000)]
            local_lost = sum(not any(lo <= r.start_seq <= hi and r.status == "closed" and r.clip_ready
                                     for r in recs) for lo, hi in (first, second))
            local_dups = max(0, len(recs) - 2) + len(event_ids) - len(set(event_ids))
            lost = len(expected - obs.scored())
            what = "a 4 MiB tmpfs" if disk.kind == "tmpfs" else "a simulated disk"
            fault_row(8, "alert store's disk full (local store on a full tmpfs)", lost,
                      local_lost + redis_stored.lost, local_dups + redis_stored.duplicates, done - freed,
                      f"{what} full {full_s:.0f} s, during the second alert: "
                      f"{len(lines['alert'])} error line naming the path, ENOSPC counted "
                      f"{errors['alert']:.0f} times, {queued['alert']:.0f} writes kept in memory, "
                      f"{scored_while_full} frames scored meanwhile; what was stored before unchanged; "
                      "the spool of a Redis store (Redis down) on the same disk: "
                      f"{len(lines['alert-spool'])} error line, {errors['alert-spool']:.0f} ENOSPC, "
                      "spooled once freed "
                      f"({spool_done - freed:.0f} s) and applied when Redis came up")

            assert lost == 0
            assert scored_while_full >= 10, "the detector stopped scoring while the disk was full"
            for name, path in (("alert", store_dir), ("alert-spool", spool_dir)):
                assert errors[name] >= 1, (name, errors)
                assert queued[name] >= 1, (name, queued)
                assert len(lines[name]) == 1, (name, lines[name])
                assert str(path) in lines[name][0] and "ENOSPC" in lines[name][0], lines[name]
            # nothing stored before the disk filled is harmed; nothing was written meanwhile
            assert during == before
            assert spooled_during == spooled_before
            assert json.loads(before[f"alerts/{rec1['alert_id']}.json"])["record"] == rec1
            after = files(store_dir)
            for name, data in before.items():
                if name not in ("events.jsonl",) and not name.startswith("index/"):
                    assert after[name] == data, name
            assert after["events.jsonl"].startswith(before["events.jsonl"])
            assert all(json.loads(line) for line in after["events.jsonl"].splitlines())
            assert not [n for n in after if n.endswith(".tmp")]
            assert [(r.alert_id, r.status) for r in recs][0] == (rec1["alert_id"], "closed")
            assert local_lost == 0 and local_dups == 0, [(r.alert_id, r.start_seq, r.status) for r in recs]
            assert not redis_stored.problems, redis_stored.problems
            assert not tracebacks(roles), [r.tail() for r in roles]
            assert not spool_dir.exists() or not [n for n in files(spool_dir) if n.endswith(".spool")]
    finally:
        redis.stop()
        disk.unmount()


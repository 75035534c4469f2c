"""Redis is killed during an alert and started again, under the roles as processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.deploy import (
    Deployment,
    PersistentRedis,
    camera,
    check_store,
    event_problems,
    paced_folder,
    replay_content,
    tracebacks,
    wait_for,
)

DOWN_S = 12.0


@pytest.mark.kafka
def test_redis_killed_during_an_alert(tmp_path: Path, registry, checker_folder: Path, fault_row) -> None:
    """2 cameras replay at 1 frame/s. Redis (append-only file, as in docker-compose.yml) is
    SIGKILLed once both alerts have started and stays down 12 s, past their end and clip;
    the alert role spools its writes on disk and applies them when Redis is back. Each alert,
    its clip and its snapshot are stored once, every event once."""
    redis = PersistentRedis(tmp_path / "redis-data")
    redis.workdir.mkdir()
    redis.start()
    cams, expected, anomalies = [], set(), {}
    for i in range(2):
        seqs = paced_folder(tmp_path / f"cam{i}", checker_folder, replay_content(4, 8, 10, offset=17 * i))
        cams.append(camera(f"red{i}", tmp_path / f"cam{i}"))
        expected |= {(f"red{i}", s) for s in seqs}
        anomalies[f"red{i}"] = [(seqs[4], seqs[11])]
    try:
        with Deployment(tmp_path, registry.root, redis.url, cams) as d:
            detect, alert = d.start_roles("detect", "alert")
            obs = d.observe()
            ingest = d.start("ingest", "ingest", wait=False)
            roles = [detect, alert, ingest]
            obs.wait(lambda: len({e.camera for e in obs.events if e.state == "start"}) == 2, 60,
                     "both alerts to start", roles)
            redis.kill()
            killed = time.monotonic()
            spooled = 0.0
            while time.monotonic() - killed < DOWN_S:
                spooled = max(spooled, alert.metric("vigil_alert_spooled_writes"))
                time.sleep(0.5)
            redis.start()
            back = time.monotonic()
            obs.wait(lambda: expected <= set(obs.scores), 60, "a score for every frame", roles)

            def complete() -> bool:
                return check_store(redis.url, tmp_path / "check-spool", anomalies).lost == 0

            done = wait_for(complete, 60, "both alerts complete in Redis", roles)
            ingest.proc.wait(30)
            stored = check_store(redis.url, tmp_path / "check-spool", anomalies)
            problems = stored.problems + event_problems(obs, stored)
            unavailable = alert.metric("vigil_alert_store_unavailable_total")
            lost = len(expected - obs.scored())
            fault_row(6, "Redis killed (SIGKILL) during an alert, restarted", lost, stored.lost,
                      stored.duplicates, done - back,
                      f"down {back - killed:.0f} s, past both alerts' end and clip: up to {spooled:.0f} "
                      f"writes waited in the alert role's on-disk spool ({unavailable:.0f} times Redis was "
                      "unavailable) and were applied when it was back; Redis keeps an append-only file, "
                      "as in docker-compose.yml")
            assert lost == 0
            assert spooled > 0, "nothing was spooled: Redis was not needed while it was down"
            assert not problems, problems
            assert not tracebacks(roles), [r.tail() for r in roles]
    finally:
        redis.stop()

"""The broker fails under a running deployment: frozen (SIGSTOP) for 30 s, then killed and
started again empty. The roles run as processes on tansu and redis-server (tests/faults/deploy.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from common.messages import FRAMES_TOPIC, SCORES_TOPIC
from tests.faults.deploy import (
    Deployment,
    Role,
    camera,
    check_store,
    event_problems,
    paced_folder,
    partition_counts,
    replay_content,
    tracebacks,
    wait_for,
)

FREEZE_S = 30.0
IDLE_S = 10.0  # alerting.idle_timeout_s: well inside the freeze, so the outcome does not hang on timing


def resent(ingest: Role) -> str:
    """What the ingest process's log says of frames the bus did not confirm (sent again)."""
    lines = ingest.grep("not confirmed by the bus")
    outcome = "none lost" if ingest.proc.returncode == 0 else f"ingest exited {ingest.proc.returncode}"
    return (f"the ingest sent unconfirmed frames again ({len(lines)} log line(s)), {outcome}" if lines
            else "every ingest flush confirmed")


@pytest.mark.kafka
def test_broker_frozen_for_30_s(tmp_path: Path, registry, redis_url: str, checker_folder: Path,
                                fault_row) -> None:
    """4 cameras replay at 1 frame/s; each has an anomaly that starts before the freeze and one
    after it. The broker is frozen as soon as every camera's first alert has started, for 30 s.
    Every frame is scored (after de-duplication, once), each anomaly gives one alert: the
    alert open across the freeze too, although the alert role heard nothing for longer than
    its ``idle_timeout_s`` (10 s here; a camera whose frames the broker holds back has not
    gone silent)."""
    cams, expected, anomalies = [], set(), {}
    for i in range(4):
        # frames 2-9 and 36-43 show the checkerboard; at 1 frame/s the freeze covers 5-34
        content = replay_content(2, 8, 26, offset=11 * i) + replay_content(0, 8, 6, offset=11 * i + 26)
        seqs = paced_folder(tmp_path / f"cam{i}", checker_folder, content)
        cams.append(camera(f"frz{i}", tmp_path / f"cam{i}"))
        expected |= {(f"frz{i}", s) for s in seqs}
        anomalies[f"frz{i}"] = [(seqs[2], seqs[9]), (seqs[36], seqs[43])]
    with Deployment(tmp_path, registry.root, redis_url, cams, idle_timeout_s=IDLE_S) as d:
        detect, alert = d.start_roles("detect", "alert")
        obs = d.observe()
        ingest = d.start("ingest", "ingest", wait=False)
        roles = [detect, alert, ingest]
        obs.wait(lambda: len({e.camera for e in obs.events if e.state == "start"}) == 4, 60,
                 "every camera's first alert", roles)
        before = len(obs.scores)
        d.broker.freeze()
        frozen_at = time.monotonic()
        time.sleep(FREEZE_S)
        d.broker.resume()
        resumed = time.monotonic()
        obs.wait(lambda: expected <= set(obs.scores), 120, "a score for every frame", roles)
        first_score = obs.first_score_after(resumed)
        obs.wait(lambda: len({e.camera for e in obs.events if e.state == "end"
                              and e.start_seq >= anomalies[e.camera][1][0]}) == 4,
                 60, "the alerts after the freeze to end", roles)
        ingest.proc.wait(60)
        stored = check_store(redis_url, tmp_path / "check-spool", anomalies)
        problems = stored.problems + event_problems(obs, stored)
        lost = len(expected - obs.scored())
        redelivered, conflicting = obs.redelivered(), obs.conflicting()
        recovery = (first_score - resumed) if first_score is not None else None
        first_event = min((e.at for e in obs.events if e.at > resumed), default=None)
        split = sum(len([r for r in records if first <= r.start_seq <= last]) > 1
                    for cam, records in stored.alerts.items() for first, last in anomalies[cam][:1])
        fault_row(1, "broker frozen (SIGSTOP) 30 s, 4-camera replay", lost, stored.lost,
                  stored.duplicates + conflicting, recovery,
                  f"{before} frames scored before the freeze, {len(expected) - before} after; "
                  f"{redelivered} score records redelivered (dropped by de-dup); alert events resumed "
                  f"{(first_event - resumed) if first_event else float('nan'):.1f} s after; "
                  + (f"{split} of the 4 alerts open across the freeze were ended by the alert role's idle "
                     f"timeout ({IDLE_S:g} s) and started again: two alerts for one anomaly"
                     if split else f"the 4 alerts open across the {resumed - frozen_at:.0f} s freeze each "
                     "stayed one alert") + f"; {resent(ingest)}")
        assert ingest.proc.returncode == 0, ingest.tail()
        assert lost == 0 and conflicting == 0
        assert not problems, problems
        assert not tracebacks(roles), [r.tail() for r in roles]


@pytest.mark.kafka
def test_broker_killed_and_restarted_empty(tmp_path: Path, registry, redis_url: str, checker_folder: Path,
                                           fault_row) -> None:
    """tansu keeps everything in memory: SIGKILL loses its topics, records, committed offsets
    and groups. It is killed once the roles have processed everything it held (lag 0) and
    brought back, empty, at its address 6 s later, while the cameras keep replaying. No role
    is restarted: each reconnects, the topics come back, the pipeline resumes."""
    cams, expected, anomalies = [], set(), {}
    for i in range(4):
        # 4 frames, 3 s without a frame (the kill), then 2 normal, 8 anomalous, 6 normal
        content = [*replay_content(4, 0, 0, offset=9 * i), *[None] * 3,
                   *replay_content(2, 8, 6, offset=9 * i + 4)]
        seqs = paced_folder(tmp_path / f"cam{i}", checker_folder, content)
        cams.append(camera(f"kil{i}", tmp_path / f"cam{i}"))
        expected |= {(f"kil{i}", s) for s in seqs}
        anomalies[f"kil{i}"] = [(seqs[6], seqs[13])]
    part_a = {(c, s) for c, s in expected if s < 4 * 25}
    with Deployment(tmp_path, registry.root, redis_url, cams) as d:
        detect, alert = d.start_roles("detect", "alert")
        obs = d.observe()
        ingest = d.start("ingest", "ingest", wait=False)
        roles = [detect, alert, ingest]
        obs.wait(lambda: part_a <= set(obs.scores), 60, "the first 4 frames of each camera scored", roles)
        wait_for(lambda: alert.metric("vigil_alert_scores_in_total") >= len(part_a), 20,
                 "the alert role to process them", roles)
        with obs.lock:
            held = (len(obs.frames), sum(map(len, obs.scores.values())), len(obs.events))
        sent_before = ingest.metric("vigil_ingest_frames_published_total")
        d.broker.kill()
        killed = time.monotonic()
        time.sleep(6.0)
        sent_down = ingest.metric("vigil_ingest_frames_published_total") - sent_before
        d.broker.restart_empty()
        restarted = time.monotonic()
        obs.wait(lambda: expected <= set(obs.scores), 90, "a score for every frame", roles)
        first_score = obs.first_score_after(restarted)
        obs.wait(lambda: len({e.camera for e in obs.events if e.state == "end"}) == 4, 60,
                 "each camera's alert to end", roles)
        ingest.proc.wait(60)
        stored = check_store(redis_url, tmp_path / "check-spool", anomalies)
        problems = stored.problems + event_problems(obs, stored)
        counts = partition_counts(d.kafka)
        alive = {r.name: r.alive for r in (detect, alert)}
        lost = len(expected - obs.scored())
        conflicting = obs.redelivered(), obs.conflicting()
        recovery = (first_score - restarted) if first_score is not None else None
        fault_row(2, "broker killed (SIGKILL), restarted empty", lost, stored.lost,
                  stored.duplicates + conflicting[1], recovery,
                  f"in-memory storage: the {held[0]} frames and {held[1]} scores it held, its topics, "
                  "committed offsets and groups were gone after the restart (all consumed before the "
                  f"kill); down {restarted - killed:.0f} s, {sent_down:.0f} frames sent meanwhile (kept "
                  "by the ingest producer, delivered after); topics provisioned again as it came up "
                  f"({'/'.join(map(str, sorted(set(counts.values()))))} partitions); no role restarted; "
                  f"{conflicting[0]} score records redelivered; {resent(ingest)}")
        assert alive == {"detect": True, "alert": True}
        assert ingest.proc.returncode == 0, ingest.tail()
        assert lost == 0 and conflicting[1] == 0
        assert counts[FRAMES_TOPIC] == counts[SCORES_TOPIC] > 0, counts
        assert not problems, problems
        assert not tracebacks(roles), [r.tail() for r in roles]

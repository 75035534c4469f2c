"""Detector and alert workers fail: one killed mid-batch and replaced; two of each sharing
4 partitions, one of each killed mid-replay; a deployment whose frame and score topics are
not co-partitioned is refused at start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from common.bus import BusError, KafkaBus
from common.messages import FRAMES_TOPIC, SCORES_TOPIC
from tests.conftest import REPO
from tests.faults.deploy import (
    CHILD_ENV,
    TOPICS,
    Broker,
    Deployment,
    Role,
    camera,
    check_store,
    committed,
    event_problems,
    one_per_partition,
    paced_folder,
    partition_counts,
    replay_content,
    role_config,
    tracebacks,
    wait_for,
)


def _cameras(tmp_path: Path, checker_folder: Path, ids: list[str], before: int, anomaly: int, after: int,
             **extra: object) -> tuple[list[dict], set[tuple[str, int]], dict[str, list[tuple[int, int]]]]:
    cams, expected, anomalies = [], set(), {}
    for i, cid in enumerate(ids):
        content = replay_content(before, anomaly, after, offset=13 * i)
        seqs = paced_folder(tmp_path / cid, checker_folder, content)
        cams.append(camera(cid, tmp_path / cid, **extra))
        expected |= {(cid, s) for s in seqs}
        anomalies[cid] = [(seqs[before], seqs[before + anomaly - 1])]
    return cams, expected, anomalies


@pytest.mark.kafka
def test_detector_killed_mid_batch_and_replaced(tmp_path: Path, registry, redis_url: str,
                                                checker_folder: Path, fault_row) -> None:
    """4 cameras replay 30 frames each as fast as they can; the detector is SIGKILLed while it
    holds a polled, uncommitted batch, and a new detector process is started. The new one
    reads from the last commit: every frame is scored, the redelivered ones twice (the same
    score both times), and each camera's anomaly gives one alert."""
    cams, expected, anomalies = _cameras(tmp_path, checker_folder, [f"det{i}" for i in range(4)], 4, 8, 18,
                                         realtime=False)
    with Deployment(tmp_path, registry.root, redis_url, cams) as d:
        first, alert = d.start_roles("detect", "alert")
        obs = d.observe()
        ingest = d.start("ingest", "ingest", wait=False)
        roles = [first, alert, ingest]
        polled = published = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill while a polled batch is not yet published
            polled = first.metric("vigil_detector_frames_in_total")
            published = first.metric("vigil_detector_frames_scored_total")
            if published >= 16 and polled > published:
                first.kill()
                break
        assert not first.alive, "the detector never held an unpublished batch"
        killed = time.monotonic()
        with obs.lock:
            before = set(obs.scores)
        done = committed(d.kafka, "vigil-detector")
        second = d.start("detect2", "detect", wait=False)
        roles.append(second)
        obs.wait(lambda: expected <= set(obs.scores), 90, "a score for every frame", roles)
        recovery = obs.first_score_after(killed)
        obs.wait(lambda: len({e.camera for e in obs.events if e.state == "end"}) == 4, 60,
                 "each camera's alert to end", roles)
        ingest.proc.wait(30)
        stored = check_store(redis_url, tmp_path / "check-spool", anomalies)
        problems = stored.problems + event_problems(obs, stored)
        lost, conflicting, redelivered = len(expected - obs.scored()), obs.conflicting(), obs.redelivered()
        fault_row(3, "detector killed mid-batch (SIGKILL), new one started", lost, stored.lost,
                  stored.duplicates + conflicting, None if recovery is None else recovery - killed,
                  f"killed holding {polled - done:.0f} polled, uncommitted frames "
                  f"({polled - published:.0f} of them not yet scored); {len(before)} of {len(expected)} "
                  "frames scored before the kill; "
                  f"{redelivered} scores published twice, identical; recovery includes the new "
                  "process's start (model load, group join)")
        assert polled - done > 0, "the kill did not catch an uncommitted batch"
        assert lost == 0 and conflicting == 0
        assert not problems, problems
        assert not tracebacks([alert, ingest, second]), [r.tail() for r in roles]


@pytest.mark.kafka
def test_two_detectors_and_two_alert_workers_one_of_each_killed(tmp_path: Path, registry, redis_url: str,
                                                                checker_folder: Path, fault_row) -> None:
    """4 cameras, one per partition, replay at 1 frame/s. Two detector processes share the 4
    partitions, and two alert processes. One detector is SIGKILLed mid-replay, then the alert
    worker that owns a camera whose alert has just started: the survivors take the partitions
    over. Every frame is scored (once after de-duplication); each camera's anomaly is one alert,
    stored once; frames and scores of a camera share one partition."""
    ids = one_per_partition("sc")
    cams, expected, anomalies = _cameras(tmp_path, checker_folder, ids, 6, 8, 8)
    with Deployment(tmp_path, registry.root, redis_url, cams) as d:
        detectors = [d.start(f"detect{i}", "detect", wait=False) for i in range(2)]
        alerts = [d.start(f"alert{i}", "alert", wait=False) for i in range(2)]
        for r in detectors + alerts:
            r.wait_serving()
        obs = d.observe()
        ingest = d.start("ingest", "ingest", wait=False)
        roles = [*detectors, *alerts, ingest]

        def owners(rs: list[Role], metric: str) -> dict[str, set[str]]:
            return {r.name: {cid for cid in ids if r.metric(metric, camera=cid) > 0} for r in rs}

        wait_for(lambda: all(owners(detectors, "vigil_detector_frames_scored_total").values()), 30,
                 "both detectors to score frames", roles)
        split = owners(detectors, "vigil_detector_frames_scored_total")
        victim, survivor = detectors
        victim.kill()
        det_killed = time.monotonic()
        taken = wait_for(lambda: split[victim.name] <= owners(
            [survivor], "vigil_detector_frames_scored_total")[survivor.name], 60,
            "the survivor to score the victim's cameras", roles)
        alert_split = owners(alerts, "vigil_alert_scores_in_total")
        assert all(alert_split.values()), f"an alert worker has no camera: {alert_split}"
        a_victim, a_survivor = alerts
        obs.wait(lambda: any(e.state == "start" and e.camera in alert_split[a_victim.name]
                             for e in obs.events), 60, f"an alert on a camera of {a_victim.name}", roles)
        a_victim.kill()
        al_killed = time.monotonic()
        took_over = wait_for(lambda: alert_split[a_victim.name] <= owners(
            [a_survivor], "vigil_alert_scores_in_total")[a_survivor.name], 60,
            "the alert survivor to take the victim's cameras", roles)
        obs.wait(lambda: expected <= set(obs.scores), 90, "a score for every frame", roles)
        obs.wait(lambda: len({e.camera for e in obs.events if e.state == "end"}) == 4, 60,
                 "each camera's alert to end", roles)
        ingest.proc.wait(30)
        stored = check_store(redis_url, tmp_path / "check-spool", anomalies)
        problems = stored.problems + event_problems(obs, stored)
        counts = partition_counts(d.kafka)
        with obs.lock:
            parts = {cid: (set(obs.partitions[(FRAMES_TOPIC, cid)]), set(obs.partitions[(SCORES_TOPIC, cid)]))
                     for cid in ids}
        lost, conflicting, redelivered = len(expected - obs.scored()), obs.conflicting(), obs.redelivered()
        co = all(len(f) == 1 and f == s for f, s in parts.values())
        fault_row(4, "scaling: 2 detectors on 4 partitions, one killed (SIGKILL) mid-replay", lost, 0,
                  conflicting, taken - det_killed,
                  f"split {sorted(map(sorted, split.values()))}; the survivor scored the victim's cameras "
                  f"{sorted(split[victim.name])} after the session timeout; {redelivered} scores "
                  "redelivered; "
                  f"frames and scores co-partitioned: {co} ({counts[FRAMES_TOPIC]} = {counts[SCORES_TOPIC]} "
                  "partitions, each camera's frames and scores in one partition)")
        fault_row(5, "scaling: 2 alert workers, one killed (SIGKILL) during an alert", 0, stored.lost,
                  stored.duplicates, took_over - al_killed,
                  f"split {sorted(map(sorted, alert_split.values()))}; the survivor rebuilt the alert state "
                  f"of {sorted(alert_split[a_victim.name])} from their uncommitted frames and scores: one "
                  "alert each, same id, clip and snapshot stored once")
        assert lost == 0 and conflicting == 0
        assert counts[FRAMES_TOPIC] == counts[SCORES_TOPIC] == 4
        assert co, parts
        assert sorted(next(iter(f)) for f, _s in parts.values()) == [0, 1, 2, 3]
        assert not problems, problems
        assert not tracebacks([survivor, a_survivor, ingest]), [r.tail() for r in roles]


@pytest.mark.kafka
def test_frame_and_score_topics_of_different_partition_counts_are_refused(
        tmp_path: Path, registry, redis_url: str, checker_folder: Path) -> None:
    """vigil.frames with 4 partitions, vigil.scores with 2: the bus refuses the topics, and a
    role exits at start (code 2) with a one-line error naming both counts. (Every role starts
    through the same ``Pipeline.start``; ingest and alert start in a second, a detector only
    after loading its model, so these two show it.)"""
    broker = Broker(tmp_path).start()
    try:
        kafka = broker.kafka()
        KafkaBus(kafka).ensure_topics([FRAMES_TOPIC], copartitioned=())
        KafkaBus(broker.kafka(partitions=2)).ensure_topics([SCORES_TOPIC], copartitioned=())
        with pytest.raises(BusError, match="differ in partition count"):
            KafkaBus(kafka).ensure_topics(TOPICS)
        paced_folder(tmp_path / "cam", checker_folder, replay_content(3, 0, 0))
        config = tmp_path / "roles.yaml"
        config.write_text(yaml.safe_dump(role_config(registry.root, kafka, redis_url, tmp_path / "spool",
                                                     [camera("cam", tmp_path / "cam")])))
        procs = {role: subprocess.Popen([sys.executable, "-m", "vigil", "--config", str(config), role],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                        env={**os.environ, **CHILD_ENV})
                 for role in ("ingest", "alert")}
        for role, proc in procs.items():
            _out, err = proc.communicate(timeout=120)
            errors = [line for line in err.splitlines() if line.startswith("vigil: error:")]
            assert proc.returncode == 2, (role, err[-2000:])
            assert len(errors) == 1, (role, err[-2000:])
            assert "vigil.frames (4 partitions) and vigil.scores (2 partitions)" in errors[0], errors
            assert "Traceback" not in err
            print(f"\n{role} refused at start: {errors[0]}")
        assert partition_counts(kafka) == {FRAMES_TOPIC: 4, SCORES_TOPIC: 2, "vigil.alerts": 4}
    finally:
        broker.stop()

"""A live camera goes away for 30 s and returns with a damaged stream."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.deploy import LIFECYCLE, Deployment, start_damaged_publisher, wait_for
from tests.rtsp import RtspStream

GONE_S = 30.0
WARMUP_FRAMES = 60  # decoded frames (6 s of the 10 fps stream) not scored after each connect
DAMAGED_PACKETS = 40  # the returning stream's first 4 s are damaged (noise bitstream filter)


@pytest.mark.kafka
def test_camera_gone_30_s_returns_damaged(tmp_path: Path, registry, redis_url: str, rtsp_stream: RtspStream,
                                          fault_row) -> None:
    """The RTSP publisher stops for 30 s; ingest reconnects with capped back-off, /healthz
    shows the camera down then up, the reconnect count rises. The stream comes back with
    its first packets damaged by ffmpeg's ``noise`` filter: frames PyAV flags corrupt are
    skipped and counted, the configured warm-up frames are not scored, so no anomaly score
    and no alert come from the reconnect."""
    cid = "gone"
    cam = {"id": cid, "url": rtsp_stream.url, "scene": "campus", "transport": "udp", "fps": 5,
           "watchdog_s": 2.0, "read_timeout_s": 2.0, "open_timeout_s": 3.0, "reconnect_initial_s": 0.5,
           "reconnect_max_s": 1.0, "warmup_frames": WARMUP_FRAMES}
    with Deployment(tmp_path, registry.root, redis_url, [cam]) as d:
        detect, alert = d.start_roles("detect", "alert")
        obs = d.observe()
        ingest = d.start("ingest", "ingest")
        roles = [detect, alert, ingest]

        def camera_health() -> dict:
            h = ingest.health() or {}
            return h.get("ingest", {}).get("cameras", {}).get(cid, {})

        obs.wait(lambda: len(obs.scores) >= 5, 60, "5 scored frames from the camera", roles)
        before = {n: ingest.metric(f"vigil_ingest_{n}_total", camera=cid)
                  for n in ("reconnects", "frames_warmup", "frames_corrupt")}
        up = camera_health()
        rtsp_stream.stop()
        gone = time.monotonic()
        wait_for(lambda: camera_health().get("ok") is False, 15, "/healthz to show the camera down", roles)
        down = camera_health()
        down_status = (ingest.health() or {}).get("status")
        time.sleep(max(0.0, GONE_S - (time.monotonic() - gone)))
        reconnects_gone = ingest.metric("vigil_ingest_reconnects_total", camera=cid) - before["reconnects"]
        attempts = start_damaged_publisher(rtsp_stream.server, rtsp_stream.path, DAMAGED_PACKETS)
        back = time.monotonic()
        online = wait_for(lambda: camera_health().get("ok") is True
                          and camera_health().get("state") == "streaming",
                          30, "/healthz to show the camera up again", roles)
        obs.wait(lambda: sum(at > back for at, _c, _s in obs.score_arrivals) >= 15, 60,
                 "15 scored frames after the return", roles)
        after = {n: ingest.metric(f"vigil_ingest_{n}_total", camera=cid) - before[n]
                 for n in ("reconnects", "frames_warmup", "frames_corrupt")}
        again = camera_health()
        ingest.stop()  # SIGTERM: it publishes what it holds, then every published frame gets its score

        def stale() -> float:  # live frames the detector reached too late: skipped by design, counted
            return detect.metric("vigil_detector_stale_live_frames_total")

        wait_for(lambda: len(obs.published() - obs.scored()) <= stale(), 20, "the last frames' scores", roles)
        with obs.lock:
            after_return = {(c, s) for at, c, s in obs.score_arrivals if at > back}
            returned = [max(obs.scores[k]) for k in after_return]
            events = list(obs.events)
        published = obs.published()
        skipped = stale()
        lost = len(published - obs.scored()) - int(skipped)
        fault_row(7, "camera gone 30 s (RTSP publisher stopped), returns with a damaged stream", lost,
                  0, 0, online - back,
                  f"/healthz {up.get('state')} -> {down.get('state')} (HTTP {down_status}) -> "
                  f"{again.get('state')}; {after['reconnects']:.0f} reconnect attempts "
                  f"({reconnects_gone:.0f} while gone, capped back-off); on return "
                  f"{after['frames_corrupt']:.0f} frames PyAV flags corrupt skipped, "
                  f"{after['frames_warmup']:.0f} warm-up frames not scored; max score after the return "
                  f"{max(returned):.2f} (alerts at {LIFECYCLE['enter']}); no alert; {skipped:.0f} live "
                  "frames skipped as stale (by design); the publisher came back at attempt "
                  f"{attempts}")
        assert down_status == 503 and up.get("ok") is True and again.get("ok") is True
        assert reconnects_gone >= 2 and after["reconnects"] > reconnects_gone - 1
        assert after["frames_corrupt"] > 0, "the damaged stream gave no frame PyAV flags corrupt"
        assert after["frames_warmup"] > 0
        assert max(returned) < LIFECYCLE["enter"], sorted(returned)[-5:]
        assert not events, [(e.alert_id, e.state) for e in events]
        assert lost == 0

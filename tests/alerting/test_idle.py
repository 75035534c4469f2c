"""The alert role's idle rule (``AlertWorker.idle_for``): a camera is silent only while the bus
is heard delivering. A bus-wide quiet spell (a frozen or unreachable broker) ends no alert and
restarts every camera's clock; a camera that goes silent while others speak is ended after
``idle_timeout_s``; the only camera that died is ended after ``QUIET_BUS_FACTOR`` timeouts of
healthy, empty polls. Driven poll by poll on the in-process bus, with a fake clock."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import alerting.worker as worker_mod
from alerting.worker import QUIET_BUS_FACTOR
from common.bus import BusError
from tests.alerting.test_poison import Rig, eager_config

IDLE = 10.0
HOT, QUIET = 2.0, 0.3  # eager_config: an alert starts at 1.0, ends under 0.8


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The worker's monotonic clock, moved by the test."""
    c = Clock()
    monkeypatch.setattr(worker_mod, "time", SimpleNamespace(monotonic=c))
    return c


def states(events: list[dict], camera: str) -> list[str]:
    return [e["state"] for e in events if e["camera"] == camera]


def tick(rig: Rig, clock: Clock, until: float, step: float = 0.5) -> None:
    """Housekeeping every ``step`` seconds up to ``until`` (fake time), nothing arriving."""
    while clock.now < until:
        clock.now = min(until, clock.now + step)
        rig.worker.housekeeping()


def test_a_bus_wide_quiet_spell_ends_no_alert_and_restarts_every_cameras_clock(tmp_path, clock) -> None:
    rig = Rig(eager_config(tmp_path, idle_timeout_s=IDLE))
    for seq in range(3):
        rig.pair("a", seq, HOT if seq == 2 else QUIET)
        rig.pair("b", seq, HOT if seq == 2 else QUIET)
    rig.drain()
    started = clock.now
    # the broker is frozen for 3 idle timeouts: nothing arrives, polls return empty, no error
    tick(rig, clock, started + 3 * IDLE)
    assert rig.worker.idle_for("a") is None and rig.worker.idle_for("b") is None
    events = rig.events()
    assert states(events, "a") == ["start"] and states(events, "b") == ["start"]
    # records flow again, "a" only: "b" gets a whole idle timeout from now, not from before
    resumed = clock.now
    for seq in range(3, 3 + int(IDLE) + 2):
        rig.pair("a", seq, HOT)
        rig.drain()
        rig.worker.housekeeping()
        if clock.now - resumed < IDLE:
            assert rig.worker.idle_for("b") is None, clock.now - resumed
        clock.now += 1.0
    events += rig.events()
    assert "b" not in rig.worker.cameras or rig.worker.cameras["b"].finished
    assert states(events, "b") == ["start", "end"]  # ended at its last frame, once
    assert states(events, "a")[0] == "start" and "end" not in states(events, "a")
    [b_alert] = rig.store.list("b")
    assert b_alert.status == "closed" and b_alert.start_seq == 2
    [a_alert] = rig.store.list("a")
    assert a_alert.status == "open" and a_alert.start_seq == 2  # one alert across the spell


def test_a_camera_silent_while_others_speak_is_idle_after_the_timeout(tmp_path, clock) -> None:
    rig = Rig(eager_config(tmp_path, idle_timeout_s=IDLE))
    rig.pair("gone", 0, HOT)
    rig.drain()
    last = clock.now
    for seq in range(int(IDLE) + 2):
        clock.now += 1.0
        rig.pair("other", seq, QUIET)
        rig.drain()
        silent = rig.worker.idle_for("gone")
        assert (silent is None) == (clock.now - last <= IDLE)
    rig.worker.housekeeping()
    assert states(rig.events(), "gone") == ["start", "end"]


def test_the_only_camera_that_died_has_its_alert_ended_after_quiet_bus_factor_timeouts(tmp_path,
                                                                                        clock) -> None:
    rig = Rig(eager_config(tmp_path, idle_timeout_s=IDLE))
    rig.pair("solo", 0, QUIET)
    rig.pair("solo", 1, HOT)
    rig.drain()
    died = clock.now
    tick(rig, clock, died + QUIET_BUS_FACTOR * IDLE - 0.5)
    assert states(rig.events(), "solo") == ["start"]
    tick(rig, clock, died + QUIET_BUS_FACTOR * IDLE + 1.0)
    assert states(rig.events(), "solo") == ["end"]
    [alert] = rig.store.list("solo")
    assert alert.status == "closed" and alert.clip_ready and alert.end_seq == 1
    tick(rig, clock, clock.now + 1.0)
    assert rig.worker.cameras == {}  # nothing open: its state is dropped too
    assert rig.bus.lag("alert", ["vigil.frames", "vigil.scores"]) == 0


def test_the_quiet_clock_counts_only_healthy_polls_with_nothing_left_to_read(tmp_path, clock) -> None:
    rig = Rig(eager_config(tmp_path, idle_timeout_s=IDLE))
    rig.pair("solo", 0, HOT)
    rig.drain()
    died = clock.now
    real = rig.worker.consumer
    lag: list[int | None] = [None]

    class Flaky:
        """Polls fail (the bus is down) until ``fail`` is cleared; ``lag`` as the test says."""

        fail = True

        def poll(self, max_records: int = 500, timeout_ms: float = 1000):
            rig.worker.stop.set()  # one poll per run()
            if self.fail:
                raise BusError("broker unreachable")
            return real.poll(max_records, 0)

        def lag(self) -> int | None:
            return lag[0]

        def __getattr__(self, name: str):
            return getattr(real, name)

    flaky = Flaky()
    rig.worker.consumer = flaky
    clock.now = died + 2 * IDLE
    rig.worker.run()  # a poll fails: the quiet clock stops
    tick(rig, clock, died + 10 * IDLE)
    assert rig.worker.idle_for("solo") is None
    flaky.fail = False
    rig.worker.stop.clear()
    rig.worker.run()  # polls return again (empty): the quiet clock starts now
    back = clock.now
    tick(rig, clock, back + QUIET_BUS_FACTOR * IDLE + 1.0)
    assert rig.worker.idle_for("solo") is None  # lag unknown: maybe records it has not read yet
    lag[0] = 3
    assert rig.worker.idle_for("solo") is None
    lag[0] = 0
    assert rig.worker.idle_for("solo") == pytest.approx(QUIET_BUS_FACTOR * IDLE + 1.0)
    rig.worker.housekeeping(now=clock.now + 1.0)
    assert states(rig.events(), "solo") == ["start", "end"]

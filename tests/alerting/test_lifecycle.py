"""The alert state machine: k-of-n start, hysteresis, minimum duration, cool-down, peaks, ids."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerting.config import AlertingConfig, LifecycleSettings
from alerting.lifecycle import AlertLifecycle, Transition, alert_id

FPS = 10
STEP_MS = 1000 // FPS
T0 = 1_700_000_000_000


def run(scores: list[float], settings: LifecycleSettings, camera: str = "cam",
        source: str = "replay") -> list[Transition]:
    machine = AlertLifecycle(camera, "01", settings, source)
    out: list[Transition] = []
    for seq, score in enumerate(scores):
        out += machine.observe(seq, T0 + seq * STEP_MS, score, "01:cflow:abc")
    return out


def kinds(transitions: list[Transition]) -> list[str]:
    return [t.kind for t in transitions]


BASE = LifecycleSettings(enter=1.0, exit=0.8, k=3, n=5, m=4, min_duration_s=0.0, cooldown_s=0.0,
                         update_min_rise=0.1, update_min_interval_s=0.0)


def test_k_of_n_starts_and_m_quiet_frames_end() -> None:
    # two hits in five frames: nothing; the third hit within the window starts the alert
    scores = [0.2, 1.5, 0.2, 1.5, 0.2, 0.2, 0.2, 0.2, 1.2, 0.3, 1.1, 1.3, 1.6] + [0.1] * 6
    ts = run(scores, BASE)
    assert kinds(ts) == ["start", "update", "end"]
    start, update, end = ts
    assert start.seq == 11 and start.alert.onset_seq == 8  # hits 8, 10, 11 in the window 7..11
    assert start.alert.alert_id == "cam-000000011" and start.alert.peak_score == pytest.approx(1.3)
    assert update.alert.peak_score == pytest.approx(1.6) and update.seq == 12
    assert end.seq == 12 + 4  # four quiet frames after the last hot one
    assert end.alert.end_ts == T0 + end.seq * STEP_MS
    assert end.alert.peak_seq == 12 and end.alert.threshold == 1.0 and end.alert.model == "01:cflow:abc"


def test_start_needs_k_hits_inside_the_window() -> None:
    # hits every third frame: at most 2 in any window of 5 -> never an alert
    scores = [1.5 if i % 3 == 0 else 0.0 for i in range(60)]
    assert run(scores, BASE) == []
    # every other frame: 3 in a window of 5 -> an alert
    assert kinds(run([1.5 if i % 2 == 0 else 0.0 for i in range(5)], BASE)) == ["start"]


def test_hysteresis_between_exit_and_enter_keeps_the_alert() -> None:
    scores = [1.5] * 3 + [0.9] * 50 + [0.5] * 4
    ts = run(scores, BASE)
    assert kinds(ts) == ["start", "end"]
    assert ts[1].seq == 3 + 50 + 3


def test_minimum_duration() -> None:
    s = BASE.model_copy(update={"min_duration_s": 3.0})
    ts = run([1.5] * 3 + [0.0] * 60, s)
    assert kinds(ts) == ["start", "end"]
    start, end = ts
    assert end.ts - start.ts >= 3000
    assert end.seq == start.seq + 30  # quiet long enough already: ends exactly at 3 s


def test_cooldown_suppresses_a_second_alert() -> None:
    burst = [1.5] * 3 + [0.0] * 4
    s = BASE.model_copy(update={"cooldown_s": 2.0})
    # second burst 1 s after the end: suppressed; a third one 2.5 s later: a new alert
    ts = run(burst + [0.0] * 6 + burst + [0.0] * 20 + burst, s)
    assert kinds(ts) == ["start", "end", "start", "end"]
    assert ts[2].ts - ts[1].ts >= 2000
    without = run(burst + [0.0] * 6 + burst, BASE)
    assert kinds(without) == ["start", "end", "start", "end"]


def test_updates_only_for_a_real_rise_and_not_too_often() -> None:
    s = BASE.model_copy(update={"update_min_rise": 0.5, "update_min_interval_s": 0.4})
    # rises by small steps: an update only once the peak is 50 % over the last published one
    # and 0.4 s after the last event
    scores = [1.0, 1.0, 1.0, 1.1, 1.2, 1.3, 1.4, 1.6, 1.7, 2.0, 2.6, 2.7, 4.5] + [0.0] * 4
    ts = run(scores, s)
    assert ts[0].kind == "start" and ts[0].seq == 2
    updates = [t for t in ts if t.kind == "update"]
    # 1.6 > 1.5 at seq 7; 2.6 > 2.4 at seq 10 is too soon, so seq 11 (2.7); the 4.5 of seq 12
    # goes out at seq 15, the first frame the interval allows
    assert [(u.seq, u.alert.peak_score) for u in updates] == [(7, 1.6), (11, 2.7), (15, 4.5)]
    assert ts[-1].kind == "end" and ts[-1].alert.peak_score == 4.5 and ts[-1].alert.peak_seq == 12


def test_peak_at_start_comes_from_the_window() -> None:
    ts = run([3.0, 1.2, 1.1], BASE)
    assert ts[0].kind == "start" and ts[0].alert.peak_score == 3.0 and ts[0].alert.peak_seq == 0
    assert ts[0].alert.onset_seq == 0 and ts[0].alert.anchor_seq == 0


def test_deterministic_ids() -> None:
    scores = ([0.0] * 7 + [1.5] * 3 + [0.0] * 5) * 3
    a, b = run(scores, BASE), run(scores, BASE)
    assert [(t.kind, t.seq, t.alert.alert_id) for t in a] == [(t.kind, t.seq, t.alert.alert_id) for t in b]
    ids = {t.alert.alert_id for t in a}
    assert ids == {"cam-000000009", "cam-000000024", "cam-000000039"}
    assert alert_id("gate", 12, T0, "live") == f"gate-000000012-{T0}"


def test_force_end_and_low_water() -> None:
    m = AlertLifecycle("cam", "01", BASE.model_copy(update={"cooldown_s": 5.0}))
    assert m.low_water() is None and m.force_end() is None
    for seq in range(10):
        m.observe(seq, T0 + seq * STEP_MS, 1.5 if seq >= 6 else 0.0, "m")
    assert m.active is not None and m.active.start_seq == 8 and m.active.anchor_seq == 4
    assert m.low_water() == 4  # the window that started it
    end = m.force_end()
    assert end is not None and end.alert.end_seq == 9
    assert m.in_cooldown() and m.low_water() == 4  # the cool-down still depends on that alert
    for seq in range(10, 70):
        m.observe(seq, T0 + seq * STEP_MS, 0.0, "m")
    assert not m.in_cooldown() and m.low_water() == 65


def test_settings_are_checked_and_layered() -> None:
    with pytest.raises(ValueError, match="k"):
        LifecycleSettings(k=6, n=5)
    with pytest.raises(ValueError, match="hysteresis"):
        LifecycleSettings(enter=1.0, exit=1.2)
    cfg = AlertingConfig.model_validate({"lifecycle": {"k": 2}, "scenes": {"01": {"enter": 1.5, "k": 3}},
                                         "cameras": {"gate": {"k": 4}}})
    assert cfg.lifecycle_for("gate", "01").model_dump(include={"enter", "k"}) == {"enter": 1.5, "k": 4}
    assert cfg.lifecycle_for("other", "01").k == 3
    assert cfg.lifecycle_for("other", "02").k == 2
    with pytest.raises(ValueError, match="cameras.gate"):
        AlertingConfig.model_validate({"cameras": {"gate": {"n": 2}}})


# ----------------------------------------------------------------------------- properties

settings_st = st.builds(
    lambda k, extra, m, md, cd, enter, gap: LifecycleSettings(
        enter=enter, exit=enter - gap, k=k, n=k + extra, m=m, min_duration_s=md, cooldown_s=cd,
        update_min_rise=0.1, update_min_interval_s=0.5),
    k=st.integers(1, 5), extra=st.integers(0, 4), m=st.integers(1, 8), md=st.sampled_from([0.0, 0.5, 2.0]),
    cd=st.sampled_from([0.0, 1.0, 5.0]), enter=st.floats(0.8, 1.5), gap=st.floats(0.0, 0.5),
)
scores_st = st.lists(st.floats(0.0, 3.0, allow_nan=False), min_size=1, max_size=300)


@settings(max_examples=200, deadline=None)
@given(s=settings_st, scores=scores_st)
def test_lifecycle_invariants(s: LifecycleSettings, scores: list[float]) -> None:
    ts = run(scores, s)
    assert run(scores, s) == ts  # deterministic
    open_alert = None
    last_end = None
    for t in ts:
        window = scores[max(0, t.seq - s.n + 1):t.seq + 1]
        if t.kind == "start":
            assert open_alert is None
            assert sum(x >= s.enter for x in window) >= s.k
            if last_end is not None:
                assert t.ts >= last_end.ts + s.cooldown_s * 1000
            assert t.alert.alert_id == f"cam-{t.seq:09d}"
            open_alert = t
        else:
            assert open_alert is not None and t.alert.alert_id == open_alert.alert.alert_id
            assert t.alert.peak_score >= open_alert.alert.peak_score
            assert t.alert.peak_score == max(scores[t.alert.onset_seq:t.seq + 1])
            if t.kind == "end":
                quiet = scores[t.seq - s.m + 1:t.seq + 1]
                assert len(quiet) == s.m and all(x < s.exit for x in quiet)
                assert t.ts - open_alert.ts >= s.min_duration_s * 1000
                open_alert, last_end = None, t
    assert len({t.alert.alert_id for t in ts if t.kind == "start"}) == sum(t.kind == "start" for t in ts)


@settings(max_examples=100, deadline=None)
@given(noise=st.lists(st.floats(-0.15, 0.15, allow_nan=False), min_size=50, max_size=400))
def test_a_score_hovering_at_the_threshold_does_not_flap(noise: list[float]) -> None:
    # scores jitter around 1.0 (the enter threshold); the exit threshold is 0.8: once an
    # alert started it never ends while the score hovers, so at most one alert starts
    s = LifecycleSettings(enter=1.0, exit=0.8, k=3, n=5, m=5, min_duration_s=1.0, cooldown_s=10.0)
    ts = run([1.0 + x for x in noise], s)
    assert sum(t.kind == "start" for t in ts) <= 1
    assert all(t.kind != "end" for t in ts)


def test_an_alert_decided_on_provisional_scores_is_provisional() -> None:
    def run_flags(scores: list[float], provisional: list[bool]) -> list[Transition]:
        machine = AlertLifecycle("cam", "01", BASE)
        out: list[Transition] = []
        for seq, (score, p) in enumerate(zip(scores, provisional, strict=True)):
            out += machine.observe(seq, T0 + seq * STEP_MS, score, "01:cflow:abc", p)
        return out

    scores = [1.5, 1.5, 1.5, 1.5] + [0.1] * 6
    # provisional in the window that started it
    started = run_flags(scores, [True] + [False] * 9)
    assert [t.alert.provisional for t in started] == [True, True]
    # provisional only later, while open: the end carries it
    later = run_flags(scores, [False] * 3 + [True] + [False] * 6)
    assert [(t.kind, t.alert.provisional) for t in later] == [("start", False), ("end", True)]
    # never provisional
    assert not any(t.alert.provisional for t in run_flags(scores, [False] * 10))

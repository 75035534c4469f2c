"""The store contract, on both stores: the local folder and Redis (a real redis-server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerting.config import LocalStoreConfig, RedisStoreConfig
from alerting.store import LocalStore, RedisStore
from tests.alerting.store.records import T0, record, write


@pytest.fixture(params=["local", "redis"])
def store(request, tmp_path: Path):
    if request.param == "local":
        s = LocalStore(LocalStoreConfig(dir=tmp_path / "alerts"))
    else:
        url = request.getfixturevalue("redis_url")
        s = RedisStore(RedisStoreConfig(url=url, retention_s=600, prefix="t:"))
    yield s
    s.close()


def test_put_get_list_and_blobs(store) -> None:
    a = record()
    result = store.put(write(a, snapshot=b"\xff\xd8\xffsnap"))
    assert result.stored and result.publish
    assert store.get(a.alert_id) == a
    assert store.snapshot(a.alert_id) == b"\xff\xd8\xffsnap" and store.clip(a.alert_id) is None
    b = record("cam-000000090", version=90, start_seq=90)
    c = record("other-000000050", version=50, start_seq=50, camera="other")
    store.put(write(b))
    store.put(write(c))
    assert [r.alert_id for r in store.list()] == [b.alert_id, c.alert_id, a.alert_id]
    assert [r.alert_id for r in store.list("cam")] == [b.alert_id, a.alert_id]
    assert [r.alert_id for r in store.list("cam", limit=1)] == [b.alert_id]
    assert store.get("nope") is None and store.list("nobody") == []


def test_writes_are_idempotent_and_never_roll_back(store) -> None:
    opened = record(version=10)
    closed = record(version=40, status="closed", end_seq=35, end_ts=T0 + 3500, clip_ready=True, clip_frames=3)
    assert store.put(write(opened)).publish
    assert store.put(write(closed, "end", 35, clip=b"mp4-bytes")).publish
    # a redelivered (older) write: nothing changes, the event is known and still unpublished
    again = store.put(write(opened))
    assert not again.stored and again.publish
    assert store.get(opened.alert_id).status == "closed" and store.clip(opened.alert_id) == b"mp4-bytes"
    store.mark_published(opened.alert_id, [f"{opened.alert_id}:start:10", f"{opened.alert_id}:end:35"])
    assert not store.put(write(opened)).publish
    assert not store.put(write(closed, "end", 35)).publish
    events = store.events(None)
    assert [e["state"] for _, e in events] == ["start", "end"]  # each event once
    assert store.events(events[-1][0]) == [] and store.latest_cursor() == events[-1][0]


def test_list_pages_by_cursor_and_filters_by_start_time(store) -> None:
    recs = [record(f"cam-{i:09d}", version=i, start_seq=i) for i in range(1, 8)]
    recs.append(record("other-000000004", version=4, start_seq=4, camera="other"))  # same start time as cam-4
    for r in recs:
        store.put(write(r))
    seen, before = [], None
    while True:
        page = store.list(limit=3, before=before)
        if not page:
            break
        seen += [r.alert_id for r in page]
        before = (page[-1].start_ts, page[-1].alert_id)
    newest_first = sorted(recs, key=lambda r: (r.start_ts, r.alert_id), reverse=True)
    assert seen == [r.alert_id for r in newest_first]  # every alert once, in order, across a tie
    since = record(start_seq=5).start_ts
    assert [r.alert_id for r in store.list("cam", since_ts=since)] == ["cam-000000007", "cam-000000006",
                                                                        "cam-000000005"]


def test_reviews_are_kept_beside_the_record_and_survive_its_later_writes(store) -> None:
    a = record(version=10)
    store.put(write(a))
    review = store.set_review(a.alert_id, "false_alarm", "a shadow")
    assert review["mark"] == "false_alarm" and review["note"] == "a shadow"
    assert review["model"] == a.model and review["peak_score"] == a.peak_score  # kept for calibration
    # the alert role writes the record again (it ends): the operator's mark stays
    store.put(write(record(version=40, status="closed", end_seq=35, end_ts=T0 + 3500), "end", 35))
    assert store.reviews([a.alert_id, "cam-000000099"]) == {a.alert_id: review}
    assert store.set_review(a.alert_id, "reviewed")["mark"] == "reviewed"
    assert store.set_review(a.alert_id, None) is None and store.reviews([a.alert_id]) == {}
    with pytest.raises(LookupError):
        store.set_review("cam-000000099", "reviewed")
    with pytest.raises(ValueError, match="review mark"):
        store.set_review(a.alert_id, "delete-everything")


def test_the_timeline_round_trips(store) -> None:
    a = record(timeline=[[8, T0 + 800, 0.5], [9, T0 + 900, None], [10, T0 + 1000, 1.7]])
    store.put(write(a))
    assert store.get(a.alert_id).timeline == a.timeline

"""Tests for common.bus: the in-process bus, KafkaConfig, and KafkaBus against a real broker.

The at-least-once scenario (:func:`commit_and_redeliver`) is one function run on both
buses, so both are held to the same semantics. The ``kafka`` tests share one tansu broker
(see conftest.py) and join a consumer group twice in all (tansu holds each join ~1 s).
"""

from __future__ import annotations

import pickle
import threading
import time
import uuid
import zlib
from collections import defaultdict

import numpy as np
import pytest
from pydantic import SecretStr, ValidationError

from common.bus import (
    Bus,
    BusError,
    CommitFailedError,
    Consumer,
    InProcessBus,
    KafkaBus,
    KafkaConfig,
    MessageTooLarge,
    Producer,
    PublishError,
    Record,
    commit_offsets,
    record_size,
)
from common.bus import kafka as bus_mod
from common.messages import FrameMessage

CAMERAS = ("cam-a", "cam-b")


def poll_until(consumer: Consumer, n: int, timeout_s: float) -> list[Record]:
    """Poll until ``n`` records arrived or ``timeout_s`` passed."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        got += consumer.poll(max_records=n - len(got), timeout_ms=200)
    return got


def frame_messages(per_camera: int = 10) -> list[FrameMessage]:
    """Frames of two cameras, interleaved: camera ``i % 2``, seq ``i // 2``."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(24, 32, 3), dtype=np.uint8)
    return [FrameMessage.from_image(image, camera=CAMERAS[i % 2], scene="01", seq=i // 2,
                                    ts=1_700_000_000_000 + 40 * i, source="replay", quality=70)
            for i in range(2 * per_camera)]


def commit_and_redeliver(bus: Bus, topic: str, group: str, timeout_s: float) -> None:
    """Produce 20 frames of two cameras; consume them in a group in per-camera order; commit
    those with seq <= 6 and close; a new member of the group gets exactly the 6 uncommitted
    ones (nothing committed comes back), commits them and then has nothing left."""
    bus.ensure_topics([topic])
    sent = frame_messages()
    with bus.producer() as producer:
        for msg in sent:
            producer.send(topic, *msg.to_record())
        producer.flush(10)

    first = bus.consumer(group, [topic])
    got = poll_until(first, len(sent), timeout_s)
    assert len(got) == len(sent)
    parsed = [FrameMessage.from_record(r.key, r.value, r.headers) for r in got]
    for cam in CAMERAS:
        mine = [(r, m) for r, m in zip(got, parsed, strict=True) if m.camera == cam]
        assert [m.seq for _, m in mine] == list(range(10))  # per-key order
        assert len({r.partition for r, _ in mine}) == 1  # one key, one partition
        assert [r.offset for r, _ in mine] == sorted(r.offset for r, _ in mine)
    assert {m.jpeg for m in parsed} == {m.jpeg for m in sent}
    first.commit([r for r, m in zip(got, parsed, strict=True) if m.seq <= 6])
    assert first.poll(timeout_ms=100) == []
    first.close()

    second = bus.consumer(group, [topic])
    try:
        again = poll_until(second, 6, timeout_s)
        again += second.poll(timeout_ms=300)  # anything beyond the 6 would be a bug
        redelivered = sorted((m.camera, m.seq) for m in
                             (FrameMessage.from_record(r.key, r.value, r.headers) for r in again))
        assert redelivered == [(c, s) for c in CAMERAS for s in (7, 8, 9)]
        second.commit(again)
        assert second.poll(timeout_ms=100) == []
    finally:
        second.close()


# ----------------------------------------------------------------------------- helpers


def test_record_size_and_commit_offsets() -> None:
    assert record_size(b"ab", b"cde", [("h", b"12")]) == 2 + 3 + 1 + 2
    assert record_size(None, b"x") == 1
    recs = [Record("t", 0, 4, None, b""), Record("t", 0, 2, None, b""), Record("t", 1, 0, None, b"")]
    assert commit_offsets(recs) == {("t", 0): 5, ("t", 1): 1}
    assert commit_offsets({("t", 3): 7}) == {("t", 3): 7}
    with pytest.raises(ValueError, match="non-negative"):
        commit_offsets({("t", 0): -1})
    with pytest.raises(TypeError, match="Records or an offsets mapping"):
        commit_offsets([("t", 0)])  # type: ignore[list-item]


def test_message_too_large_names_topic_size_limit_and_pickles() -> None:
    err = MessageTooLarge("vigil.frames", 2_000_000, 1_048_576)
    assert isinstance(err, ValueError)
    assert "'vigil.frames'" in str(err) and "2000000 bytes" in str(err) and "1048576-byte limit" in str(err)
    back = pickle.loads(pickle.dumps(err))
    assert (back.topic, back.size, back.limit) == ("vigil.frames", 2_000_000, 1_048_576)


# ----------------------------------------------------------------------------- in-process bus


def test_in_process_implements_the_interface() -> None:
    bus = InProcessBus()
    assert isinstance(bus, Bus)
    with bus.producer() as p, bus.consumer("g", ["t"]) as c:
        assert isinstance(p, Producer) and isinstance(c, Consumer)


def test_in_process_commit_and_redeliver() -> None:
    commit_and_redeliver(InProcessBus(partitions=4), "vigil.frames", "detect", timeout_s=5)


def test_in_process_partitions_by_key_in_order() -> None:
    bus = InProcessBus(partitions=3)
    with bus.producer() as p:
        for i in range(60):
            p.send("t", f"k{i % 5}".encode(), str(i).encode(), [("i", str(i).encode())])
    with bus.consumer("g", ["t"]) as c:
        got = c.poll(max_records=1000, timeout_ms=0)
    assert len(got) == 60
    by_key: dict[bytes, list[Record]] = defaultdict(list)
    for r in got:
        by_key[r.key].append(r)  # type: ignore[index]
    for key, recs in by_key.items():
        assert {r.partition for r in recs} == {zlib.crc32(key) % 3}
        assert [int(r.value) for r in recs] == sorted(int(r.value) for r in recs)
        assert all(dict(r.headers)["i"] == r.value for r in recs)
    assert bus.end_offsets("t") == {p: sum(1 for r in got if r.partition == p) for p in range(3)}


def test_in_process_poll_respects_max_records_and_is_fair() -> None:
    bus = InProcessBus(partitions=2)
    candidates = [f"cam{i}".encode() for i in range(20)]
    keys = [next(k for k in candidates if zlib.crc32(k) % 2 == p) for p in (0, 1)]  # one per partition
    with bus.producer() as p:
        for i in range(10):
            for k in keys:
                p.send("t", k, b"%d" % i)
    with bus.consumer("g", ["t"]) as c:
        batch = c.poll(max_records=4, timeout_ms=0)
        assert len(batch) == 4 and {r.key for r in batch} == set(keys)  # both cameras served
        assert len(c.poll(max_records=100, timeout_ms=0)) == 16


def test_in_process_two_groups_each_see_everything() -> None:
    bus = InProcessBus()
    with bus.producer() as p:
        for i in range(12):
            p.send("t", b"k%d" % (i % 3), b"%d" % i)
    a, b = bus.consumer("alerts", ["t"]), bus.consumer("archive", ["t"])
    got_a, got_b = poll_until(a, 12, 2), poll_until(b, 12, 2)
    everything = sorted(b"%d" % i for i in range(12))
    assert sorted(r.value for r in got_a) == sorted(r.value for r in got_b) == everything
    a.commit(got_a)
    assert bus.lag("alerts", ["t"]) == 0 and bus.lag("archive", ["t"]) == 12
    a.close()
    b.close()


def test_in_process_members_share_partitions_and_take_over() -> None:
    bus = InProcessBus(partitions=4)
    one, two = bus.consumer("g", ["t"]), bus.consumer("g", ["t"])
    a1, a2 = set(one.assignment()), set(two.assignment())
    assert len(a1) == len(a2) == 2 and a1 | a2 == {("t", p) for p in range(4)}
    with bus.producer() as p:
        for i in range(40):
            p.send("t", b"k%d" % i, b"%d" % i)
    got1, got2 = one.poll(100, 0), two.poll(100, 0)
    assert len(got1) + len(got2) == 40 and not {r.value for r in got1} & {r.value for r in got2}
    assert {(r.topic, r.partition) for r in got1} <= a1
    two.commit(got2[: len(got2) // 2])
    # a commit for a partition owned by the other member is refused
    with pytest.raises(CommitFailedError, match="not assigned to this consumer"):
        one.commit(got2[:1])
    two.close()  # leaves with half its records uncommitted
    assert set(one.assignment()) == {("t", p) for p in range(4)}
    taken_over = one.poll(100, 0)
    assert sorted(r.value for r in taken_over) == sorted(r.value for r in got2[len(got2) // 2:])
    one.close()


def test_in_process_commit_by_offsets_mapping() -> None:
    bus = InProcessBus(partitions=1)
    with bus.producer() as p:
        for i in range(5):
            p.send("t", b"k", b"%d" % i)
    with bus.consumer("g", ["t"]) as c:
        c.poll(100, 0)
        c.commit({("t", 0): 3})
        with pytest.raises(ValueError, match="beyond its end"):
            c.commit({("t", 0): 6})
    assert bus.committed("g") == {("t", 0): 3}
    with bus.consumer("g", ["t"]) as c:
        assert [r.offset for r in c.poll(100, 0)] == [3, 4]


def test_in_process_poll_wakes_up_on_send() -> None:
    bus = InProcessBus()
    consumer = bus.consumer("g", ["t"])
    timer = threading.Timer(0.05, lambda: bus.producer().send("t", b"k", b"late"))
    started = time.monotonic()
    timer.start()
    got = consumer.poll(timeout_ms=5000)
    timer.join()
    assert [r.value for r in got] == [b"late"] and time.monotonic() - started < 2
    started = time.monotonic()
    assert consumer.poll(timeout_ms=50) == [] and time.monotonic() - started >= 0.045


def test_in_process_oversize_and_bad_arguments() -> None:
    bus = InProcessBus(max_bytes_per_message=1000)
    p = bus.producer()
    p.send("t", b"k", b"x" * 990, [("h", b"12345")])  # 1 + 990 + 1 + 5 = 997 bytes
    with pytest.raises(MessageTooLarge, match="'t' is 1003 bytes, over the 1000-byte limit") as info:
        p.send("t", b"k", b"x" * 1000, [("h", b"0")])  # 1 + 1000 + 1 + 1
    assert (info.value.size, info.value.limit) == (1003, 1000)
    assert bus.end_offsets("t")[zlib.crc32(b"k") % 4] == 1  # the oversize record was not stored
    with pytest.raises(ValueError, match="invalid topic name"):
        p.send("bad topic", b"k", b"v")
    with pytest.raises(TypeError, match="value must be bytes"):
        p.send("t", b"k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="headers must be"):
        p.send("t", b"k", b"v", [("h", "text")])  # type: ignore[list-item]
    p.close()
    with pytest.raises(BusError, match="closed"):
        p.send("t", b"k", b"v")
    c = bus.consumer("g", ["t"])
    with pytest.raises(ValueError, match="max_records"):
        c.poll(max_records=0)
    c.close()
    with pytest.raises(BusError, match="closed"):
        c.poll()
    bus.close()
    with pytest.raises(BusError, match="closed"):
        bus.producer().send("t", b"k", b"v")


def test_in_process_ensure_topics() -> None:
    bus = InProcessBus(partitions=2)
    assert bus.ensure_topics(["a", "b"]) == ["a", "b"]
    assert bus.ensure_topics(["a", "c"], partitions=5) == ["c"]
    assert len(bus.end_offsets("a")) == 2 and len(bus.end_offsets("c")) == 5


# ----------------------------------------------------------------------------- KafkaConfig


def test_kafka_config_defaults_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = KafkaConfig()
    assert cfg.bootstrap_servers == ["localhost:9092"] and cfg.acks == "all" and cfg.api_version is None
    assert cfg.max_request_size == 1_048_576 and cfg.partitions == 4 and cfg.replication_factor == 1
    cfg = KafkaConfig(bootstrap_servers="a:9092, b:9092", api_version="2.0.0", acks=1)
    assert cfg.bootstrap_servers == ["a:9092", "b:9092"] and cfg.api_version == (2, 0, 0) and cfg.acks == "1"
    assert KafkaConfig(api_version=[2, 0]).api_version == (2, 0)
    for bad in (dict(linger=5), dict(api_version="two"), dict(compression_type="brotli"),
                dict(heartbeat_interval_ms=20_000), dict(security_protocol="SASL_SSL"),
                dict(sasl_mechanism="PLAIN"), dict(partitions=0), dict(bootstrap_servers=[]),
                dict(fetch_max_wait_ms=40_000)):  # must stay below request_timeout_ms
        with pytest.raises(ValidationError):
            KafkaConfig(**bad)
    monkeypatch.setattr(bus_mod, "_available_codecs",
                        lambda: {"gzip": True, "snappy": False, "lz4": False, "zstd": False})
    assert KafkaConfig(compression_type="gzip").compression_type == "gzip"
    with pytest.raises(ValidationError, match="codec library"):
        KafkaConfig(compression_type="lz4")


def test_kafka_config_hides_the_password() -> None:
    cfg = KafkaConfig(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                      sasl_plain_username="vigil", sasl_plain_password=SecretStr("hunter2"),
                      ssl_cafile="/etc/ca.pem")
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg.model_dump())
    assert "hunter2" not in cfg.model_dump_json()
    kw = cfg.client_kwargs()
    assert kw["sasl_plain_password"] == "hunter2" and kw["ssl_cafile"] == "/etc/ca.pem"
    assert "api_version" not in kw


# ----------------------------------------------------------------------------- Kafka (tansu)


@pytest.fixture
def topic() -> str:
    return f"vigil.test.{uuid.uuid4().hex[:8]}"


@pytest.mark.kafka
def test_kafka_topics_and_oversize(kafka_config: KafkaConfig, topic: str) -> None:
    from kafka import KafkaAdminClient

    bus = KafkaBus(kafka_config)
    assert isinstance(bus, Bus)
    assert bus.ensure_topics([topic, topic + ".b"]) == [topic, topic + ".b"]
    assert bus.ensure_topics([topic]) == []  # exists: nothing to do, no error
    admin = KafkaAdminClient(**kafka_config.client_kwargs())
    try:
        (described,) = admin.describe_topics([topic])
        assert len(described["partitions"]) == kafka_config.partitions
    finally:
        admin.close()
    with bus.producer() as producer:
        assert isinstance(producer, Producer)
        producer.send(topic, b"cam-a", b"x" * 900_000)
        too_big = f"{topic!r} is \\d+ bytes, over the 1048576-byte limit"
        with pytest.raises(MessageTooLarge, match=too_big) as info:
            producer.send(topic, b"cam-a", b"x" * (kafka_config.max_request_size - 10))
        assert info.value.limit == kafka_config.max_request_size
        producer.flush(10)


@pytest.mark.kafka
def test_kafka_delivery_failure_surfaces_in_flush(kafka_config: KafkaConfig, topic: str) -> None:
    # tansu refuses InitProducerId when the client is pinned to api_version (2, 0): every
    # record of an idempotent producer fails after send() returned. flush() must say so,
    # or a worker would commit input whose output was never stored.
    bus = KafkaBus(kafka_config.model_copy(update={"enable_idempotence": True}))
    bus.ensure_topics([topic])
    producer = bus.producer()
    try:
        producer.send(topic, b"cam-a", b"lost")
        with pytest.raises(PublishError, match="1 record\\(s\\) could not be published"):
            producer.flush(10)
    finally:
        producer.close()


@pytest.mark.kafka
def test_kafka_commit_and_redeliver(kafka_config: KafkaConfig, topic: str) -> None:
    commit_and_redeliver(KafkaBus(kafka_config), topic, f"detect-{topic}", timeout_s=30)


def test_in_process_records_are_released_once_every_subscribed_group_committed() -> None:
    """A long-running embedded pipeline holds only what some group has not committed yet."""
    from common.bus import InProcessBus

    bus = InProcessBus(partitions=1)
    fast, slow = bus.consumer("fast", ["t"]), bus.consumer("slow", ["t"])
    producer = bus.producer()
    for i in range(1000):
        producer.send("t", b"k", str(i).encode())
    fast.commit(fast.poll(max_records=1000, timeout_ms=10))
    held = bus._topics["t"][0]
    assert len(held.records) == 1000  # the slow group has committed nothing: all are held
    got = slow.poll(max_records=600, timeout_ms=10)
    slow.commit(got)
    assert held.base == 600 and len(held.records) == 400 and len(held) == 1000  # offsets unchanged
    assert bus.lag("slow", ["t"]) == 400 and bus.lag("fast", ["t"]) == 0
    assert [r.value for r in slow.poll(max_records=2, timeout_ms=10)] == [b"600", b"601"]
    late = bus.consumer("late", ["t"])  # a group that joins later starts at the oldest record held
    first = late.poll(max_records=1, timeout_ms=10)
    assert first[0].offset == 600 and first[0].value == b"600"
    late.close()
    slow.commit({("t", 0): 1000})
    assert len(held.records) == 0 and len(held) == 1000  # every group is past them
    producer.send("t", b"k", b"next")
    assert fast.poll(max_records=5, timeout_ms=10)[0].offset == 1000

"""The message bus: one interface, two transports.

Roles (ingest, detect, alert) are written once against :class:`Producer` and
:class:`Consumer` and run unchanged on

* :class:`InProcessBus` -- the embedded default (``vigil run``, ``vigil demo``, tests):
  thread-safe in-memory topics with partitions, consumer groups and committed offsets;
* :class:`KafkaBus` -- Apache Kafka (or any Kafka-protocol broker) through kafka-python.

Semantics both share:

* A record goes to partition ``f(key)``: all records of one key (a camera) land in one
  partition and are delivered in the order they were sent. (The in-process bus uses
  ``zlib.crc32(key) % n``, Kafka murmur2; only the per-key order is promised.)
* Consumers join a *group*; each partition of the subscribed topics is read by one member.
  A new group starts at the earliest record.
* Offsets are committed explicitly (:meth:`Consumer.commit`), never automatically: a
  worker commits a record only after it has fully handled it (published its output and
  flushed the producer). Records polled but not committed are delivered again to whoever
  reads the partition next -- after a restart, a consumer close or a rebalance
  (at-least-once; downstream is idempotent by ``camera``/``seq``).
* A record bigger than the configured limit raises :class:`MessageTooLarge` in
  :meth:`Producer.send`, before anything is sent.
* :meth:`Producer.flush` blocks until every record sent so far is stored and raises
  :class:`PublishError` if any of them could not be; a caller that commits after a
  successful flush therefore never loses a record.
* A commit for a partition that was re-assigned to another member raises
  :class:`CommitFailedError`; the records will be redelivered, so log it and go on polling.

Producers, consumers and buses are context managers (``close()`` on exit). A producer may be
shared between threads; a consumer belongs to one thread (as in kafka-python).
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "Bus",
    "BusError",
    "CommitFailedError",
    "Consumer",
    "InProcessBus",
    "InProcessConsumer",
    "InProcessProducer",
    "KafkaBus",
    "KafkaBusConsumer",
    "KafkaBusProducer",
    "KafkaConfig",
    "MessageTooLarge",
    "Producer",
    "PublishError",
    "Record",
    "commit_offsets",
    "record_size",
]

log = logging.getLogger(__name__)

#: Kafka's default maximum request / message size; the default limit of both buses.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576

Header = tuple[str, bytes]
#: ``{(topic, partition): next offset to read}`` -- Kafka's commit convention.
Offsets = Mapping[tuple[str, int], int]

_C = TypeVar("_C", bound="_Closing")

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


# ----------------------------------------------------------------------------- records, errors


@dataclass(frozen=True)
class Record:
    """One consumed record. ``offset`` is its position in ``(topic, partition)``."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes = field(repr=False)
    headers: tuple[Header, ...] = ()
    timestamp_ms: int = 0


class BusError(RuntimeError):
    """The bus cannot do what was asked (broker unreachable, closed client, ...)."""


class PublishError(BusError):
    """Records sent earlier could not be stored; raised by :meth:`Producer.flush`."""


class CommitFailedError(BusError):
    """A commit was refused because the group rebalanced; the records will be redelivered."""


class MessageTooLarge(ValueError):  # noqa: N818 - the name the roles and issue use
    """A record exceeds the bus's size limit (``max_request_size`` / ``max_bytes_per_message``).

    The in-process bus counts :func:`record_size` (key + value + headers); the Kafka bus
    counts what kafka-python checks, the record with its batch framing (about 70 bytes more).
    """

    def __init__(self, topic: str, size: int, limit: int) -> None:
        super().__init__(f"record for topic {topic!r} is {size} bytes, over the {limit}-byte limit")
        self.topic, self.size, self.limit = topic, size, limit

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.topic, self.size, self.limit))


def record_size(key: bytes | None, value: bytes, headers: Sequence[Header] = ()) -> int:
    """Payload bytes of a record: key + value + header names (UTF-8) and values."""
    return (len(key) if key is not None else 0) + len(value) + sum(
        len(name.encode("utf-8")) + len(v) for name, v in headers
    )


def commit_offsets(records_or_offsets: Iterable[Record] | Offsets) -> dict[tuple[str, int], int]:
    """Normalise a commit request to ``{(topic, partition): next offset}``.

    Records commit "up to and including" the highest offset given per partition; a mapping
    is taken as next-offsets already (Kafka's convention: ``last handled offset + 1``).
    """
    out: dict[tuple[str, int], int] = {}
    if isinstance(records_or_offsets, Mapping):
        for tp, off in records_or_offsets.items():
            if not (isinstance(tp, tuple) and len(tp) == 2
                    and isinstance(tp[0], str) and isinstance(tp[1], int)):
                raise TypeError(f"offsets keys must be (topic, partition) tuples, got {tp!r}")
            if isinstance(off, bool) or not isinstance(off, int) or off < 0:
                raise ValueError(f"offset for {tp} must be a non-negative int, got {off!r}")
            out[(tp[0], tp[1])] = off
        return out
    for rec in records_or_offsets:
        if not isinstance(rec, Record):
            raise TypeError(f"commit takes Records or an offsets mapping, got {type(rec).__name__}")
        tp = (rec.topic, rec.partition)
        out[tp] = max(out.get(tp, 0), rec.offset + 1)
    return out


def _check_send(topic: Any, key: Any, value: Any, headers: Any) -> tuple[bytes | None, bytes, list[Header]]:
    if not isinstance(topic, str) or not _TOPIC_RE.match(topic):
        raise ValueError(f"invalid topic name {topic!r} (1-249 characters of [A-Za-z0-9._-])")
    if key is not None and not isinstance(key, bytes | bytearray):
        raise TypeError(f"record key must be bytes or None, got {type(key).__name__}")
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"record value must be bytes, got {type(value).__name__}")
    hdrs = list(headers or ())
    for h in hdrs:
        if not (isinstance(h, tuple) and len(h) == 2 and isinstance(h[0], str) and isinstance(h[1], bytes)):
            raise TypeError(f"headers must be (str, bytes) tuples, got {h!r}")
    return (bytes(key) if key is not None else None), bytes(value), hdrs


def _check_poll(max_records: int, timeout_ms: float) -> None:
    if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
        raise ValueError(f"max_records must be a positive int, got {max_records!r}")
    if timeout_ms < 0:
        raise ValueError(f"timeout_ms must be >= 0, got {timeout_ms}")


def _check_topics(topics: Sequence[str] | str) -> tuple[str, ...]:
    names = (topics,) if isinstance(topics, str) else tuple(topics)
    if not names:
        raise ValueError("a consumer needs at least one topic")
    for t in names:
        if not isinstance(t, str) or not _TOPIC_RE.match(t):
            raise ValueError(f"invalid topic name {t!r} (1-249 characters of [A-Za-z0-9._-])")
    return tuple(dict.fromkeys(names))


class _Closing:
    """``with`` support: ``close()`` on exit."""

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# ----------------------------------------------------------------------------- the interface


@runtime_checkable
class Producer(Protocol):
    """Publishes records. Thread-safe."""

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()) -> None:
        """Queue a record (partition chosen from ``key``); :class:`MessageTooLarge` if too big."""
        ...

    def flush(self, timeout: float | None = None) -> None:
        """Block until every record sent so far is stored; :class:`PublishError` if any was not."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Producer: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


@runtime_checkable
class Consumer(Protocol):
    """A member of a consumer group. Not thread-safe: one thread polls and commits."""

    def poll(self, max_records: int = 500, timeout_ms: float = 1000) -> list[Record]:
        """Up to ``max_records`` records (possibly none after ``timeout_ms``), in order per partition."""
        ...

    def lag(self) -> int | None:
        """Records in this member's partitions not yet polled (None if unknown yet)."""
        ...

    def commit(self, records_or_offsets: Iterable[Record] | Offsets) -> None:
        """Commit up to and including the given records (or ``{(topic, partition): next offset}``)."""
        ...

    def close(self) -> None:
        """Leave the group without committing; uncommitted records go to the next reader."""
        ...

    def __enter__(self) -> Consumer: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


@runtime_checkable
class Bus(Protocol):
    """Factory of producers and consumers on one transport."""

    def producer(self) -> Producer: ...

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer: ...

    def ensure_topics(self, names: Iterable[str]) -> list[str]:
        """Create the topics that do not exist yet; returns the names created."""
        ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------- in-process bus


@dataclass
class _Group:
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    members: list[InProcessConsumer] = field(default_factory=list)


class InProcessBus(_Closing):
    """Kafka's semantics in memory, for the embedded mode and tests.

    Topics are created on first use (send or subscribe) or by :meth:`ensure_topics`, with
    ``partitions`` partitions. Records are kept for the bus's lifetime (the embedded mode
    bounds a replay by back-pressure in the caller, not here). Group members share the
    partitions of their topics round-robin (in join order); a single member reads them all.
    Each member keeps its read position; a partition it newly gets starts at the group's
    committed offset (or the earliest record), so records polled but never committed are
    redelivered after the reader closes. A commit for a partition the member no longer owns
    raises :class:`CommitFailedError`.
    """

    def __init__(self, partitions: int = 4, max_bytes_per_message: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ValueError(f"partitions must be a positive int, got {partitions!r}")
        if max_bytes_per_message < 1:
            raise ValueError(f"max_bytes_per_message must be positive, got {max_bytes_per_message}")
        self.partitions = partitions
        self.max_bytes_per_message = int(max_bytes_per_message)
        self._cond = threading.Condition()
        self._topics: dict[str, list[list[Record]]] = {}
        self._round_robin: dict[str, itertools.count[int]] = {}
        self._groups: dict[str, _Group] = {}
        self._closed = False

    # -- the Bus interface

    def producer(self) -> InProcessProducer:
        return InProcessProducer(self)

    def consumer(self, group: str, topics: Sequence[str]) -> InProcessConsumer:
        if not isinstance(group, str) or not group:
            raise ValueError(f"group must be a non-empty string, got {group!r}")
        names = _check_topics(topics)
        with self._cond:
            self._check_open()
            for t in names:
                self._create(t)
            member = InProcessConsumer(self, group, names)
            self._groups.setdefault(group, _Group()).members.append(member)
            self._cond.notify_all()
        return member

    def ensure_topics(self, names: Iterable[str], partitions: int | None = None) -> list[str]:
        """Create missing topics (with ``partitions``, default the bus's); returns the new names."""
        names = _check_topics(list(names)) if not isinstance(names, str) else _check_topics(names)
        with self._cond:
            return [t for t in names if self._create(t, partitions)]

    def close(self) -> None:
        """Refuse further sends; pending polls return at once. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- introspection (tests, ``vigil demo`` progress)

    def end_offsets(self, topic: str) -> dict[int, int]:
        """``{partition: offset the next record will get}`` (an empty dict for an unknown topic)."""
        with self._cond:
            return {p: len(log) for p, log in enumerate(self._topics.get(topic, []))}

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        """The group's committed next-offsets."""
        with self._cond:
            g = self._groups.get(group)
            return dict(g.committed) if g else {}

    def lag(self, group: str, topics: Iterable[str]) -> int:
        """Records of ``topics`` the group has not committed yet."""
        with self._cond:
            g = self._groups.get(group)
            committed = g.committed if g else {}
            return sum(len(log) - committed.get((t, p), 0)
                       for t in topics for p, log in enumerate(self._topics.get(t, [])))

    # -- internals (called with self._cond held unless stated)

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the in-process bus is closed")

    def _create(self, topic: str, partitions: int | None = None) -> bool:
        if topic in self._topics:
            return False
        n = self.partitions if partitions is None else partitions
        if n < 1:
            raise ValueError(f"partitions must be positive, got {n}")
        self._topics[topic] = [[] for _ in range(n)]
        self._round_robin[topic] = itertools.count()
        self._cond.notify_all()  # members subscribed to it may get partitions
        return True

    def _append(self, topic: str, key: bytes | None, value: bytes, headers: list[Header]) -> None:
        """Store one record (takes the lock)."""
        size = record_size(key, value, headers)
        if size > self.max_bytes_per_message:
            raise MessageTooLarge(topic, size, self.max_bytes_per_message)
        with self._cond:
            self._check_open()
            self._create(topic)
            logs = self._topics[topic]
            p = (zlib.crc32(key) if key is not None else next(self._round_robin[topic])) % len(logs)
            now_ms = int(time.time() * 1000)
            logs[p].append(Record(topic, p, len(logs[p]), key, value, tuple(headers), now_ms))
            self._cond.notify_all()

    def _assignment(self, member: InProcessConsumer) -> list[tuple[str, int]]:
        """The partitions ``member`` owns now: round-robin over the group, in join order."""
        group = self._groups[member.group]
        if member not in group.members:
            return []
        topics = sorted({t for m in group.members for t in m.topics})
        owned: list[tuple[str, int]] = []
        turn = 0
        for topic in topics:
            readers = [m for m in group.members if topic in m.topics]
            for p in range(len(self._topics.get(topic, []))):
                if readers[turn % len(readers)] is member:
                    owned.append((topic, p))
                turn += 1
        return owned


class InProcessProducer(_Closing):
    """Producer on an :class:`InProcessBus`: ``send`` stores synchronously, ``flush`` is a no-op."""

    def __init__(self, bus: InProcessBus) -> None:
        self._bus = bus
        self._closed = False

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()) -> None:
        if self._closed:
            raise BusError("producer is closed")
        k, v, h = _check_send(topic, key, value, headers)
        self._bus._append(topic, k, v, h)

    def flush(self, timeout: float | None = None) -> None:
        if self._closed:
            raise BusError("producer is closed")

    def close(self) -> None:
        self._closed = True


class InProcessConsumer(_Closing):
    """A group member on an :class:`InProcessBus` (create it with :meth:`InProcessBus.consumer`)."""

    def __init__(self, bus: InProcessBus, group: str, topics: tuple[str, ...]) -> None:
        self._bus = bus
        self.group = group
        self.topics = topics
        self._positions: dict[tuple[str, int], int] = {}
        self._next = 0  # round-robin start over the owned partitions
        self._closed = False

    def assignment(self) -> list[tuple[str, int]]:
        """The ``(topic, partition)`` pairs this member owns now."""
        with self._bus._cond:
            return self._bus._assignment(self)

    def lag(self) -> int | None:
        with self._bus._cond:
            owned = self._sync()
            topics = self._bus._topics
            return sum(len(topics[t][p]) - self._positions[(t, p)] for t, p in owned)

    def poll(self, max_records: int = 500, timeout_ms: float = 1000) -> list[Record]:
        _check_poll(max_records, timeout_ms)
        if self._closed:
            raise BusError("consumer is closed")
        deadline = time.monotonic() + timeout_ms / 1000.0
        cond = self._bus._cond
        with cond:
            while True:
                owned = self._sync()
                out = self._take(owned, max_records)
                remaining = deadline - time.monotonic()
                if out or remaining <= 0 or self._bus._closed:
                    return out
                cond.wait(remaining)

    def commit(self, records_or_offsets: Iterable[Record] | Offsets) -> None:
        if self._closed:
            raise BusError("consumer is closed")
        offsets = commit_offsets(records_or_offsets)
        bus = self._bus
        with bus._cond:
            owned = set(bus._assignment(self))
            for tp, off in offsets.items():
                if tp not in owned:
                    raise CommitFailedError(
                        f"group {self.group!r}: partition {tp[0]}[{tp[1]}] is not assigned to this consumer "
                        "(the group rebalanced); its records will be redelivered"
                    )
                end = len(bus._topics[tp[0]][tp[1]])
                if off > end:
                    raise ValueError(f"offset {off} for {tp[0]}[{tp[1]}] is beyond its end ({end})")
            bus._groups[self.group].committed.update(offsets)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._bus._cond:
            members = self._bus._groups[self.group].members
            if self in members:
                members.remove(self)
            self._bus._cond.notify_all()  # the others take over our partitions

    def _sync(self) -> list[tuple[str, int]]:
        """Refresh the assignment; a newly owned partition starts at the committed offset."""
        owned = self._bus._assignment(self)
        committed = self._bus._groups[self.group].committed
        # a partition kept across a rebalance keeps our position, unless the group moved past it
        self._positions = {
            tp: max(self._positions.get(tp, 0), committed.get(tp, 0)) for tp in owned
        }
        return owned

    def _take(self, owned: list[tuple[str, int]], max_records: int) -> list[Record]:
        """Up to ``max_records``, one partition after the other in turn (fair across cameras)."""
        out: list[Record] = []
        if not owned:
            return out
        topics = self._bus._topics
        start = self._next % len(owned)
        order = owned[start:] + owned[:start]
        progressed = True
        while len(out) < max_records and progressed:
            progressed = False
            for tp in order:
                log_ = topics[tp[0]][tp[1]]
                pos = self._positions[tp]
                if pos < len(log_):
                    out.append(log_[pos])
                    self._positions[tp] = pos + 1
                    progressed = True
                    if len(out) >= max_records:
                        break
        self._next = start + 1
        return out


# ----------------------------------------------------------------------------- Kafka


def _available_codecs() -> dict[str, bool]:
    from kafka import codec

    return {"gzip": codec.has_gzip(), "snappy": codec.has_snappy(), "lz4": codec.has_lz4(),
            "zstd": codec.has_zstd()}


class KafkaConfig(BaseModel):
    """Connection and client settings of :class:`KafkaBus` (validated, immutable).

    ``api_version``: leave ``None`` to let kafka-python probe the broker. The tansu broker
    (used by the tests) needs it pinned to ``(2, 0)`` (``(2, 0, 0)`` is accepted and means
    the same); with the pin, tansu rejects ``enable_idempotence`` (InitProducerId).
    ``compression_type``: ``gzip`` always works; ``snappy``, ``lz4`` and ``zstd`` need
    python-snappy / lz4 / zstandard installed and are refused otherwise (zstd also needs
    a broker >= 2.1). Group timeouts: tansu holds a group join for about half of
    ``session_timeout_ms``, so tests use a short session; Apache Kafka refuses sessions
    under its ``group.min.session.timeout.ms`` (6 s by default).
    ``sasl_plain_password`` is a :class:`~pydantic.SecretStr`: it is never shown by ``repr``
    or logs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: list[str] = Field(default_factory=lambda: ["localhost:9092"], min_length=1)
    api_version: tuple[int, ...] | None = None
    client_id: str = "vigilflow"
    acks: Literal["all", "1", "0"] = "all"
    enable_idempotence: bool = False
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    max_request_size: int = Field(DEFAULT_MAX_MESSAGE_BYTES, gt=0)
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)
    session_timeout_ms: int = Field(10_000, gt=0)
    heartbeat_interval_ms: int = Field(3_000, gt=0)
    max_poll_interval_ms: int = Field(300_000, gt=0)
    # How long the broker may hold a fetch when no record is waiting. Apache Kafka answers as
    # soon as one record arrives; tansu holds the fetch for most of this time, which becomes
    # frame-to-score latency, hence 100 ms rather than kafka-python's 500.
    fetch_max_wait_ms: int = Field(100, ge=0)
    request_timeout_ms: int = Field(30_000, gt=500)  # kafka-python: must exceed fetch_max_wait_ms
    max_block_ms: int = Field(60_000, gt=0)  # how long send() may wait for metadata / buffer space

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_servers(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("api_version", mode="before")
    @classmethod
    def _parse_version(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                v = tuple(int(x) for x in v.split("."))
            except ValueError as exc:
                raise ValueError(f"api_version must look like '2.0.0', got {v!r}") from exc
        if v is not None and not (2 <= len(v) <= 3 and all(isinstance(x, int) and x >= 0 for x in v)):
            raise ValueError(f"api_version must be 2 or 3 non-negative ints, got {v!r}")
        return v

    @field_validator("acks", mode="before")
    @classmethod
    def _acks_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _consistent(self) -> KafkaConfig:
        if self.compression_type is not None:
            if not _available_codecs()[self.compression_type]:
                raise ValueError(f"compression_type {self.compression_type!r} needs a codec library that "
                                 "is not installed; use 'gzip' or None")
            if self.compression_type == "zstd" and self.api_version is not None and self.api_version < (2, 1):
                raise ValueError("zstd compression needs api_version >= (2, 1)")
        if self.request_timeout_ms <= self.fetch_max_wait_ms:
            raise ValueError(f"request_timeout_ms ({self.request_timeout_ms}) must exceed "
                             f"fetch_max_wait_ms ({self.fetch_max_wait_ms})")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be below "
                             f"session_timeout_ms ({self.session_timeout_ms})")
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        if not sasl and self.sasl_mechanism is not None:
            raise ValueError(f"sasl_mechanism is set but security_protocol is {self.security_protocol}")
        if sasl and (not self.sasl_plain_username or self.sasl_plain_password is None):
            raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs sasl_plain_username and "
                             "sasl_plain_password")
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Settings every kafka-python client takes (producer, consumer, admin). Holds secrets."""
        kw: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.api_version is not None:
            kw["api_version"] = self.api_version
        if self.sasl_mechanism is not None:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_plain_username
            assert self.sasl_plain_password is not None  # checked by the validator
            kw["sasl_plain_password"] = self.sasl_plain_password.get_secret_value()
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, name) is not None:
                kw[name] = getattr(self, name)
        return kw


class KafkaBus(_Closing):
    """The bus on a Kafka cluster (kafka-python). Clients connect when they are created."""

    def __init__(self, config: KafkaConfig) -> None:
        if not isinstance(config, KafkaConfig):
            raise TypeError(f"KafkaBus needs a KafkaConfig, got {type(config).__name__}")
        self.config = config

    def _where(self) -> str:
        return ",".join(self.config.bootstrap_servers)

    def producer(self) -> KafkaBusProducer:
        return KafkaBusProducer(self.config)

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaBusConsumer:
        if not isinstance(group, str) or not group:
            raise ValueError(f"group must be a non-empty string, got {group!r}")
        return KafkaBusConsumer(self.config, group, _check_topics(topics))

    def ensure_topics(self, names: Iterable[str]) -> list[str]:
        """Create the missing topics with ``config.partitions``/``replication_factor``.

        Returns the names created; a topic that exists already (even one created
        concurrently by another worker) is left as it is.
        """
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

        wanted = _check_topics(list(names)) if not isinstance(names, str) else _check_topics(names)
        try:
            admin = KafkaAdminClient(**self.config.client_kwargs())
        except KafkaError as exc:
            raise BusError(f"cannot reach Kafka at {self._where()}: {exc!r}") from exc
        try:
            existing = set(admin.list_topics())
            missing = [t for t in wanted if t not in existing]
            if not missing:
                return []
            spec = {t: {"num_partitions": self.config.partitions,
                        "replication_factor": self.config.replication_factor} for t in missing}
            response = admin.create_topics(spec, raise_errors=False)
            created = []
            for topic in response.get("topics", []):
                code = topic.get("error_code", 0)
                if code == 0:
                    created.append(topic["name"])
                elif for_code(code) is not TopicAlreadyExistsError:
                    raise BusError(f"cannot create topic {topic['name']!r}: {for_code(code).__name__} "
                                   f"{topic.get('error_message') or ''}".rstrip())
            if created:
                log.info("created Kafka topics %s (%d partitions)", created, self.config.partitions)
            return created
        except KafkaError as exc:
            raise BusError(f"topic creation on {self._where()} failed: {exc!r}") from exc
        finally:
            admin.close()

    def close(self) -> None:
        """Nothing to release: producers and consumers are closed by their owners."""


class KafkaBusProducer(_Closing):
    """:class:`Producer` over ``kafka.KafkaProducer``; delivery failures surface in :meth:`flush`.

    ``send`` only queues; a record that later fails (broker error, retries exhausted) is
    remembered and reported by the next ``flush`` of this producer, whichever thread sent it.
    """

    def __init__(self, config: KafkaConfig) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self._limit = config.max_request_size
        acks: str | int = "all" if config.acks == "all" else int(config.acks)
        try:
            self._producer = KafkaProducer(
                acks=acks,
                enable_idempotence=config.enable_idempotence,
                compression_type=config.compression_type,
                max_request_size=config.max_request_size,
                max_block_ms=config.max_block_ms,
                **config.client_kwargs(),
            )
        except KafkaError as exc:
            raise BusError(f"cannot reach Kafka at {','.join(config.bootstrap_servers)}: {exc!r}") from exc
        self._errors: list[tuple[str, BaseException]] = []
        self._errors_lock = threading.Lock()
        self._closed = False

    def _size(self, key: bytes | None, value: bytes, headers: list[Header]) -> int:
        """What kafka-python checks against max_request_size (record plus batch framing)."""
        try:
            from kafka.record.default_records import DefaultRecordBatchBuilder

            return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))
        except (ImportError, AttributeError):  # pragma: no cover - kafka-python internals moved
            return record_size(key, value, headers)

    def _failed(self, topic: str, exc: BaseException) -> None:
        with self._errors_lock:
            self._errors.append((topic, exc))

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()) -> None:
        from kafka.errors import KafkaError, MessageSizeTooLargeError

        if self._closed:
            raise BusError("producer is closed")
        k, v, h = _check_send(topic, key, value, headers)
        size = self._size(k, v, h)
        if size > self._limit:
            raise MessageTooLarge(topic, size, self._limit)
        try:
            future = self._producer.send(topic, value=v, key=k, headers=h)
        except MessageSizeTooLargeError as exc:
            raise MessageTooLarge(topic, size, self._limit) from exc
        except KafkaError as exc:
            raise BusError(f"cannot send to {topic!r}: {exc!r}") from exc
        future.add_errback(self._failed, topic)

    def flush(self, timeout: float | None = None) -> None:
        from kafka.errors import KafkaError

        if self._closed:
            raise BusError("producer is closed")
        try:
            self._producer.flush(timeout=timeout)
        except KafkaError as exc:
            raise PublishError(f"flush did not complete: {exc!r}") from exc
        with self._errors_lock:
            errors, self._errors = self._errors, []
        if errors:
            topic, first = errors[0]
            raise PublishError(f"{len(errors)} record(s) could not be published; "
                                f"first: topic {topic!r}: {first!r}") from first

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._producer.close(timeout=5)


class KafkaBusConsumer(_Closing):
    """:class:`Consumer` over ``kafka.KafkaConsumer`` (no auto-commit, earliest reset)."""

    def __init__(self, config: KafkaConfig, group: str, topics: tuple[str, ...]) -> None:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        self.group = group
        self.topics = topics
        try:
            self._consumer = KafkaConsumer(
                *topics,
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=config.session_timeout_ms,
                heartbeat_interval_ms=config.heartbeat_interval_ms,
                max_poll_interval_ms=config.max_poll_interval_ms,
                fetch_max_wait_ms=config.fetch_max_wait_ms,
                max_partition_fetch_bytes=max(1_048_576, config.max_request_size),
                **config.client_kwargs(),
            )
        except KafkaError as exc:
            raise BusError(f"cannot reach Kafka at {','.join(config.bootstrap_servers)}: {exc!r}") from exc
        self._closed = False

    def poll(self, max_records: int = 500, timeout_ms: float = 1000) -> list[Record]:
        from kafka.errors import KafkaError

        _check_poll(max_records, timeout_ms)
        if self._closed:
            raise BusError("consumer is closed")
        try:
            batches = self._consumer.poll(timeout_ms=int(timeout_ms), max_records=max_records)
        except KafkaError as exc:
            raise BusError(f"poll failed for group {self.group!r}: {exc!r}") from exc
        return [
            Record(r.topic, r.partition, r.offset, r.key, r.value if r.value is not None else b"",
                   tuple((name, value if value is not None else b"") for name, value in (r.headers or ())),
                   int(r.timestamp))
            for recs in batches.values() for r in recs
        ]

    def commit(self, records_or_offsets: Iterable[Record] | Offsets) -> None:
        from kafka import TopicPartition
        from kafka.errors import CommitFailedError as KafkaCommitFailedError
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        if self._closed:
            raise BusError("consumer is closed")
        offsets = commit_offsets(records_or_offsets)
        if not offsets:
            return
        # kafka-python 3.x: OffsetAndMetadata(offset, metadata, leader_epoch); -1 = unknown epoch
        request = {TopicPartition(t, p): OffsetAndMetadata(off, "", -1) for (t, p), off in offsets.items()}
        try:
            self._consumer.commit(request)
        except KafkaCommitFailedError as exc:
            raise CommitFailedError(f"group {self.group!r}: commit refused after a rebalance: {exc}") from exc
        except KafkaError as exc:
            raise BusError(f"commit failed for group {self.group!r}: {exc!r}") from exc

    def assignment(self) -> list[tuple[str, int]]:
        """The ``(topic, partition)`` pairs this member owns now (empty until it joined)."""
        return sorted((tp.topic, tp.partition) for tp in self._consumer.assignment())

    def lag(self) -> int | None:
        from kafka.errors import KafkaError

        total = 0
        try:
            for tp in self._consumer.assignment():
                high = self._consumer.highwater(tp)
                if high is None:  # no fetch response for this partition yet
                    return None
                total += max(0, high - self._consumer.position(tp))
        except KafkaError:
            return None
        return total

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._consumer.close(autocommit=False)

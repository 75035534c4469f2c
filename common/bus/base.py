"""The bus interface every role is written against, its records, errors and argument checks.

See :mod:`common.bus` for the semantics both transports share.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

log = logging.getLogger(__name__)

#: Kafka's default maximum request / message size; the default limit of both buses.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576

Header = tuple[str, bytes]
#: ``{(topic, partition): next offset to read}`` -- Kafka's commit convention.
Offsets = Mapping[tuple[str, int], int]

_C = TypeVar("_C", bound="Closing")

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


def check_send(topic: Any, key: Any, value: Any, headers: Any) -> tuple[bytes | None, bytes, list[Header]]:
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


def check_poll(max_records: int, timeout_ms: float) -> None:
    if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
        raise ValueError(f"max_records must be a positive int, got {max_records!r}")
    if timeout_ms < 0:
        raise ValueError(f"timeout_ms must be >= 0, got {timeout_ms}")


def check_topics(topics: Sequence[str] | str) -> tuple[str, ...]:
    names = (topics,) if isinstance(topics, str) else tuple(topics)
    if not names:
        raise ValueError("a consumer needs at least one topic")
    for t in names:
        if not isinstance(t, str) or not _TOPIC_RE.match(t):
            raise ValueError(f"invalid topic name {t!r} (1-249 characters of [A-Za-z0-9._-])")
    return tuple(dict.fromkeys(names))


class Closing:
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



"""The in-process bus: thread-safe in-memory topics with partitions, consumer groups and
committed offsets -- the embedded default (``vigil run``, ``vigil demo``, tests)."""

from __future__ import annotations

import itertools
import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from common.bus.base import (
    DEFAULT_MAX_MESSAGE_BYTES,
    BusError,
    Closing,
    CommitFailedError,
    Header,
    MessageTooLarge,
    Offsets,
    Record,
    check_poll,
    check_send,
    check_topics,
    commit_offsets,
    record_size,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- in-process bus


class _Log:
    """One partition's records by offset. ``len`` is the end offset (the next record's);
    records below :attr:`base` were released (every group had committed past them)."""

    def __init__(self) -> None:
        self.base = 0
        self.records: deque[Record] = deque()

    def __len__(self) -> int:
        return self.base + len(self.records)

    def __getitem__(self, offset: int) -> Record:
        if offset < self.base:
            raise IndexError(f"offset {offset} was released (the log starts at {self.base})")
        return self.records[offset - self.base]

    def append(self, record: Record) -> None:
        self.records.append(record)

    def release(self, upto: int) -> int:
        """Drop the records below offset ``upto``; returns how many."""
        n = 0
        while self.base < upto and self.records:
            self.records.popleft()
            self.base += 1
            n += 1
        return n


@dataclass
class _Group:
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    members: list[InProcessConsumer] = field(default_factory=list)


class InProcessBus(Closing):
    """Kafka's semantics in memory, for the embedded mode and tests.

    Topics are created on first use (send or subscribe) or by :meth:`ensure_topics`, with
    ``partitions`` partitions. A record is kept until every group subscribed to its topic
    has committed past it, then released (so a long-running embedded pipeline holds only
    what some group has not committed yet; a group that subscribes later starts at the
    oldest record still held, as a Kafka consumer starts at the retention's edge). A replay
    is bounded by back-pressure in the caller. Group members share the
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
        self._topics: dict[str, list[_Log]] = {}
        self._round_robin: dict[str, itertools.count[int]] = {}
        self._groups: dict[str, _Group] = {}
        self._closed = False

    # -- the Bus interface

    def producer(self) -> InProcessProducer:
        return InProcessProducer(self)

    def consumer(self, group: str, topics: Sequence[str]) -> InProcessConsumer:
        if not isinstance(group, str) or not group:
            raise ValueError(f"group must be a non-empty string, got {group!r}")
        names = check_topics(topics)
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
        names = check_topics(list(names)) if not isinstance(names, str) else check_topics(names)
        with self._cond:
            return [t for t in names if self._create(t, partitions)]

    def close(self) -> None:
        """Refuse further sends; pending polls return at once. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- introspection (tests)

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
            return sum(len(log) - max(committed.get((t, p), 0), log.base)
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
        self._topics[topic] = [_Log() for _ in range(n)]
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

    def _release(self, tp: tuple[str, int]) -> None:
        """Release the records of ``tp`` that every group subscribed to its topic (or that
        committed to it before) has committed past; a subscribed group without a commit
        holds them all."""
        topic = tp[0]
        floors = [g.committed.get(tp, 0) for g in self._groups.values()
                  if tp in g.committed or any(topic in m.topics for m in g.members)]
        if floors:
            self._topics[topic][tp[1]].release(min(floors))

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


class InProcessProducer(Closing):
    """Producer on an :class:`InProcessBus`: ``send`` stores synchronously, ``flush`` is a no-op."""

    def __init__(self, bus: InProcessBus) -> None:
        self._bus = bus
        self._closed = False

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()) -> None:
        if self._closed:
            raise BusError("producer is closed")
        k, v, h = check_send(topic, key, value, headers)
        self._bus._append(topic, k, v, h)

    def flush(self, timeout: float | None = None) -> None:
        if self._closed:
            raise BusError("producer is closed")

    def close(self) -> None:
        self._closed = True


class InProcessConsumer(Closing):
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
        check_poll(max_records, timeout_ms)
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
            for tp in offsets:
                bus._release(tp)

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
        topics = self._bus._topics
        # a partition kept across a rebalance keeps our position, unless the group moved past
        # it; nobody starts below the oldest record still held
        self._positions = {
            tp: max(self._positions.get(tp, 0), committed.get(tp, 0), topics[tp[0]][tp[1]].base)
            for tp in owned
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



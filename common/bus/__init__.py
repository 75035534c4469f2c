"""The message bus: one interface (:mod:`.base`), two transports (:mod:`.memory`, :mod:`.kafka`).

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

from common.bus.base import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Bus,
    BusError,
    CommitFailedError,
    Consumer,
    Header,
    MessageTooLarge,
    Offsets,
    Producer,
    PublishError,
    Record,
    commit_offsets,
    record_size,
)
from common.bus.kafka import KafkaBus, KafkaBusConsumer, KafkaBusProducer, KafkaConfig
from common.bus.memory import InProcessBus, InProcessConsumer, InProcessProducer

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "Header",
    "Offsets",
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

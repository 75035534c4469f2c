"""The Kafka bus: Apache Kafka (or any Kafka-protocol broker) through kafka-python, with
:class:`KafkaConfig`, its validated connection and client settings."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from common.bus.base import (
    DEFAULT_MAX_MESSAGE_BYTES,
    BusError,
    Closing,
    CommitFailedError,
    Header,
    MessageTooLarge,
    Offsets,
    PublishError,
    Record,
    check_poll,
    check_send,
    check_topics,
    commit_offsets,
    record_size,
)
from common.config import Strict

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- Kafka


def _available_codecs() -> dict[str, bool]:
    from kafka import codec

    return {"gzip": codec.has_gzip(), "snappy": codec.has_snappy(), "lz4": codec.has_lz4(),
            "zstd": codec.has_zstd()}


class KafkaConfig(Strict):
    """Connection and client settings of :class:`KafkaBus` (validated, immutable).

    ``api_version``: leave ``None`` to let kafka-python probe the broker. The tansu broker
    (used by the tests) needs it pinned to ``(2, 0)`` (``(2, 0, 0)`` is accepted and means
    the same); with the pin, tansu rejects ``enable_idempotence`` (InitProducerId).
    Delivery: ``acks="all"`` (the default) and, on Apache Kafka, ``enable_idempotence: true``
    (``configs/kafka.yaml``, ``configs/compose.yaml``): a producer retry after a lost
    acknowledgement then never writes a record twice or out of order. Idempotence needs
    ``acks="all"`` and is off by default only because tansu cannot do it. A retried send is
    given up after ``delivery_timeout_ms``; ``reconnect_backoff_max_ms`` caps the wait
    between reconnects to a broker that went away (kafka-python's own default is 30 s).
    ``compression_type``: ``gzip`` always works; ``snappy``, ``lz4`` and ``zstd`` need
    python-snappy / lz4 / zstandard installed and are refused otherwise (zstd also needs
    a broker >= 2.1). Group timeouts: tansu holds a group join for about half of
    ``session_timeout_ms``, so tests use a short session; Apache Kafka refuses sessions
    under its ``group.min.session.timeout.ms`` (6 s by default).
    ``sasl_plain_password`` is a :class:`~pydantic.SecretStr`: it is never shown by ``repr``
    or logs.
    """

    # merged with Strict's (extra="forbid"): pydantic combines a subclass's config with its base's
    model_config = ConfigDict(frozen=True)

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
    delivery_timeout_ms: int = Field(120_000, gt=0)  # a queued record is retried this long, then failed
    reconnect_backoff_max_ms: int = Field(1_000, gt=0)  # longest wait between reconnect attempts

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
        if self.enable_idempotence and self.acks != "all":
            raise ValueError(f"enable_idempotence needs acks 'all', got {self.acks!r}")
        if self.delivery_timeout_ms < self.request_timeout_ms:
            raise ValueError(f"delivery_timeout_ms ({self.delivery_timeout_ms}) must be at least "
                             f"request_timeout_ms ({self.request_timeout_ms})")
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
            "reconnect_backoff_max_ms": self.reconnect_backoff_max_ms,
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


class KafkaBus(Closing):
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
        return KafkaBusConsumer(self.config, group, check_topics(topics))

    def ensure_topics(self, names: Iterable[str], copartitioned: Sequence[str] | None = None) -> list[str]:
        """Create the missing topics with ``config.partitions``/``replication_factor``.

        Returns the names created; a topic that exists already (even one created
        concurrently by another worker) is left as it is. Then the topics of
        ``copartitioned`` that are among ``names`` (default: ``vigil.frames`` and
        ``vigil.scores``, which the alert role joins per camera) must have the same
        partition count, or :class:`BusError` says which differ: a camera's frames and
        scores are keyed alike, so only equal counts put them in the same partition number
        and give both to the same member of a consumer group.
        """
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        wanted = check_topics(list(names)) if not isinstance(names, str) else check_topics(names)
        if copartitioned is None:
            from common.messages import FRAMES_TOPIC, SCORES_TOPIC

            copartitioned = (FRAMES_TOPIC, SCORES_TOPIC)
        joined = [t for t in copartitioned if t in wanted]
        try:
            admin = KafkaAdminClient(**self.config.client_kwargs())
        except KafkaError as exc:
            raise BusError(f"cannot reach Kafka at {self._where()}: {exc!r}") from exc
        try:
            existing = set(admin.list_topics())
            missing = [t for t in wanted if t not in existing]
            created = self._create(admin, missing) if missing else []
            if len(joined) > 1:
                self._check_copartitioned(admin, joined, created)
            return created
        except KafkaError as exc:
            raise BusError(f"topic creation on {self._where()} failed: {exc!r}") from exc
        finally:
            admin.close()

    def _create(self, admin: Any, missing: list[str]) -> list[str]:
        from kafka.errors import TopicAlreadyExistsError, for_code

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

    def _check_copartitioned(self, admin: Any, topics: list[str], created: list[str]) -> None:
        """:class:`BusError` unless ``topics`` have one partition count (just created ones
        count as ``config.partitions``: their metadata may not have spread yet)."""
        counts = {t: self.config.partitions for t in created}
        described = [t for t in topics if t not in counts]
        deadline = time.monotonic() + 5.0
        while described:
            for topic in admin.describe_topics(described):
                counts[topic["name"]] = len(topic.get("partitions") or [])
            # a topic another role created a moment ago may not be described yet: ask again
            if all(counts.get(t, 0) > 0 for t in described) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if len({counts.get(t, 0) for t in topics}) > 1:
            listed = " and ".join(f"{t} ({counts.get(t, 0)} partitions)" for t in topics)
            raise BusError(f"topics {listed} at {self._where()} differ in partition count: a camera's "
                           "frames and scores must be co-partitioned (same key, same partition count); "
                           "re-create them with one count")

    def close(self) -> None:
        """Nothing to release: producers and consumers are closed by their owners."""


class KafkaBusProducer(Closing):
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
                delivery_timeout_ms=config.delivery_timeout_ms,
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
        k, v, h = check_send(topic, key, value, headers)
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


class KafkaBusConsumer(Closing):
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

        check_poll(max_records, timeout_ms)
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


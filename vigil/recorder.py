"""A score-stream sink for `vigil run`: one CSV per camera, duplicates dropped.

Reads ``vigil.scores`` in its own consumer group; a record redelivered after a detector
restart (at-least-once) is recognised by ``(camera, seq)`` and written once.

No single record can stop it: a record that cannot be parsed, or whose camera id is outside
the contract (it names a file), is counted (``vigil_recorder_rejected{reason="bad_message"}``);
any other exception while handling one record is counted as ``reason="error:<ExceptionType>"``,
logged once with topic, partition and offset, and the record skipped. It is bounded: at most
``max_cameras`` cameras are recorded (records of further cameras are counted as
``reason="too_many_cameras"``), at most ``max_open_files`` CSV files are open at once (the
least recently written is closed and reopened for appending when needed), and each camera
remembers at most :data:`DEDUP_WINDOW` seqs.
"""

from __future__ import annotations

import csv
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

from prometheus_client import CollectorRegistry, Counter

from common.bus import CommitFailedError, Consumer, Record
from common.messages import MessageError, ScoreMessage
from common.role_thread import RoleThread

log = logging.getLogger(__name__)

COLUMNS = ["seq", "ts", "score", "raw", "model", "latency_ms"]
# Seqs remembered per camera for de-duplication; redeliveries are of recent records only.
DEDUP_WINDOW = 20_000


class ScoreRecorder(RoleThread):
    """Writes ``DIR/<camera>.csv`` (seq, ts, score, raw, model, latency_ms) from score records."""

    thread_name, role_name = "recorder", "score recorder"

    def __init__(self, consumer: Consumer, out_dir: str | Path, registry: CollectorRegistry,
                 stop: threading.Event | None = None, max_cameras: int = 1024,
                 max_open_files: int = 64) -> None:
        self.consumer = consumer
        self.out_dir = Path(out_dir)
        self.stop = stop or threading.Event()
        self.max_cameras, self.max_open_files = max_cameras, max_open_files
        self.seen: dict[str, set[int]] = {}
        self.latest: dict[str, ScoreMessage] = {}
        self._files: OrderedDict[str, tuple[IO[str], Any]] = OrderedDict()  # open, least recent first
        self.written = Counter("vigil_recorder_scores_written", "score records written", ["camera"],
                               registry=registry)
        self.duplicates = Counter("vigil_recorder_duplicates", "redelivered score records dropped",
                                  registry=registry)
        self.rejected = Counter("vigil_recorder_rejected", "score records skipped, by reason", ["reason"],
                                registry=registry)
        self.write_errors = Counter("vigil_recorder_write_errors", "CSV files that could not be flushed",
                                    registry=registry)
        self._traced: set[str] = set()

    def _writer(self, camera: str) -> Any:
        """The camera's CSV writer: the file is created (with its header) on the camera's first
        record, and reopened for appending after it was closed to bound the open files."""
        if camera in self._files:
            self._files.move_to_end(camera)
            return self._files[camera][1]
        while len(self._files) >= self.max_open_files:
            _, (old, _w) = self._files.popitem(last=False)
            old.close()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fresh = camera not in self.seen or not self.seen[camera]
        fh = (self.out_dir / f"{camera}.csv").open("w" if fresh else "a", newline="")
        writer = csv.writer(fh)
        if fresh:
            writer.writerow(COLUMNS)
        self._files[camera] = (fh, writer)
        return writer

    def handle(self, records: list[Record]) -> int:
        """Write one poll's records, flush, commit; returns how many rows were written."""
        written = 0
        for record in records:
            try:
                written += self._handle_one(record)
            except Exception as exc:  # noqa: BLE001 - the per-record guard: counted, logged, skipped
                reason = f"error:{type(exc).__name__}"
                self.rejected.labels(reason).inc()
                trace = reason not in self._traced
                self._traced.add(reason)
                log.warning("skipping score record %s[%d]@%d: %s: %s", record.topic, record.partition,
                            record.offset, reason, exc, exc_info=exc if trace else None)
        for camera, (fh, _) in list(self._files.items()):
            try:
                fh.flush()
            except OSError as exc:  # e.g. disk full: counted, logged; the next flush tries again
                self.write_errors.inc()
                log.error("recorder: %s/%s.csv cannot be written: %s", self.out_dir, camera, exc)
        try:
            self.consumer.commit(records)
        except CommitFailedError as exc:
            log.warning("recorder commit failed (%s); duplicates will be dropped on redelivery", exc)
        return written

    def _handle_one(self, record: Record) -> int:
        try:
            # the contract refuses a camera id that could not name a file here (common.ids)
            msg = ScoreMessage.from_record(record.key, record.value, record.headers)
        except MessageError as exc:
            self.rejected.labels("bad_message").inc()
            log.warning("skipping unparseable score record %s[%d]@%d: %s", record.topic, record.partition,
                        record.offset, exc)
            return 0
        seen = self.seen.get(msg.camera)
        if seen is None:
            if len(self.seen) >= self.max_cameras:
                self.rejected.labels("too_many_cameras").inc()
                log.warning("skipping score record %s[%d]@%d: camera %s is past the %d cameras recorded",
                            record.topic, record.partition, record.offset, msg.camera, self.max_cameras)
                return 0
            seen = self.seen[msg.camera] = set()
        if msg.seq in seen:
            self.duplicates.inc()
            return 0
        self._writer(msg.camera).writerow(
            [msg.seq, msg.ts, f"{msg.score:.6f}", f"{msg.raw:.6f}", msg.model, f"{msg.latency_ms:.1f}"]
        )
        seen.add(msg.seq)
        if len(seen) > DEDUP_WINDOW:  # forget the oldest half; seq grows monotonically
            cut = sorted(seen)[len(seen) // 2]
            self.seen[msg.camera] = {q for q in seen if q >= cut}
        self.latest[msg.camera] = msg
        self.written.labels(msg.camera).inc()
        return 1

    def run(self) -> None:
        while not self.stop.is_set():
            records = self.consumer.poll(max_records=256, timeout_ms=200)
            if records:
                self.handle(records)

    def count(self, camera: str) -> int:
        return len(self.seen.get(camera, ()))

    def close(self) -> None:
        for fh, _ in self._files.values():
            fh.close()
        self._files.clear()

"""A score-stream sink for `vigil run`: one CSV per camera, duplicates dropped.

Reads ``vigil.scores`` in its own consumer group; a record redelivered after a detector
restart (at-least-once) is recognised by ``(camera, seq)`` and written once.
"""

from __future__ import annotations

import csv
import logging
import threading
from pathlib import Path
from typing import IO

from prometheus_client import CollectorRegistry, Counter

from common.bus import CommitFailedError, Consumer
from common.messages import MessageError, ScoreMessage

log = logging.getLogger(__name__)

COLUMNS = ["seq", "ts", "score", "raw", "model", "latency_ms"]
# Seqs remembered per camera for de-duplication; redeliveries are of recent records only.
DEDUP_WINDOW = 20_000


class ScoreRecorder:
    """Writes ``DIR/<camera>.csv`` (seq, ts, score, raw, model, latency_ms) from score records."""

    def __init__(self, consumer: Consumer, out_dir: str | Path, registry: CollectorRegistry,
                 stop: threading.Event | None = None) -> None:
        self.consumer = consumer
        self.out_dir = Path(out_dir)
        self.stop = stop or threading.Event()
        self.seen: dict[str, set[int]] = {}
        self.latest: dict[str, ScoreMessage] = {}
        self._files: dict[str, tuple[IO[str], csv.writer]] = {}
        self.written = Counter("vigil_recorder_scores_written", "score records written", ["camera"],
                               registry=registry)
        self.duplicates = Counter("vigil_recorder_duplicates", "redelivered score records dropped",
                                  registry=registry)
        self.rejected = Counter("vigil_recorder_rejected", "unparseable score records", registry=registry)
        self._thread: threading.Thread | None = None

    def _writer(self, camera: str) -> csv.writer:
        if camera not in self._files:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            fh = (self.out_dir / f"{camera}.csv").open("w", newline="")
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            self._files[camera] = (fh, writer)
        return self._files[camera][1]

    def handle(self, records: list) -> int:
        written = 0
        for record in records:
            try:
                msg = ScoreMessage.from_record(record.key, record.value, record.headers)
            except MessageError as exc:
                self.rejected.inc()
                log.warning("skipping unparseable score record at offset %d: %s", record.offset, exc)
                continue
            seen = self.seen.setdefault(msg.camera, set())
            if msg.seq in seen:
                self.duplicates.inc()
                continue
            seen.add(msg.seq)
            if len(seen) > DEDUP_WINDOW:  # forget the oldest half; seq grows monotonically
                cut = sorted(seen)[len(seen) // 2]
                self.seen[msg.camera] = seen = {q for q in seen if q >= cut}
            self.latest[msg.camera] = msg
            self._writer(msg.camera).writerow(
                [msg.seq, msg.ts, f"{msg.score:.6f}", f"{msg.raw:.6f}", msg.model, f"{msg.latency_ms:.1f}"]
            )
            self.written.labels(msg.camera).inc()
            written += 1
        for fh, _ in self._files.values():
            fh.flush()
        try:
            self.consumer.commit(records)
        except CommitFailedError as exc:
            log.warning("recorder commit failed (%s); duplicates will be dropped on redelivery", exc)
        return written

    def run(self) -> None:
        while not self.stop.is_set():
            records = self.consumer.poll(max_records=256, timeout_ms=200)
            if records:
                self.handle(records)

    def start(self) -> ScoreRecorder:
        self._thread = threading.Thread(target=self.run, name="recorder", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def count(self, camera: str) -> int:
        return len(self.seen.get(camera, ()))

    def close(self) -> None:
        for fh, _ in self._files.values():
            fh.close()
        self._files.clear()

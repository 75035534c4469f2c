"""Fixtures of the fault suite: the checkerboard clip, Redis, and the results table.

Every test measures one fault and hands its row to :func:`fault_row`; at the end of the
session the rows are merged into ``runs/faults.json`` (a row per fault, the newest run of
each) and printed as the README's table (``bench/fault_table.py`` renders it).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.alerting.streams import write_checker_folder
from tests.conftest import REPO, load_bench_script
from tests.servers import redis_server, redis_url  # noqa: F401 - fixtures

RESULTS = Path(os.environ.get("VIGIL_FAULTS_RESULTS", REPO / "runs" / "faults.json"))
_rows: list[dict] = []


@pytest.fixture(scope="session")
def checker_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped clip as JPEG frames 000-119, a checkerboard crossing frames 60-79."""
    folder = tmp_path_factory.mktemp("checker") / "frames"
    write_checker_folder(folder)
    return folder


@pytest.fixture
def fault_row() -> Iterator[Callable[..., dict]]:
    """``fault_row(order, fault, frames_lost, alerts_lost, duplicates, recovery_s, notes)``:
    the test's measured row, printed and kept for the table (with the test's wall time)."""
    started = time.monotonic()
    mine: list[dict] = []

    def record(order: int, fault: str, frames_lost: int, alerts_lost: int, duplicates: int,
               recovery_s: float | None, notes: str) -> dict:
        row = {"order": order, "fault": fault, "frames_lost": frames_lost, "alerts_lost": alerts_lost,
               "duplicates": duplicates, "recovery_s": None if recovery_s is None else round(recovery_s, 1),
               "notes": notes}
        print(f"\nfault measured: {json.dumps(row)}")
        mine.append(row)
        return row

    yield record
    for i, row in enumerate(mine):  # a test's time goes to its first row (the table sums them)
        row["seconds"] = round(time.monotonic() - started, 1) if i == 0 else 0.0
        _rows.append(row)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _rows:
        return
    old: list[dict] = []
    if RESULTS.exists():
        try:
            old = json.loads(RESULTS.read_text())["rows"]
        except (ValueError, KeyError):
            old = []
    faults = {r["fault"] for r in _rows}
    merged = [r for r in old if r["fault"] not in faults] + _rows
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": merged}, indent=2) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _rows:
        return
    table = load_bench_script("fault_table").render(sorted(_rows, key=lambda r: r["order"]))
    terminalreporter.write_sep("-", f"faults survived (this run; all rows in {RESULTS})")
    terminalreporter.write_line(table)

#!/usr/bin/env python3
"""The "Faults survived" table of docs/results.md, from what the fault suite measured.

Each test of ``tests/faults/`` writes its row (fault, frames lost, alerts lost, duplicates
after de-duplication, recovery time, notes, its own wall time) into ``runs/faults.json``;
this script renders them as a markdown table, and with ``--readme`` puts the table into
docs/results.md (or the file given) between its ``fault-table`` markers.

    .venv/bin/python -m pytest -q tests/faults        # measures, writes runs/faults.json
    .venv/bin/python bench/fault_table.py             # prints the table
    .venv/bin/python bench/fault_table.py --readme docs/results.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "runs" / "faults.json"
START, END = "<!-- fault-table:start -->", "<!-- fault-table:end -->"
COLUMNS = ("fault", "frames lost", "alerts lost", "duplicates after de-dup", "recovery time", "notes")


def load(path: Path = RESULTS) -> list[dict]:
    """The rows, in the suite's order (the issue's order of the faults)."""
    rows = json.loads(path.read_text())["rows"]
    return sorted(rows, key=lambda r: (r.get("order", 99), r["fault"]))


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(rows: list[dict]) -> str:
    """A markdown table of the rows, then the suite's time."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in rows:
        recovery = "" if r.get("recovery_s") is None else f"{r['recovery_s']:.1f} s"
        lines.append("| " + " | ".join(_cell(c) for c in (
            r["fault"], r["frames_lost"], r["alerts_lost"], r["duplicates"], recovery, r["notes"])) + " |")
    seconds = sum(r.get("seconds", 0.0) for r in rows)
    lines.append("")
    lines.append(f"Measured by `tests/faults/` ({len(rows)} faults, {seconds:.0f} s of test time on this "
                 "project's 2-core machine); regenerate with "
                 "`bench/fault_table.py --readme docs/results.md`.")
    return "\n".join(lines)


def put_in_readme(readme: Path, table: str) -> None:
    """Replace what lies between the markers of ``readme`` with ``table``."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _old, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{table}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--readme", type=Path, help="write the table into this README (between the markers)")
    args = ap.parse_args(argv)
    if not args.results.exists():
        print(f"no results at {args.results}: run `pytest tests/faults` first", file=sys.stderr)
        return 2
    table = render(load(args.results))
    if args.readme is not None:
        put_in_readme(args.readme, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

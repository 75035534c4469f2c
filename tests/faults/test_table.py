"""bench/fault_table.py: the README's table from the rows the fault suite measured."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import load_bench_script


def test_rows_render_in_order_and_replace_the_readme_block(tmp_path: Path) -> None:
    table = load_bench_script("fault_table")
    rows = [{"order": 2, "fault": "b | pipe", "frames_lost": 0, "alerts_lost": 0, "duplicates": 0,
             "recovery_s": 2.25, "notes": "two", "seconds": 30.0},
            {"order": 1, "fault": "a", "frames_lost": 0, "alerts_lost": 1, "duplicates": 0,
             "recovery_s": None, "notes": "one", "seconds": 12.0}]
    results = tmp_path / "faults.json"
    results.write_text(json.dumps({"rows": rows}))
    text = table.render(table.load(results))
    lines = text.splitlines()
    assert lines[0] == ("| fault | frames lost | alerts lost | duplicates after de-dup | recovery time "
                        "| notes |")
    assert lines[2] == "| a | 0 | 1 | 0 |  | one |"
    assert lines[3] == "| b \\| pipe | 0 | 0 | 0 | 2.2 s | two |"
    assert "2 faults, 42 s of test time" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{table.START}\nold\n{table.END}\n\nafter\n")
    assert table.main(["--results", str(results), "--readme", str(readme)]) == 0
    assert readme.read_text() == f"# x\n\n{table.START}\n{text}\n{table.END}\n\nafter\n"

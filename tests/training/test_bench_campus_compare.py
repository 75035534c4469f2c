"""bench/campus_compare.py: its --set parsing and ablation rows (the training itself runs in
bench/ only; it takes tens of minutes)."""

from __future__ import annotations

import pytest

from tests.conftest import load_bench_script
from training.settings import TrainSettings


def test_set_parses_values_and_refuses_a_preset() -> None:
    bench = load_bench_script("campus_compare")
    assert bench._parse_set(["input_size=128", "sanflow_stats_input=quarter"]) == {
        "input_size": 128, "sanflow_stats_input": "quarter"}
    with pytest.raises(SystemExit, match="preset"):
        bench._parse_set(["preset=sanflow-paper"])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        bench._parse_set(["epochs"])


def test_every_ablation_row_is_a_valid_setting() -> None:
    bench = load_bench_script("campus_compare")
    assert {"stats-half", "stats-quarter", "stats-eighth"} <= set(bench.ABLATIONS)
    for changes in bench.ABLATIONS.values():
        TrainSettings(model="sanflow", **changes)

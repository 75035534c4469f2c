"""bench/cameras.py: a real `vigil run` with live (real-time, looping) cameras, its CPU time
and the detector's counters over a window."""

from __future__ import annotations

import doctest

import pytest

from tests.conftest import TINY_SCENE, load_bench_script


def test_measures_a_running_vigil_run(registry) -> None:
    bench = load_bench_script("cameras")
    row = bench.measure(2, 5.0, seconds=3.0, warmup=1.0, registry=registry.root, scene=TINY_SCENE)
    assert row["cameras"] == 2 and row["seconds"] >= 3.0
    assert 0 < row["cores"] < 4 and row["scores_per_s"] > 0  # it ran and scored frames in the window
    # Two cameras at 5 fps offer 10 frames a second; a window can see a backlog drain, no more.
    assert 0 < row["kept_up"] < 2 and row["stale_skipped"] >= 0
    # cores is rounded to 3 decimals (a relative error up to 0.0005 / cores), the ratio to 2
    assert row["cameras_per_core"] == pytest.approx(2 / row["cores"], rel=0.0006 / row["cores"], abs=0.006)


def test_counters_are_summed_over_labels() -> None:
    bench = load_bench_script("cameras")
    assert doctest.testmod(bench).failed == 0

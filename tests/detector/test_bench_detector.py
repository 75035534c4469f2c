"""bench/detector.py: every row runs, the project's heads equal the official-style reference."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from tests.conftest import load_bench_script


def test_rows_ratios_macs_and_the_reference_difference(tmp_path: Path) -> None:
    bench = load_bench_script("detector")
    out = tmp_path / "detector.json"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert bench.main(["--encoders", "tf_efficientnet_lite0", "--batches", "2", "--frames", "2",
                           "--size", "64", "--rounds", "2", "--threads", "1", "--train-steps", "2",
                           "--fiber-batch", "64", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    speed, train = report["results"]
    assert set(speed["rows"]) == {"encoder", "cflow", "sanflow", "heads", "previous", "reference",
                                  "cflow-int8", "heads-int8", "encoder-unfolded", "cflow-unfolded"}
    assert speed["rows"]["encoder"]["vs_encoder"]["median"] == 1.0
    assert all(row["fps"]["min"] > 0 for row in speed["rows"].values())
    # The projection cache computes fewer multiply-accumulates, with the same log-likelihoods.
    assert 0 < speed["heads_gmac"] < speed["reference_gmac"]
    assert speed["max_relative_log_p_difference"] < 1e-4
    # int8 heads approximate the float ones (measured on trained heads: docs/results.md)
    assert 0 < speed["int8_max_relative_log_p_difference"] < 0.5
    assert train["training_fibers_per_s"]["project"]["min"] > 0
    assert "| heads |" in printed.getvalue()

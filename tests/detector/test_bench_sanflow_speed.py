"""bench/sanflow_speed.py: side-by-side frames/s of the encoder, CFLOW-AD and SANFlow's
statistics-network variants, its ratios, and the training-cost job (tiny sizes)."""

from __future__ import annotations

import pytest

from tests.conftest import CLIP, load_bench_script


def test_rounds_ratios_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench_script("sanflow_speed")
    result = bench.main(["--size", "64", "--batch", "2", "--batches", "1", "--rounds", "2", "--threads", "1",
                         "--variants", "encoder,full,eighth"])
    assert result["frames_per_round"] == 2 and len(result["rounds"]) == 2
    summary = result["summary"]
    assert list(summary) == ["encoder", "full", "eighth"]
    for name, row in summary.items():
        assert row["fps"]["min"] <= row["fps"]["median"] <= row["fps"]["max"]
        ratios = [r[name] / r["encoder"] for r in result["rounds"]]
        assert row["vs_encoder"]["min"] == pytest.approx(min(ratios))
    assert summary["encoder"]["vs_encoder"]["median"] == pytest.approx(1.0)
    assert summary["full"]["vs_full"]["median"] == pytest.approx(1.0)
    best = max(r["eighth"] for r in result["rounds"]) / max(r["full"] for r in result["rounds"])
    assert summary["eighth"]["best_vs_full"] == pytest.approx(best)
    assert len(result["cpu_rounds"]) == 2 and result["cpu_summary"]["encoder"]["vs_encoder"]["median"] == 1.0
    out = capsys.readouterr().out
    assert "round 2:" in out and "| eighth | 0.01 | " in out and "| full | 0.46 | " in out
    assert bench.stats_gmac("cflow", 256) is None and bench.stats_gmac("fixed", 256) is None
    assert bench.stats_gmac("full", 256) == pytest.approx(7.44, abs=0.01)
    assert bench.stats_gmac("quarter", 256) == pytest.approx(7.44 / 16, abs=0.01)
    with pytest.raises(SystemExit, match="unknown variants \\['sixteenth'\\]"):
        bench.main(["--variants", "encoder,sixteenth"])


def test_training_cost_job() -> None:
    bench = load_bench_script("sanflow_speed")
    row = bench.train_job("quarter", CLIP, 4, 2, 64, 2, 1, None)
    assert row["model"] == "quarter" and len(row["epoch_s"]) == 2 and all(s > 0 for s in row["epoch_s"])
    assert row["peak_rss_mb"] >= row["rss_before_training_mb"] > 0

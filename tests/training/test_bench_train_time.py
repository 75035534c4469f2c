"""bench/train_time.py: ``vigil train`` under two settings side by side, on a tiny STC-layout set."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from tests.conftest import load_bench_script
from tests.stc_fixture import TINY_TRAINING, make_tiny_stc


def test_times_each_variant_and_keeps_its_checkpoint(tmp_path: Path) -> None:
    root = make_tiny_stc(tmp_path / "stc")
    config = tmp_path / "c.yaml"
    config.write_text("training:\n" + TINY_TRAINING)
    bench = load_bench_script("train_time")
    out = tmp_path / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        assert bench.main(["--stc-root", str(root), "--scene", "01", "--config", str(config),
                           "--variant", "epochs=2", "--variant", "epochs=1", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["variants"]) == ["epochs=2", "epochs=1"]
    assert report["variants"]["epochs=2"]["ratio_to_reference"] == [1.0]
    assert report["variants"]["epochs=1"]["median_seconds"] > 0
    for name, epochs in (("epochs-2", 2), ("epochs-1", 1)):
        meta = json.loads((out / name / "r0" / "registry" / "01" / "meta.json").read_text())
        assert meta["training"]["settings"]["epochs"] == epochs
        assert meta["training"]["settings"]["input_size"] == 64  # the base config's keys kept
        trained = json.loads((out / name / "r0" / "report.json").read_text().strip().splitlines()[-1])
        assert trained["scene"] == "01"
    assert "epochs=1" in printed.getvalue()


def test_a_failing_variant_is_an_error_that_names_it(tmp_path: Path) -> None:
    root = make_tiny_stc(tmp_path / "stc")
    bench = load_bench_script("train_time")
    with pytest.raises(SystemExit, match="variant 'epochs=0'"), contextlib.redirect_stderr(io.StringIO()):
        bench.main(["--stc-root", str(root), "--scene", "01", "--variant", "epochs=0",
                    "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        bench.parse_variant("epochs")


def test_each_variant_is_timed_to_its_own_end() -> None:
    """The variants end in any order; each one's time is read when it ends (the first
    version waited for them in order, so a quick variant behind a slow one got the slow
    one's time)."""
    bench = load_bench_script("train_time")
    ticks = [0]

    class Proc:
        def __init__(self, ends: int) -> None:
            self.ends, self.returncode = ends, None

        def poll(self) -> int | None:
            return 0 if ticks[0] >= self.ends else None

    def tick(_seconds: float) -> None:
        ticks[0] += 1

    ended = bench.wait_all({"slow": Proc(9), "fast": Proc(4)}, clock=lambda: ticks[0], sleep=tick)
    assert ended == {"slow": 9, "fast": 4}

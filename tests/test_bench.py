"""The benchmark runs and reports ratios against its baselines (no time limits asserted)."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench


@pytest.mark.slow
def test_quick_bench_writes_ratios(tmp_path, capsys):
    bench.main(["--quick", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "latest.json").read_text())["results"]
    assert {row["name"].split(" x")[0].split(" --")[0].split(" (")[0] for row in results} == {
        "decide", "spend", "article page", "seed", "search p50", "search p95"}
    for row in results:
        assert row["gate_s"] > 0 and row["baseline_s"] > 0 and row["ratio"] > 0
    assert "ratio" in capsys.readouterr().out

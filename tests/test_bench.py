"""The benchmark runs and reports ratios against its baselines (no time limits asserted)."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench


@pytest.mark.slow
def test_quick_bench_writes_ratios(tmp_path, capsys):
    bench.main(["--quick", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "latest.json").read_text())["results"]
    document = json.loads((tmp_path / "latest.json").read_text())
    assert {row["name"].split(" x")[0].split(" --")[0].split(" (")[0] for row in results} == {
        "decide", "spend", "seed", "search p50", "search p95"}
    # the page per tier and the unlock, each against the same template and context without gate
    assert [row["name"].rsplit(" x", 1)[0] for row in document["pages"]] == [
        "article page, anonymous", "article page, registered (quota left)",
        "article page, registered (unlocked)", "article page, subscriber", "unlock API (already unlocked)"]
    assert [row["target"] for row in document["pages"]] == [0.8, 0.8, 0.8, 0.8, 0.7]
    for row in results + document["pages"]:
        assert row["gate_s"] > 0 and row["baseline_s"] > 0 and row["ratio"] > 0
    assert "baseline / gate, higher is better" in capsys.readouterr().out


def test_percentiles_interpolate_within_the_values():
    values = [float(n) for n in range(100, 0, -1)]  # 1..100, in any order
    assert bench.percentile(values, 0.5) == pytest.approx(50.5)
    assert bench.percentile(values, 0.99) == pytest.approx(99.01)
    assert 1.0 <= bench.percentile([1.0, 2.0], 0.95) <= 2.0
    assert bench.percentile([0.25], 0.99) == 0.25  # one request: its own latency
    for share in (0, 1, 0.9999, -0.5):  # the minimum, the maximum or past them: not a percentile it gives
        with pytest.raises(ValueError, match="between 0.001 and 0.999"):
            bench.percentile(values, share)

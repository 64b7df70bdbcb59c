"""The serving sweep: its grid, ratios, derived rule and table (no server, no times asserted)."""

from __future__ import annotations

import json

import pytest

from benchmarks import serving


def _run(engine, cores, connections, workers, threads, rps, balanced=True):
    return {"engine": engine, "cores": cores, "connections": connections, "workers": workers,
            "threads": threads, "rps": rps, "p50_ms": 10.0, "p99_ms": 30.0, "per_cpu_s": 400.0,
            "balanced": balanced, "errors": 0, "non2xx": 0 if rps else 5}


# One core: 1 worker is best; two cores: 2 workers; 4 threads beat 1 everywhere.
RUNS = [_run("sqlite", 1, 16, 1, 4, 400), _run("sqlite", 1, 16, 2, 4, 300), _run("sqlite", 1, 16, 1, 1, 200),
        _run("sqlite", 1, 16, 2, 1, 150), _run("sqlite", 2, 16, 1, 4, 500), _run("sqlite", 2, 16, 2, 4, 800),
        _run("sqlite", 2, 16, 1, 1, 250), _run("sqlite", 2, 16, 2, 1, 400, balanced=False)]


def test_each_run_is_a_ratio_to_the_best_of_its_engine_cores_and_load():
    ratios = {(r["cores"], r["workers"], r["threads"]): r["ratio"] for r in serving.with_ratios(RUNS)}
    assert ratios[(1, 1, 4)] == 1.0 and ratios[(2, 2, 4)] == 1.0
    assert ratios[(1, 2, 4)] == 0.75 and ratios[(2, 1, 4)] == 0.625


def test_the_rule_is_the_one_closest_to_the_best_on_every_core_count():
    rule = serving.derive_rule(serving.with_ratios(RUNS))
    assert rule == {"workers": "cores", "threads": 4, "score": 1.0, "worst": 1.0}
    # 2 x cores needs 4 workers on two cores, which this grid lacks: it is no candidate
    assert serving.derive_rule([]) is None


@pytest.mark.parametrize("markdown", [False, True])
def test_the_table_has_a_line_per_run_and_the_rule(markdown):
    document = {"runs": serving.with_ratios(RUNS), "postgresql": "skipped: no server",
                "rule": serving.derive_rule(serving.with_ratios(RUNS))}
    text = serving.format_table(document, markdown)
    lines = text.splitlines()
    assert ("| engine | cores |" in lines[0]) is markdown
    assert sum("sqlite" in line for line in lines) == len(RUNS)
    assert "(a worker idled)" in text and "**best**" in text
    assert "PostgreSQL: skipped: no server" in text and "Rule: workers = cores, threads = 4" in text


def test_counts_parse_strictly():
    assert serving.parse_counts("1,2, 4") == (1, 2, 4)
    for bad in ("", "0,2", "two"):
        with pytest.raises(ValueError):
            serving.parse_counts(bad)


def test_the_grid_is_every_shape_under_every_load_on_every_core_count():
    grid = {"cores": (1, 2), "connections": (16, 64), "workers": (1, 2, 3), "threads": (4, 8)}
    shapes = serving.shapes(grid)
    assert len(shapes) == 2 * 2 * 3 * 2 and len({tuple(s.values()) for s in shapes}) == len(shapes)
    assert serving.cap(16, 3, 4) == 6 + 4  # a worker's share, rounded up, plus its threads


def test_the_wrk_script_replays_the_mix_round_robin():
    cookies = {kind: {"cookie": f"session={kind}", "csrf": f"token-{kind}"}
               for kind in ("anonymous", "registered", "subscriber")}
    mix = serving.reading_mix(cookies, "a-page", "unlocked")
    script = serving.wrk_script(mix)
    assert script.count("wrk.format(") == 4 and "next_one % #mix + 1" in script
    assert 'wrk.format("POST", [==[/api/articles/unlocked/unlock]==]' in script
    assert "[==[token-registered]==]" in script and "session=subscriber" in script


def test_main_sweeps_the_grid_it_is_given_and_writes_the_document(tmp_path, monkeypatch, capsys):
    asked = {}

    def fake_run(grid, seconds, generator, pg_local, rounds):
        asked.update(grid=grid, seconds=seconds, pg_local=pg_local, rounds=rounds)
        runs = serving.with_ratios(RUNS)
        return {"runs": runs, "postgresql": "measured", "rule": serving.derive_rule(runs), "cpus": 2,
                "generator": "wrk", "mix": ["anonymous page"]}

    monkeypatch.setattr(serving, "run", fake_run)
    serving.main(["--quick", "--cores", "1", "--no-pg-local", "--markdown", "--out", str(tmp_path)])
    assert asked == {"grid": {**serving.QUICK, "cores": (1,)}, "seconds": 1, "pg_local": False,
                     "rounds": 1}
    assert json.loads((tmp_path / "serving.json").read_text())["rule"]["threads"] == 4
    assert "| sqlite | 1 | 16 | 1 x 4 |" in capsys.readouterr().out


def test_gate_serve_defaults_follow_the_measured_rule_and_help_shows_them():
    from click.testing import CliRunner

    from gate.cli import main
    from gate.cli import serving as cli

    assert [cli.default_workers(cores) for cores in (1, 2, 4, 8)] == [cli.WORKERS_PER_CORE * n for n in (1, 2, 4, 8)]
    assert cli.default_workers(200) == 64  # the option's own ceiling
    assert cli.default_worker_connections(4) == cli.CONNECTIONS_PER_THREAD * 4 + 4
    shown = " ".join(CliRunner().invoke(main, ["serve", "--help"]).output.split())
    assert f"default: ({cli.default_workers()}: {cli.WORKERS_PER_CORE} per core" in shown
    assert f"at {cli.THREADS})" in shown and f"default: {cli.THREADS};" in shown

"""`gate loadtest`: its options, its verdict, and a short real run against a fresh site."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from gate.cli.loadtest import Duration, loadtest
from gate.loadtest import run
from gate.storage import schemas
from gate.storage.db import open_database, open_site_db


@pytest.mark.parametrize("text, seconds", [("60s", 60), ("5m", 300), ("1m30s", 90), ("45", 45), ("1h", 3600)])
def test_duration_accepts_run_times(text, seconds):
    assert Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("args, message", [
    (["--duration", "garbage"], "not a duration"),
    (["--duration", "0s"], "between 1s and 24h"),
    (["--duration", "-5s"], "not a duration"),
    (["--users", "0"], "--users"),
    (["--host", "http://example.com"], "not a loopback address"),
    (["--host", "http://10.0.0.7:8000"], "not a loopback address"),
    (["--host", "http://[2001:db8::1]:8000"], "not a loopback address"),
    (["--host", "127.0.0.1:8000"], "give a URL"),
    (["--host", "ftp://127.0.0.1/"], "give a URL"),
    (["--master", "--processes", "2"], "either --master"),
    (["--host", "http://127.0.0.1:8001", "--targets", "http://127.0.0.1:8002"], "either --host or --targets"),
    (["--targets", "http://127.0.0.1:8001,http://example.com"], "not a loopback address"),
    (["--targets", " , "], "one or more URLs"),
    (["--targets", "http://127.0.0.1:8001", "--nodes", "2"], "--nodes and --fresh-schema"),
    (["--host", "http://127.0.0.1:8001", "--fresh-schema"], "--nodes and --fresh-schema"),
    (["--locust-workers", "2", "--master"], "--locust-workers runs its own"),
    (["--locust-workers", "2", "--processes", "2"], "--locust-workers runs its own"),
    (["--nodes", "0"], "--nodes"),
    (["--fresh-schema"], "needs GATE_DATABASE_URL"),
])
def test_bad_options_are_refused_before_any_load(args, message, tmp_path, monkeypatch):
    monkeypatch.delenv("GATE_DATABASE_URL", raising=False)
    result = CliRunner().invoke(loadtest, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()  # nothing ran


@pytest.mark.parametrize("url, loopback", [
    ("http://127.0.0.1:8000", True), ("http://127.8.9.10", True), ("https://localhost:5000/", True),
    ("http://[::1]:8000", True), ("http://localhost.example.com", False), ("http://192.168.1.2", False),
    ("http://0.0.0.0:8000", False), ("file:///etc/passwd", False), ("127.0.0.1", False),
])
def test_only_loopback_counts_as_this_machine(url, loopback):
    assert run.is_loopback(url) is loopback


@pytest.mark.parametrize("error, kind", [
    ("CatchResponseError('server error 502')", "server"),
    ("CatchResponseError('connection error: ConnectionError')", "server"),
    ("HTTPError('500 Server Error: INTERNAL SERVER ERROR for url: /')", "server"),
    ("CatchResponseError('invariant: 4 unlocks granted with a limit of 3')", "invariant"),
    ("CatchResponseError('unexpected status 400')", "other"),
])
def test_failures_are_classified(error, kind):
    assert run.failure_kind(error) == kind


def _result(requests, failures, exceptions=0):
    total = run.EndpointStats("", "Aggregated", requests, 0, 10.0, 5, 9, 12)
    refused = run.EndpointStats("POST", "/api/articles/[slug]/unlock [403]", 7, 0, 1.0, 5, 9, 12)
    return run.LoadReport(database=None, endpoints=[refused], total=total,
                      failures=[{"Method": "GET", "Name": "/", "Error": error, "Occurrences": str(n)}
                                for error, n in failures],
                      exceptions=exceptions, files=[])


@pytest.mark.parametrize("failures, exceptions, expected", [
    ([], 0, []),
    ([("CatchResponseError('server error 500')", 1)], 0, ["server error"]),
    ([("CatchResponseError('invariant: subscriber shown a teaser')", 1)], 0, ["broken invariant"]),
    ([("CatchResponseError('unexpected status 400')", 5)], 0, []),  # 0.5% is under 1%
    ([("CatchResponseError('unexpected status 400')", 5)], 10, ["other failure"]),
])
def test_verdict_thresholds(failures, exceptions, expected):
    problems = _result(1000, failures, exceptions).problems(max_server_errors=0, max_failure_rate=0.01)
    assert len(problems) == len(expected)
    for problem, words in zip(problems, expected):
        assert words in problem


def test_fresh_nodes_share_one_database_one_key_and_one_origin(tmp_path):
    plan = run.LoadPlan(nodes=3, workers=2, database="postgresql://gate@127.0.0.1:5432/gate")
    nodes = run.site_nodes(plan.database, plan, tmp_path)
    envs = [server.env for server in nodes.servers]
    assert len({server.port for server in nodes.servers}) == 3
    assert all(env == envs[0] for env in envs)  # one database, one secret key, one public origin
    assert envs[0]["GATE_DATABASE_URL"] == plan.database and "GATE_DATABASE" not in envs[0]
    assert envs[0]["GATE_BASE_URL"] == nodes.urls[0] and envs[0]["GATE_PROXY_COUNT"] == "1"
    assert all(server.command[server.command.index("--workers") + 1] == "2" for server in nodes.servers)
    assert [server.log_path.name for server in nodes.servers] == ["node1.log", "node2.log", "node3.log"]


def test_locust_spreads_over_the_nodes_and_a_master_waits_for_its_workers(tmp_path):
    plan = run.LoadPlan(users=8)
    one = run.locust_command(plan, "http://127.0.0.1:8001", tmp_path)
    assert "--gate-targets" not in one and one[one.index("--host") + 1] == "http://127.0.0.1:8001"
    master = ("--master", "--expect-workers", "2")
    two = run.locust_command(plan, ("http://127.0.0.1:8001", "http://127.0.0.1:8002"), tmp_path, master)
    assert two[two.index("--gate-targets") + 1] == "http://127.0.0.1:8001,http://127.0.0.1:8002"
    assert two[two.index("--host") + 1] == "http://127.0.0.1:8001" and two[-3:] == list(master)
    assert run.worker_command("127.0.0.1", 5599)[-5:] == ["--worker", "--master-host", "127.0.0.1",
                                                          "--master-port", "5599"]


def test_a_database_that_holds_a_site_is_told_apart(backend_target):
    assert schemas.site_rows(backend_target) == {"articles": 0, "readers": 0}
    db = open_database(backend_target)
    db.insert("readers", {"email": "a@example.org", "session_token": "t", "created_at": "2026-01-01"})
    db.close()
    assert schemas.site_rows(backend_target) == {"articles": 0, "readers": 1}


def test_a_missing_sqlite_file_holds_no_site(tmp_path):
    assert schemas.site_rows(tmp_path / "none.sqlite") == {}
    assert not (tmp_path / "none.sqlite").exists()


def test_a_fresh_schema_is_empty_migrates_and_is_dropped(pg_url):
    name, scoped = schemas.create_schema(pg_url, "gate_test_fresh")
    try:
        open_site_db(scoped).close()
        assert schemas.site_rows(scoped) == {"articles": 0, "readers": 0}
    finally:
        schemas.drop_schema(pg_url, name, scoped)
    db = open_database(pg_url)
    try:
        assert db.scalar("select count(*) from information_schema.schemata where schema_name = ?", [name]) == 0
    finally:
        db.close()
    with pytest.raises(ValueError, match="not a schema name"):
        schemas.schema_url(pg_url, "x; drop table readers")


def test_refusals_are_counted_apart():
    assert _result(100, []).refused == {"403": 7}


def test_command_has_help_and_documents_distributed_mode():
    result = CliRunner().invoke(loadtest, ["--help"])
    assert result.exit_code == 0
    for words in ("--master", "--worker", "--expect-workers", "only", "loopback", str(run.LOCUSTFILE)):
        assert words in result.output


@pytest.mark.slow
def test_short_real_load_test_against_a_fresh_site(tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(loadtest, [
        "--users", "20", "--spawn-rate", "20", "--duration", "10s", "--out", str(out),
        "--synthetic", "100", "--subscribers", "3"])
    stats, total = run.read_stats(out)
    failures, exceptions = run.read_failures(out)
    server_errors = [row for row in failures if run.failure_kind(row["Error"]) == "server"]
    assert "Load test:" in result.output and "total" in result.output
    assert total.requests > 0 and total.rps > 0
    assert {"GET /articles/[slug]", "POST /signup", "POST /login"} <= {f"{r.method} {r.name}" for r in stats}
    assert not server_errors, server_errors
    assert exceptions == 0, (out / "loadtest_exceptions.csv").read_text()
    for name in ("loadtest_stats.csv", "loadtest_failures.csv", "loadtest_stats_history.csv",
                 "loadtest.html", "locust.log"):
        assert (out / name).stat().st_size > 0, name
    assert "Audit: clean" in result.output, result.output
    assert result.exit_code == 0, result.output

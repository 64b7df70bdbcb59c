"""The HTTP benchmark: its bare baseline, its built-in generator and a --quick run (ratios, no times)."""

from __future__ import annotations

import http.server
import json
import math
import os
import random
import re
import threading

import psycopg
import pytest

from benchmarks import engines, httpbench


@pytest.fixture
def bench_site(tmp_path):
    """A benchmark database: demo and synthetic articles, a reader and a subscriber."""
    return httpbench.prepare_site(tmp_path)


@pytest.mark.parametrize("tier, marker, full", [
    ("anonymous", 'data-offer="register"', False),
    ("registered", 'data-offer="unlock"', False),
    ("unlocked", 'data-reason="already_unlocked"', True),
    ("subscriber", 'data-reason="subscriber"', True),
])
def test_bare_page_renders_the_same_template_per_tier(bench_site, tier, marker, full):
    app = httpbench.bare_app(str(bench_site["database"]), "bench-key")
    page = app.test_client().get(f"/bare/articles/{bench_site['page']}?as={tier}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert marker in text and '<meta name="csrf-token"' in text and "story__body" in text
    assert ('class="story__gated"' in text) is full  # gated text only with full access
    if tier == "unlocked":  # the registered reader's meter: the one article they unlocked
        assert "2 of 3 free articles left this month" in text


_CLOCK = re.compile(r'<time datetime="[^"]+">[^<]+</time>')  # the masthead's clock ticks between two pages
_CSRF_VALUE = re.compile(r'(name="csrf_token" value|name="csrf-token" content)="[^"]+"')


def _same(text: str) -> str:
    """A page without what differs between two renders of it: the clock, the CSRF token, the login link's path."""
    return re.sub(r"next=/(pooled|bare)/", "next=/", _CSRF_VALUE.sub(r"\1", _CLOCK.sub("", text)))


def test_each_scenario_renders_the_same_page_on_gate_and_on_the_pooled_baseline(bench_site):
    from gate import create_app

    app = create_app({"DATABASE": str(bench_site["database"]), "SECRET_KEY": "bench-key",
                      "RATELIMIT_ENABLED": False, "SERVER_NAME": "localhost"})
    clients, tokens = httpbench.client_sessions(app, bench_site)
    bare = httpbench.bare_app(str(bench_site["bare_database"]), "bench-key").test_client()
    names = []
    for scenario in httpbench.scenarios(bench_site["page"], bench_site["unlocked"]):
        headers = {"X-CSRFToken": tokens[scenario.session]} if scenario.csrf else {}
        gate = clients[scenario.session].open(scenario.gate_path, method=scenario.method, headers=headers)
        baseline = bare.open(scenario.pooled_path, method=scenario.method, headers=headers)
        assert gate.status_code == baseline.status_code == 200, scenario.name
        assert scenario.expect in gate.get_data(as_text=True), scenario.name
        assert _same(baseline.get_data(as_text=True)) == _same(gate.get_data(as_text=True)), scenario.name
        names.append(scenario.name)
    assert sum("article page" in name for name in names) == 4 and len(names) == 6


def test_the_baseline_leaves_gates_session_cookie_alone(bench_site):
    """The bare app gets gate's session cookie, as over HTTP; verifying and reading it is gate's work."""
    from flask import session
    from flask.sessions import SecureCookieSessionInterface

    app = httpbench.bare_app(str(bench_site["bare_database"]), "bench-key")
    signed = SecureCookieSessionInterface().get_signing_serializer(app).dumps({"_user_id": "1"})
    path, cookie = f"/pooled/articles/{bench_site['page']}", {"Cookie": f"session={signed}"}
    with app.test_request_context(path, headers=cookie):
        assert "_user_id" not in session  # Flask's own sessions would have verified the cookie and read it
    answer = app.test_client().get(path, headers=cookie)
    assert answer.status_code == 200 and "Set-Cookie" not in answer.headers


def test_pooled_bare_page_is_the_same_page(bench_site):
    client = httpbench.bare_app(str(bench_site["database"]), "bench-key").test_client()
    for tier in ("anonymous", "registered", "unlocked", "subscriber"):
        fresh = client.get(f"/bare/articles/{bench_site['page']}?as={tier}")
        pooled = client.get(f"/pooled/articles/{bench_site['page']}?as={tier}")
        assert pooled.status_code == 200
        assert _same(pooled.get_data(as_text=True)) == _same(fresh.get_data(as_text=True))
    assert client.get(f"/pooled/api/articles/{bench_site['page']}").get_json() == \
        client.get(f"/bare/api/articles/{bench_site['page']}").get_json()
    assert client.get("/pooled/articles/no-such-article").status_code == 404


def test_the_postgresql_baseline_reads_the_same_row_from_postgresql(tmp_path, bench_site, pg_empty):
    site = httpbench.prepare_site(tmp_path / "pg", pg_empty)
    assert site["bare_database"] == site["database"] == pg_empty  # gate's own database, not a SQLite copy
    app = httpbench.bare_app(site["bare_database"], "bench-key")
    on_pg = app.test_client()
    on_sqlite = httpbench.bare_app(str(bench_site["bare_database"]), "bench-key").test_client()
    try:
        for tier in ("anonymous", "registered", "unlocked", "subscriber"):
            page = on_pg.get(f"/pooled/articles/{site['page']}?as={tier}")
            assert page.status_code == 200
            assert _same(page.get_data(as_text=True)) == _same(
                on_sqlite.get(f"/pooled/articles/{site['page']}?as={tier}").get_data(as_text=True))
        with psycopg.connect(pg_empty, autocommit=True) as conn:  # read per request, on its kept connection
            conn.execute("update articles set title = 'Read from PostgreSQL' where slug = %s", [site["page"]])
        assert "Read from PostgreSQL" in on_pg.get(f"/pooled/articles/{site['page']}").get_data(as_text=True)
        assert on_pg.get(f"/pooled/api/articles/{site['page']}").get_json()["title"] == "Read from PostgreSQL"
        assert on_pg.get("/pooled/articles/no-such-article").status_code == 404
    finally:
        httpbench.close_kept(app)


def test_the_baseline_reads_the_article_columns_gate_reads_not_the_search_vector(bench_site, pg_empty,
                                                                                monkeypatch):
    """On PostgreSQL ``select *`` would hand the baseline the articles' tsvector too, which gate never reads."""
    from gate.services import content

    sent = []

    class Recording:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, params=()):
            sent.append(sql)
            return self.conn.execute(sql, params)

        def close(self):
            self.conn.close()

    connect = httpbench._connect
    monkeypatch.setattr(httpbench, "_connect", lambda database: Recording(connect(database)))
    for database in (str(bench_site["bare_database"]), httpbench.prepare_site(bench_site["database"].parent / "pg",
                                                                               pg_empty)["bare_database"]):
        app = httpbench.bare_app(database, "bench-key")
        try:
            assert app.test_client().get(f"/pooled/articles/{bench_site['page']}").status_code == 200
        finally:
            httpbench.close_kept(app)
        columns = re.match(r"select (.*) from articles where", sent.pop()).group(1)
        assert columns.split(", ") == content.COLUMNS.split(", ")
    with psycopg.connect(pg_empty) as conn:  # the column it leaves out is there to leave out
        assert conn.execute("select count(*) from information_schema.columns"
                            " where table_name = 'articles' and column_name = 'search'").fetchone()[0] == 1


def test_each_worker_is_capped_near_its_share_of_the_connections():
    # 2 workers x 4 threads: 16 connections split 8 and 8, plus a thread's worth of headroom
    assert httpbench.worker_connections(16) == 8 + 4
    assert httpbench.worker_connections(15) == 8 + 4  # the odd connection still fits
    assert httpbench.worker_connections(64) * httpbench.WORKERS >= 64


def test_a_run_with_an_idle_worker_is_not_balanced():
    assert httpbench._balanced([2.9, 2.8])
    assert not httpbench._balanced([3.8, 0.1])
    assert not httpbench._balanced([3.0, 1.4])
    assert httpbench._balanced([3.0])  # a single worker is balanced by definition


def test_bare_json_and_unlock_answer_like_the_api(bench_site):
    client = httpbench.bare_app(str(bench_site["database"]), "bench-key").test_client()
    teaser = client.get(f"/bare/api/articles/{bench_site['page']}").get_json()
    unlocked = client.post(f"/bare/api/articles/{bench_site['unlocked']}/unlock").get_json()
    assert teaser["access"] == "teaser" and "body_html" not in teaser
    assert unlocked["access"] == "full" and unlocked["body_html"] and unlocked["spent"] is False


class _Quiet(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_each_round_runs_every_gate_beside_its_baseline_and_reverses_the_order_of_the_last():
    sides = dict.fromkeys(("pg_pooled", "bare", "gate", "postgresql", "pooled"))
    orders = [httpbench.round_order(sides, number) for number in range(httpbench.ROUNDS)]
    assert orders[0] == ["gate", "pooled", "bare", "postgresql", "pg_pooled"]
    for order in orders:
        for measured, baseline in (("gate", "pooled"), ("postgresql", "pg_pooled")):
            assert abs(order.index(measured) - order.index(baseline)) == 1
    first = [order.index("gate") < order.index("pooled") for order in orders]
    assert first.count(True) == first.count(False)  # each way round as often: a drift favours neither
    assert httpbench.round_order({"gate": 1, "pooled": 2}, 1) == ["pooled", "gate"]  # SQLite only


def test_the_median_interval_takes_the_order_statistics_the_binomial_allows():
    assert httpbench.median_interval([0.9, 0.7, 0.8, 0.75, 0.85, 0.95, 0.6, 0.82]) == (0.7, 0.9)  # 2nd each end
    assert httpbench.median_interval(list(range(16))) == (4, 11)  # 5th each end: P(Bin(16, 1/2) < 5) = 0.038
    assert httpbench.median_interval([3, 1, 2, 5, 4]) == (1, 5)  # the extremes hold the median 94% of the time
    assert httpbench.median_interval([1, 2, 3, 4]) is None  # even the extremes: only 87.5%
    assert httpbench.median_interval([0.8]) is None and httpbench.median_interval([]) is None


def test_the_median_interval_holds_the_median_as_often_as_it_says():
    """Rounds drawn from a skewed distribution (noise bursts on one side): the interval covers its median."""
    draw = random.Random(15)
    true_median = 0.8 + math.log(2) * 0.05  # of 0.8 + an exponential burst with mean 0.05
    covered = 0
    trials = 4000
    for _ in range(trials):
        low, high = httpbench.median_interval([0.8 + draw.expovariate(20) for _ in range(httpbench.ROUNDS)])
        covered += low <= true_median <= high
    assert covered / trials >= httpbench.CONFIDENCE - 0.02  # 93% for 8 rounds, give or take the draw


def test_the_throughput_table_shows_each_ratio_with_its_interval():
    document = _document()
    document["results"][0]["pooled_ratio_interval"] = [0.74, 0.86]
    sqlite, postgresql = [line for line in httpbench.format_table(document).splitlines()
                          if line.startswith("article page")][:2]
    assert "0.80 (0.74–0.86)" in sqlite and "0.80 ✓" in sqlite
    assert "(" not in postgresql.split("0.50")[1].split("0.80")[0]  # a run with no interval shows the ratio alone
    assert "90% of the time" in httpbench.format_table(document)


def test_builtin_generator_keeps_connections_alive_and_counts():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/x"
        result = httpbench.generate({"url": url, "method": "GET", "headers": {}, "seconds": 0.3,
                                     "connections": 2})
    finally:
        server.shutdown()
        server.server_close()
    assert result["requests"] > 0 and result["rps"] > 0
    assert result["non2xx"] == 0 and result["errors"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"]


class _Cookies(_Quiet):
    """Sets a new cookie on every answer, or (settling) only when the request has none."""

    settling = True

    def do_GET(self):
        body = b"<p>page</p>"
        self.send_response(200)
        if not (self.settling and self.headers.get("Cookie")):
            self.send_header("Set-Cookie", f"session={self.path}-{id(self)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize("settling", [True, False])
def test_sessions_are_replayed_only_once_the_site_keeps_their_cookie(settling):
    handler = type("Handler", (_Cookies,), {"settling": settling})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        browser = httpbench.Browser(f"http://127.0.0.1:{server.server_address[1]}")
        if settling:
            browser.settle("/page")
            assert browser.cookie.startswith("session=")
        else:
            with pytest.raises(RuntimeError, match="still changes"):
                browser.settle("/page")
    finally:
        server.shutdown()
        server.server_close()


def _document(**changes) -> dict:
    """A results document as run() writes it, with one scenario on both engines."""
    side = {"rps": 1000.0, "p50_ms": 10.0, "p99_ms": 40.0, "per_cpu_s": 800.0}
    phase = {"gate": side, "pooled": dict(side, rps=1250.0), "bare": dict(side, rps=900.0),
             "postgresql": dict(side, rps=500.0), "pg_pooled": dict(side, rps=1000.0),
             "pooled_ratio": 0.8, "cpu_pooled_ratio": 0.75, "bare_ratio": 1.11, "pg_pooled_ratio": 0.5,
             "cpu_pg_pooled_ratio": 0.6, "pg_sqlite_ratio": 0.5, "balanced": True}
    row = {"name": "article page, subscriber", "target": 0.8, **phase, "more_connections": {"64": phase}}
    memory = {"gate": {"workers": 2, "uss_mib": 25.0, "pss_mib": 40.0},
              "pooled": {"workers": 2, "uss_mib": 20.0, "pss_mib": 36.0},
              "postgresql": {"workers": 2, "uss_mib": 30.0, "pss_mib": 44.0},
              "pg_pooled": {"workers": 2, "uss_mib": 24.0, "pss_mib": 33.0}}
    return {"connections": [16, 64], "rounds": 5, "postgresql": "measured", "results": [row], "memory": memory,
            **changes}


def test_tables_give_each_engine_its_own_baseline_ratio_cpu_and_latency():
    text = httpbench.format_table(_document())
    assert "PostgreSQL" in text and "gate req/CPU-s" in text and "pooled p50 / p99 ms (64)" in text
    sqlite, postgresql = [line for line in text.splitlines() if line.startswith("article page")][:2]
    assert "0.80 ✓" in sqlite and "1,250" in sqlite and "1.11" in sqlite  # met, against the pooled page
    assert "0.50" in postgresql and "0.80 ✗" in postgresql  # below, against its own pooled page
    markdown = httpbench.format_table(_document(), markdown=True)
    assert "| scenario | engine | gate rps | pooled rps | gate / pooled | target |" in markdown
    assert "| --- |" in markdown


def test_a_run_reads_the_database_servers_cpu_beside_its_workers(monkeypatch):
    """With a database server's process, each run also reads that server's CPU, and the CPU a request
    counts both; without one, the run is as before."""
    server_cpu = iter([{10: 5.0, 11: 1.0}, {10: 5.5, 11: 1.25, 12: 0.25}])  # a backend new during the run
    monkeypatch.setattr(httpbench, "process_tree_cpu", lambda pid: next(server_cpu) if pid == 10 else {})
    worker_cpu = iter([[1.0, 1.0], [2.0, 2.0]])
    monkeypatch.setattr(httpbench, "worker_cpu", lambda server: next(worker_cpu))

    def load(url, method, headers, seconds, connections):
        return {"requests": 1000, "rps": 500.0}

    run = httpbench.timed(None, load, "http://x/", "GET", {}, 2, 16, db_pid=10)
    assert run["db_cpu_s"] == pytest.approx(1.0) and run["per_cpu_s"] == pytest.approx(500.0)
    assert run["per_cpu_db_s"] == pytest.approx(1000 / 3.0)  # the workers' 2 s and the server's 1 s
    worker_cpu = iter([[1.0, 1.0], [2.0, 2.0]])
    plain = httpbench.timed(None, load, "http://x/", "GET", {}, 2, 16)
    assert "db_cpu_s" not in plain and "per_cpu_db_s" not in plain


def test_the_database_table_shows_each_side_of_postgresql_with_and_without_its_server():
    document = _document()
    row = document["results"][0]
    row["postgresql"] = dict(row["postgresql"], per_cpu_s=800.0, db_us_per_req=160.0)
    row["pg_pooled"] = dict(row["pg_pooled"], per_cpu_s=1000.0, db_us_per_req=90.0)
    row["cpu_db_pg_pooled_ratio"] = 0.77
    text = httpbench.format_table(document)
    assert "PostgreSQL's server beside the workers" in text
    line = next(line for line in text.splitlines() if line.startswith("article page") and "160" in line)
    assert line.split()[-6:] == ["1,250", "160", "1,000", "90", "0.60", "0.77"]  # µs: 1e6 / requests per CPU-s
    assert "| engine | gate workers µs/req | gate server µs/req |" in httpbench.format_table(document, markdown=True)
    assert "PostgreSQL's server" not in httpbench.format_table(_document())  # not measured: no table


def test_only_a_server_on_loopback_is_looked_for_among_its_processes():
    for url in ("postgresql://u@127.0.0.1:5433/db", "postgresql://u@localhost/db", "postgresql://u@[::1]:5432/db",
                "postgresql://u@127.0.0.2/db"):
        assert engines.on_loopback(url), url
    for url in ("postgresql://u@db.example.com:5432/db", "postgresql://u@10.0.0.5/db", "postgresql:///db", ""):
        assert not engines.on_loopback(url), url


def test_the_database_servers_processes_are_the_server_and_its_children():
    assert engines.postgres_master(None) is None and engines.process_tree_cpu(None) == {}
    mine = engines.process_tree_cpu(os.getpid())
    assert os.getpid() in mine and mine[os.getpid()] > 0


def test_the_memory_table_puts_each_engines_workers_beside_their_baselines():
    text = httpbench.format_table(_document())
    assert "Memory of a worker" in text
    sqlite, postgresql = [line.split() for line in text.splitlines() if line.startswith(("SQLite ", "PostgreSQL "))]
    assert sqlite == ["SQLite", "25.0", "20.0", "0.80", "40.0", "36.0", "0.90"]
    assert postgresql == ["PostgreSQL", "30.0", "24.0", "0.80", "44.0", "33.0", "0.75"]
    older = _document()
    del older["memory"]  # a run saved before memory was measured prints without the table
    assert "Memory" not in httpbench.format_table(older)


def test_a_skipped_postgresql_says_why_and_shows_sqlite_only():
    document = _document(postgresql=engines.NO_POSTGRES)
    for key in ("postgresql", "pg_pooled", "pg_pooled_ratio"):
        del document["results"][0][key]
        del document["results"][0]["more_connections"]["64"][key]
    for side in ("postgresql", "pg_pooled"):  # no PostgreSQL servers, so no memory of theirs
        del document["memory"][side]
    text = httpbench.format_table(document)
    assert engines.NO_POSTGRES in text and "SQLite" in text and "PostgreSQL  " not in text


def test_saved_runs_print_again_in_markdown(tmp_path, capsys):
    (tmp_path / "http.json").write_text(json.dumps(_document()))
    httpbench.main(["--show", str(tmp_path / "http.json"), "--markdown"])
    assert "| article page, subscriber | PostgreSQL |" in capsys.readouterr().out


def test_show_refuses_what_is_not_a_saved_run(tmp_path, capsys):
    (tmp_path / "other.json").write_text(json.dumps({"name": "not a run"}))
    for bad in (tmp_path / "other.json", tmp_path / "absent.json"):
        with pytest.raises(SystemExit):
            httpbench.main(["--show", str(bad)])
        assert f"{bad}: not a saved run" in capsys.readouterr().err


def _runs(ratios: list[float], pg_ratio: float = 0.5) -> list[dict]:
    """Saved runs of the one-scenario document, its SQLite ratio (and CPU ratio) ``ratios``, one a run."""
    runs = []
    for ratio in ratios:
        document = _document()
        document["results"][0].update(pooled_ratio=ratio, cpu_pooled_ratio=ratio + 0.01, pg_pooled_ratio=pg_ratio)
        runs.append(document)
    return runs


def test_across_runs_gives_each_page_the_median_of_its_runs_and_a_verdict_only_the_interval_settles():
    met, missed, unsettled = (httpbench.across_runs(_runs(ratios)) for ratios in (
        [0.82, 0.81, 0.85, 0.80, 0.83], [0.78, 0.70, 0.79, 0.75, 0.77], [0.79, 0.81, 0.84, 0.78, 0.80]))
    sqlite = met[0]
    assert (sqlite["engine"], sqlite["ratios"], sqlite["median"]) == ("SQLite", [0.82, 0.81, 0.85, 0.80, 0.83], 0.82)
    assert sqlite["interval"] == (0.80, 0.85) and sqlite["met"] == 5 and sqlite["verdict"] == "met"
    assert sqlite["cpu_median"] == pytest.approx(0.83)
    assert met[1]["engine"] == "PostgreSQL" and met[1]["verdict"] == "missed" and met[1]["met"] == 0
    assert missed[0]["verdict"] == "missed" and missed[0]["interval"] == (0.70, 0.79)
    assert unsettled[0]["verdict"] == "unsettled" and unsettled[0]["met"] == 3  # met in most runs, not settled
    few = httpbench.across_runs(_runs([0.9, 0.9, 0.9, 0.9]))[0]  # four runs: even the extremes are not enough
    assert few["interval"] is None and few["verdict"] == "too few runs"
    older = _runs([0.82, 0.81])
    del older[0]["results"][0]["cpu_pooled_ratio"]  # a run saved before CPU was read
    assert httpbench.across_runs(older)[0]["cpu_median"] == pytest.approx(0.82)
    del older[1]["results"][0]["cpu_pooled_ratio"]
    assert httpbench.across_runs(older)[0]["cpu_median"] is None 
    assert httpbench.across_table(older, True).splitlines()[-2].endswith("| — |")  # SQLite's row: no CPU ratio


def test_across_runs_prints_each_run_and_refuses_what_is_not_a_full_saved_run(tmp_path, capsys):
    paths = []
    for n, document in enumerate(_runs([0.82, 0.81, 0.85, 0.80, 0.83])):
        paths.append(tmp_path / f"run{n}.json")
        paths[-1].write_text(json.dumps(document))
    httpbench.main(["--across", *map(str, paths), "--markdown"])
    out = capsys.readouterr().out
    assert "Across 5 runs" in out
    assert "| article page, subscriber | SQLite | 5 | 0.82 0.81 0.85 0.80 0.83 | 0.820 | 0.80–0.85 | 0.80 | 5 of 5 | met |" in out
    quick = tmp_path / "quick.json"
    quick.write_text(json.dumps(_document(quick=True)))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    for bad, said in ((quick, "a --quick run"), (broken, "not a saved run"), (tmp_path / "absent.json", "not a saved run")):
        with pytest.raises(SystemExit):
            httpbench.main(["--across", str(paths[0]), str(bad)])
        assert said in capsys.readouterr().err


@pytest.mark.slow
def test_quick_http_bench_writes_ratios(tmp_path, capsys):
    httpbench.main(["--quick", "--no-pg-local", "--out", str(tmp_path)])
    document = json.loads((tmp_path / "http.json").read_text())
    names = [row["name"] for row in document["results"]]
    assert len(names) == 6 and sum("article page" in name for name in names) == 4
    assert document["gunicorn"]["workers"] == 2 and document["generator"]
    assert document["connections"] == [16, 64]
    # PostgreSQL beside SQLite, each against its own pooled baseline; skipped only without a server
    if os.environ.get("GATE_TEST_DATABASE_URL") or os.environ.get("GATE_DATABASE_URL"):
        assert document["postgresql"] == "measured", document["postgresql"]
    else:
        assert document["postgresql"] == engines.NO_POSTGRES
    sides = httpbench.SIDES + (httpbench.PG_SIDES if document["postgresql"] == "measured" else ())
    url = os.environ.get("GATE_TEST_DATABASE_URL") or os.environ.get("GATE_DATABASE_URL") or ""
    seen = os.geteuid() == 0 and engines.on_loopback(url)
    for row in document["results"]:
        for phase in (row, row["more_connections"]["64"]):
            for side in sides:
                assert phase[side]["requests"] > 0 and phase[side]["rps"] > 0, row
                assert phase[side]["non2xx"] == 0 and phase[side]["errors"] == 0, row
                # every run records each worker's CPU time, and requests per CPU-second follow from it
                assert all(len(run["worker_cpu_s"]) == 2 for run in phase[side]["runs"]), row
                assert phase[side]["per_cpu_s"] > 0 and phase[side]["p50_ms"] <= phase[side]["p99_ms"], row
            keys = ["pooled_ratio", "bare_ratio"]
            if document["postgresql"] == "measured":
                keys += ["pg_pooled_ratio", "pg_sqlite_ratio"]
            assert all(phase[key] > 0 and phase[f"cpu_{key}"] > 0 for key in keys), row
            if document["postgresql"] == "measured" and seen:  # a server on this machine, read as root
                assert all(phase[side]["db_us_per_req"] > 0 for side in httpbench.PG_SIDES), row
                assert phase["cpu_db_pg_pooled_ratio"] > 0, row
            assert len(phase["round_pooled_ratios"]) == phase["rounds"]
            assert phase["pooled_ratio_interval"] is None  # one round: no interval to give
            assert isinstance(phase["balanced"], bool)
    assert [row["target"] for row in document["results"]] == [0.8, 0.8, 0.8, 0.8, 0.7, None]
    gate_and_pooled = [side for _, *pair, _ in httpbench.ENGINES for side in pair if side in sides]
    for side in gate_and_pooled:  # their workers, measured after the first count's rounds
        memory = document["memory"][side]
        assert memory["workers"] == 2 and 0 < memory["uss_mib"] <= memory["pss_mib"], (side, memory)
    out = capsys.readouterr().out
    assert "gate / pooled" in out and "pooled / gate (USS)" in out

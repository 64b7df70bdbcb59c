"""The HTTP benchmark: its bare baseline, its built-in generator and a --quick run (ratios, no times)."""

from __future__ import annotations

import http.server
import json
import os
import re
import threading

import pytest

from benchmarks import engines, httpbench


@pytest.fixture
def bench_site(tmp_path):
    """A benchmark database: demo and synthetic articles, a reader and a subscriber."""
    return httpbench.prepare_site(tmp_path)


@pytest.mark.parametrize("tier, marker", [
    ("anonymous", 'data-offer="register"'),
    ("registered", 'data-offer="unlock"'),
    ("subscriber", 'data-access="full"'),
])
def test_bare_page_renders_the_same_template_per_tier(bench_site, tier, marker):
    app = httpbench.bare_app(str(bench_site["database"]), "bench-key")
    page = app.test_client().get(f"/bare/articles/{bench_site['page']}?as={tier}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert marker in text and '<meta name="csrf-token"' in text and "story__body" in text
    assert ('class="story__gated"' in text) is (tier == "subscriber")  # gated text only when full


def test_pooled_bare_page_is_the_same_page(bench_site):
    client = httpbench.bare_app(str(bench_site["database"]), "bench-key").test_client()
    clock = re.compile(r'<time datetime="[^"]+">[^<]+</time>')  # the masthead's clock ticks between the two
    for tier in ("anonymous", "registered", "subscriber"):
        fresh = client.get(f"/bare/articles/{bench_site['page']}?as={tier}")
        pooled = client.get(f"/pooled/articles/{bench_site['page']}?as={tier}")
        assert pooled.status_code == 200
        assert clock.sub("", pooled.get_data(as_text=True)) == clock.sub("", fresh.get_data(as_text=True))
    assert client.get(f"/pooled/api/articles/{bench_site['page']}").get_json() == \
        client.get(f"/bare/api/articles/{bench_site['page']}").get_json()
    assert client.get("/pooled/articles/no-such-article").status_code == 404


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


@pytest.mark.slow
def test_quick_http_bench_writes_ratios(tmp_path, capsys):
    httpbench.main(["--quick", "--no-pg-local", "--out", str(tmp_path)])
    document = json.loads((tmp_path / "http.json").read_text())
    names = [row["name"] for row in document["results"]]
    assert len(names) == 5 and any("unlock" in name for name in names)
    assert sum("article page" in name for name in names) == 3
    assert document["gunicorn"]["workers"] == 2 and document["generator"]
    for row in document["results"]:
        for side in ("gate", "bare", "pooled"):
            assert row[side]["requests"] > 0 and row[side]["rps"] > 0, row
            assert row[side]["non2xx"] == 0 and row[side]["errors"] == 0, row
            # every run records each worker's CPU time, and requests per CPU-second follow from it
            assert all(len(run["worker_cpu_s"]) == 2 for run in row[side]["runs"]), row
            assert sum(row[side]["runs"][0]["worker_cpu_s"]) > 0 and row[side]["per_cpu_s"] > 0, row
        assert row["ratio"] > 0 and len(row["round_ratios"]) == document["rounds"]
        assert row["pooled_ratio"] > 0 and len(row["round_pooled_ratios"]) == document["rounds"]
        assert isinstance(row["balanced"], bool)
    assert {row["target"] for row in document["results"]} == {0.8, 0.5, None}
    # the article pages on PostgreSQL, next to SQLite, against the same bare baselines
    if os.environ.get("GATE_TEST_DATABASE_URL") or os.environ.get("GATE_DATABASE_URL"):
        assert document["postgresql"] == "measured", document["postgresql"]
    else:
        assert document["postgresql"] == engines.NO_POSTGRES
    if document["postgresql"] == "measured":
        pages = [row for row in document["results"] if "article page" in row["name"]]
        assert pages and all(row["postgresql"]["non2xx"] == row["postgresql"]["errors"] == 0 for row in pages)
        assert all(row["pg_ratio"] > 0 and row["pg_pooled_ratio"] > 0 and row["pg_sqlite_ratio"] > 0
                   for row in pages)
        assert all("postgresql" not in row for row in document["results"] if row not in pages)
    assert "ratio" in capsys.readouterr().out

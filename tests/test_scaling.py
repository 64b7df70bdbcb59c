"""The scaling benchmark: its engines, its unlock generator and a --quick run (counts and ratios, no times)."""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections import namedtuple

import pytest

from benchmarks import engines, scaling


def test_a_database_url_names_another_database_on_the_same_server():
    url = "postgresql://postgres@127.0.0.1:5433/postgres?sslmode=disable"
    assert engines.with_database(url, "gate_bench_x") == \
        "postgresql://postgres@127.0.0.1:5433/gate_bench_x?sslmode=disable"


def test_without_a_database_url_postgresql_is_skipped_saying_why(tmp_path, monkeypatch):
    monkeypatch.delenv("GATE_TEST_DATABASE_URL", raising=False)
    monkeypatch.delenv("GATE_DATABASE_URL", raising=False)
    with engines.postgres_engine(tmp_path, start_local=False) as engine:
        assert engine.skipped == "skipped: no GATE_TEST_DATABASE_URL / GATE_DATABASE_URL"


def test_each_worker_is_capped_near_its_share_of_the_connections():
    assert scaling.worker_connections(32, 1) == 32 + scaling.THREADS
    assert scaling.worker_connections(32, 4) == 8 + scaling.THREADS
    assert scaling.worker_connections(30, 4) * 4 >= 30


def test_cpu_spent_counts_processes_new_since_the_first_snapshot_from_zero():
    assert engines.spent({1: 2.0, 2: 1.0}, {1: 2.5, 3: 0.25}) == pytest.approx(0.75)
    Times = namedtuple("Times", "user system idle iowait")
    assert scaling.host_busy(Times(1, 1, 8, 0), Times(2, 2, 14, 2)) == pytest.approx(0.2)


class _Meter(http.server.BaseHTTPRequestHandler):
    """Grants each cookie's first two unlocks and refuses the rest; anything else is a 404."""

    protocol_version = "HTTP/1.1"
    spends: dict[str, int] = {}
    lock = threading.Lock()

    def do_POST(self):
        if not self.path.endswith("/unlock") or not self.headers.get("X-CSRFToken"):
            status, body = 404, b"{}"
        else:
            with self.lock:
                used = self.spends.get(self.headers["Cookie"], 0)
                self.spends[self.headers["Cookie"]] = used + 1
            status, body = (200, b'{"spent": true}') if used < 2 else (403, b'{"spent": false}')
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_generator_sends_every_task_once_and_counts_grants_and_refusals():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Meter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tasks = [[f"s={reader}", "token", f"/api/articles/a{n}/unlock"] for n in range(3) for reader in range(5)]
        tasks.append(["s=0", "token", "/elsewhere"])
        result = scaling.generate_unlocks({"url": f"http://127.0.0.1:{server.server_address[1]}",
                                           "tasks": tasks, "connections": 4, "user_agent": "test"})
    finally:
        server.shutdown()
        server.server_close()
    assert (result["requests"], result["granted"], result["refused"]) == (16, 10, 5)
    assert result["other"] == 1 and result["errors"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] and result["client_cpu_s"] >= 0


def test_the_table_shows_skipped_engines_and_flags_wrong_grants():
    row = {"processes": 2, "rps": 50.0, "ratio": 1.5, "granted": 9, "expected_grants": 10, "grants_ok": False,
           "p50_ms": 1.0, "p99_ms": 2.0, "server_cpu_ms_per_request": 3.0, "database_cpu_ms_per_request": None,
           "client_cpu_ms_per_request": 0.5, "machine_busy": 0.4, "host_busy": 0.9}
    table = scaling.format_table({"engines": [
        {"engine": "sqlite", "rows": [row]},
        {"engine": "postgresql", "rows": [{"processes": 1, "skipped": engines.NO_POSTGRES}]}]})
    assert "9/10 !" in table and engines.NO_POSTGRES in table


def test_rounds_add_up_counts_and_take_median_rates():
    def run(rps, granted):
        return {"processes": 2, "readers": 5, "limit": 10, "expected_grants": 50, "granted": granted,
                "granted_in_db": granted, "refused": 5, "other": 0, "errors": 0, "requests": 55,
                "grants_ok": granted == 50, "rps": rps, "p50_ms": 1.0, "p99_ms": 2.0,
                "server_cpu_ms_per_request": 3.0, "database_cpu_ms_per_request": None,
                "client_cpu_ms_per_request": 0.5, "machine_busy": 0.4, "host_busy": 1.0}

    row = scaling.combine([run(100.0, 50), run(140.0, 50), run(90.0, 51)])
    assert row["rps"] == 100.0 and row["round_rps"] == [100.0, 140.0, 90.0]
    assert row["expected_grants"] == 150 and row["granted"] == 151 and not row["grants_ok"]
    assert row["database_cpu_ms_per_request"] is None and len(row["runs"]) == 3


@pytest.mark.slow
def test_quick_scaling_bench_grants_exactly_the_limits(tmp_path, capsys):
    scaling.main(["--quick", "--processes", "1,2", "--readers", "5", "--no-pg-local", "--out", str(tmp_path)])
    document = json.loads((tmp_path / "scaling.json").read_text())
    by_engine = {engine["engine"]: engine["rows"] for engine in document["engines"]}
    assert set(by_engine) == {"sqlite", "postgresql"}
    postgresql = os.environ.get("GATE_TEST_DATABASE_URL") or os.environ.get("GATE_DATABASE_URL")
    measured = ["sqlite"] + (["postgresql"] if postgresql else [])
    for name in measured:
        assert [row["processes"] for row in by_engine[name]] == [1, 2]
        for row in by_engine[name]:
            assert row["grants_ok"] and row["granted"] == row["granted_in_db"] == row["expected_grants"] \
                == 5 * row["limit"], row
            assert row["refused"] == 5 and row["requests"] == 5 * (row["limit"] + 1), row
            assert row["rps"] > 0 and row["ratio"] > 0 and row["server_cpu_ms_per_request"] > 0, row
        assert by_engine[name][0]["ratio"] == 1.0
    if "postgresql" in measured:
        assert all(row["database_cpu_ms_per_request"] is not None for row in by_engine["postgresql"])
    else:
        assert all(row["skipped"] == engines.NO_POSTGRES for row in by_engine["postgresql"])
    assert "unlock rps" in capsys.readouterr().out

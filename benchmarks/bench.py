"""Benchmarks: gate's hot paths as ratios against a bare baseline in the same run.

Run with `make bench` (or `python -m benchmarks.bench [--quick]` from the checkout). Every figure is
reported next to a baseline doing the least possible version of the same
work on the same machine in the same run, so the ratios mean something on
a shared, noisy machine where absolute times do not.
"""

from __future__ import annotations

import argparse
import gc
import json
import sqlite3
import statistics
import tempfile
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

from gate.conf.settings import Config
from gate.rules import paywall
from gate.rules.paywall import Spend, Viewer
from gate.services.content import synthetic_articles
from gate.storage import quota
from gate.storage.db import open_site_db

UTC = timezone.utc
NOW = datetime(2026, 11, 20, 15, tzinfo=UTC)


class _Article:
    slug, section, access_class = "bench-article", "Economy", "metered"


def _best(fn, repeat: int) -> float:
    """The best of ``repeat`` timings of fn(), in seconds (least disturbed by noise)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_decide(n: int) -> dict:
    """decide() for a registered reader with a half-spent meter vs a bare dict lookup."""
    rules = Config().preset("wpr")
    spends = tuple(Spend(f"s{i}", NOW - timedelta(days=i)) for i in range(2))
    viewer = Viewer("registered", "reader:1", spends)
    table = {"registered": "teaser"}

    def engine():
        for _ in range(n):
            paywall.decide(rules, viewer, _Article, NOW)

    def baseline():
        for _ in range(n):
            table.get(viewer.tier)

    return {"name": f"decide x{n}", "gate_s": _best(engine, 5), "baseline_s": _best(baseline, 5)}


def bench_spend(n: int) -> dict:
    """Atomic spends (BEGIN IMMEDIATE, check, insert) vs bare autocommit inserts."""
    with tempfile.TemporaryDirectory() as tmp:
        db = open_site_db(Path(tmp) / "spend.sqlite")
        store = quota.SqlQuotaStore(db)
        bare = sqlite3.connect(Path(tmp) / "bare.sqlite", isolation_level=None)
        bare.execute("pragma journal_mode=wal")
        bare.execute("pragma synchronous=normal")
        bare.execute("create table t (k text, s text, w text, at text)")
        rounds = {"i": 0}

        def engine():
            rounds["i"] += 1
            for i in range(n):
                store.spend(f"reader:{rounds['i']}-{i}", "a", "w", NOW, lambda spends: True)

        def baseline():
            for i in range(n):
                bare.execute("insert into t values (?, 'a', 'w', '2026')", [f"reader:{i}"])

        result = {"name": f"spend x{n}", "gate_s": _best(engine, 3), "baseline_s": _best(baseline, 3)}
        db.close()
        bare.close()
    return result


def bench_pages(n: int, rounds: int) -> list[dict]:
    """The article page per tier and the unlock API through the whole app vs the same template without gate.

    Both sides go through a Flask test client: gate's app with a session per
    tier (view events batched by the background writer, as under `gate
    serve`), its cookie replayed as a fixed header as wrk replays it over HTTP
    (the test client's cookie jar is no part of either side), and the HTTP
    benchmark's bare app (gate's templates and URL map, a fixed context per
    tier, one article read on a kept connection, no sessions). Both get the
    same request, cookie and CSRF header included, as over HTTP. Each round
    times ``n`` requests of each side, the two in alternating order round by round, in this process's
    CPU time (all its threads, the event writer's too), which other tenants of a
    shared machine disturb far less than wall-clock time; a ratio is baseline
    time / gate time (higher is better), the median of the rounds'. What both
    apps built before the rounds is frozen out of the cyclic collector's way
    while they run, as `gate serve` freezes its app before its workers fork.
    """
    import secrets

    from benchmarks import httpbench
    from gate import create_app
    from gate.storage import eventlog

    with tempfile.TemporaryDirectory() as tmp:
        site = httpbench.prepare_site(Path(tmp))
        key = secrets.token_hex(16)
        # as `gate serve` runs it: view events through the background writer, no rate limits (as over HTTP)
        app = create_app({"DATABASE": str(site["database"]), "SECRET_KEY": key, "RATELIMIT_ENABLED": False,
                          "EVENT_BUFFER": True})
        clients, tokens = httpbench.client_sessions(app, site)
        replay = app.test_client(use_cookies=False)
        bare_app = httpbench.bare_app(str(site["bare_database"]), key)
        bare = bare_app.test_client(use_cookies=False)  # no cookie jar on either side (see above)
        measured = [s for s in httpbench.scenarios(site["page"], site["unlocked"]) if s.target]
        calls = {}
        for scenario in measured:
            headers = {"X-CSRFToken": tokens[scenario.session]} if scenario.csrf else {}
            headers.update(replayed(app, clients[scenario.session], scenario, headers))
            calls[scenario.name] = (
                lambda s=scenario, h=headers: replay.open(s.gate_path, method=s.method, headers=h),
                lambda s=scenario, h=headers: bare.open(s.pooled_path, method=s.method, headers=h))
            for call in calls[scenario.name]:
                answer = call()
                if answer.status_code != 200 or scenario.expect not in answer.get_data(as_text=True):
                    raise RuntimeError(f"{scenario.name}: {answer.status_code} without {scenario.expect!r}")
                if "Set-Cookie" in answer.headers:
                    raise RuntimeError(f"{scenario.name}: a replayed session still gets a new cookie")
        times = {name: ([], []) for name in calls}
        gc.freeze()  # both apps' objects out of the collector's way, as `gate serve` freezes its app
        try:
            for number in range(rounds):
                for name, (gate, baseline) in calls.items():
                    order = ((0, gate), (1, baseline)) if number % 2 == 0 else ((1, baseline), (0, gate))
                    for side, call in order:
                        start = time.process_time()
                        for _ in range(n):
                            call()
                        times[name][side].append(time.process_time() - start)
        finally:
            gc.unfreeze()
        httpbench.close_kept(bare_app)
        eventlog.writer(str(site["database"])).flush()  # before its database goes with the folder
    return [{"name": f"{scenario.name} x{n}", "gate_s": statistics.median(times[scenario.name][0]),
             "baseline_s": statistics.median(times[scenario.name][1]), "target": scenario.target,
             "ratio": round(statistics.median(b / g for g, b in zip(*times[scenario.name])), 2)}
            for scenario in measured]


def replayed(app, client, scenario, headers: dict) -> dict:
    """The Cookie header of ``client``'s session once a visit of the scenario's page settled it (as httpbench does)."""
    client.open(scenario.gate_path, method=scenario.method, headers=headers)  # a first view may keep a visitor id
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    return {"Cookie": f"{cookie.key}={cookie.value}"} if cookie is not None else {}


def bench_seed(n: int) -> dict:
    """`gate db seed --synthetic n` (writing the articles and inserting them) vs a bare insert of ready rows."""
    from gate.services import seed

    rows = list(synthetic_articles(n, ["A", "B", "C"], NOW))
    with tempfile.TemporaryDirectory() as tmp:
        db = open_site_db(Path(tmp) / "seed.sqlite")
        start = time.perf_counter()
        seed.seed_synthetic(db, n, ["A", "B", "C"], NOW)
        gate_s = time.perf_counter() - start
        db.close()
        db = open_site_db(Path(tmp) / "seed-memory.sqlite")  # memory, measured apart: tracing is slow
        tracemalloc.start()
        seed.seed_synthetic(db, n, ["A", "B", "C"], NOW)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        bare = sqlite3.connect(Path(tmp) / "bare.sqlite")
        bare.execute("create table a (" + ", ".join(rows[0]) + ")")
        start = time.perf_counter()
        with bare:
            bare.executemany(f"insert into a values ({', '.join('?' * len(rows[0]))})",
                             [tuple(r.values()) for r in rows])
        baseline_s = time.perf_counter() - start
        bare.close()
        db.close()
    return {"name": f"seed --synthetic {n}", "gate_s": gate_s, "baseline_s": baseline_s,
            "peak_mib": round(peak / 2**20, 1)}


QUERIES = ("trade policy", "border", "inflation reserve", "treaty summit", "grid", "satellite cable",
           "drought", "coalition mandate", "\"export pipeline\"", "bond")


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile of ``values`` (0 < share < 1, to a thousandth), within their range.

    ``statistics.quantiles`` with the inclusive method: interpolated between the
    two values around it, as a latency percentile usually is.
    """
    cut = round(share * 1000)
    if not 1 <= cut <= 999:
        raise ValueError(f"a percentile's share is between 0.001 and 0.999, not {share!r}")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[cut - 1]


def bench_search(n: int, rounds: int) -> list[dict]:
    """Archive search on an n-article library (p50/p95) vs the bare FTS5 query it wraps."""
    from gate.services import search, seed

    with tempfile.TemporaryDirectory() as tmp:
        db = open_site_db(Path(tmp) / "search.sqlite")
        seed.seed_synthetic(db, n, ["A", "B", "C"], NOW)
        bare_sql = ("select rowid from articles_fts where articles_fts match ?"
                    " order by rank limit 10")
        timings = {"gate": [], "bare": []}
        for _ in range(rounds):
            for query in QUERIES:
                start = time.perf_counter()
                search.search(db, query, body=True, now=NOW)
                timings["gate"].append(time.perf_counter() - start)
                start = time.perf_counter()
                db.execute(bare_sql, [search.match_expression(query, True)]).fetchall()
                timings["bare"].append(time.perf_counter() - start)
        db.close()
    return [
        {"name": f"search {name} ({n} articles)", "gate_s": percentile(timings["gate"], share),
         "baseline_s": percentile(timings["bare"], share)}
        for name, share in (("p50", 0.5), ("p95", 0.95))
    ]


def arguments(doc: str, written: str, quick: str) -> argparse.ArgumentParser:
    """A benchmark's command line: its docstring's first line, --quick and --out (the folder for ``written``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--out", default="bench-results", help=f"folder for {written}")
    return parser


def main(argv=None) -> None:
    """Run every benchmark, print two tables and write bench-results/latest.json."""
    args = arguments(__doc__, "latest.json", "small counts (a smoke run)").parse_args(argv)
    scale = 1 if args.quick else 10
    results = [bench_decide(2_000 * scale), bench_spend(50 * scale), bench_seed(1_000 * scale),
               *bench_search(2_000 * scale, 3 if args.quick else 5)]
    # Many short rounds: each pair of batches runs close together in time, so a drift of the machine's speed
    # moves both sides alike (three runs each: the unlock API's ratio 0.71–0.72, against 0.71–0.79 from
    # 9 rounds of 100).
    pages = bench_pages(10 if args.quick else 30, 3 if args.quick else 30)
    print(f"{'benchmark':<34} {'gate':>10} {'baseline':>10} {'ratio':>8}")
    for row in results:
        row["ratio"] = round(row["gate_s"] / max(row["baseline_s"], 1e-9), 1)
        extra = f"  peak {row['peak_mib']} MiB" if "peak_mib" in row else ""
        print(f"{row['name']:<34} {row['gate_s']:>9.4f}s {row['baseline_s']:>9.4f}s "
              f"{row['ratio']:>7}x{extra}")
    print(f"median ratio {statistics.median(r['ratio'] for r in results):.1f}x (gate / baseline, lower is better)\n")
    print("through the whole app (test client) vs the same template and context without gate "
          "(baseline / gate, higher is better)")
    print(f"{'page':<48} {'gate':>9} {'baseline':>9} {'ratio':>6} {'target':>7}")
    for row in pages:
        met = "ok" if row["ratio"] >= row["target"] else "below"
        print(f"{row['name']:<48} {row['gate_s']:>8.4f}s {row['baseline_s']:>8.4f}s {row['ratio']:>6.2f} "
              f"{row['target']:>5.2f} {met}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(
        {"when": datetime.now(UTC).isoformat(), "results": results, "pages": pages}, indent=2))
    print(f"written to {out / 'latest.json'}")


if __name__ == "__main__":
    main()

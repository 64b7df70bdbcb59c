"""HTTP benchmarks: gate under gunicorn, next to bare Flask pages, on SQLite and on PostgreSQL.

Run with `python -m benchmarks.httpbench [--quick] [--markdown]` from the checkout. Every site is
served on loopback by the same gunicorn configuration (gate.cli.serving's, 2 workers x 4 threads,
each worker capped near its share of the connections) and loaded by the same generator with the
same user agent and concurrency.

Per engine, gate is measured next to a bare Flask app with gate's templates and URL map that
reads the same article row from the same engine and renders it with a fixed context per tier:
no sessions, meters, decisions or events. On SQLite the bare app reads a copy of gate's file and
serves its page two ways: under /pooled/ it keeps one connection per thread, as gate does (the
baseline of the targets), and under /bare/ it opens one per request, as Flask's tutorial does (an
extra column). On PostgreSQL it reads gate's own database, one psycopg connection kept per thread.

The scenarios: the article page in four tiers (anonymous teaser, registered with quota left,
registered reading an article they unlocked, subscriber; target 0.80 of the pooled page), the
unlock API on an article already unlocked (target 0.70) and the JSON article (no target). At the
first connection count (16 by default) every side runs in 8 rounds, each gate side beside its
baseline and each round in the reverse order of the last, and each ratio is the median of the
rounds' ratios, shown with the interval the rounds give that median (:func:`median_interval`, at
least 90%, whatever the shape of the noise); at each further count (64) one round gives throughput
and p50/p99 latency under more load. Each run also records the CPU time of every worker, which
gives requests per worker CPU-second, and of a PostgreSQL server on this machine (when root can
see its processes), which gives the server's share of a request. After the first count's rounds,
each engine's gate and pooled server report their workers' memory (:func:`worker_memory`). A
--quick run is one short round: a smoke test, not a measurement.

The load comes from another process: wrk (Debian package `wrk`) when it is installed, otherwise a
small keep-alive http.client generator run in a subprocess (``--generator builtin``). Rate limits
are off on the benchmarked sites: the unlock scenario repeats one reader's unlock thousands of
times a second, far past any limit. Everything listens on 127.0.0.1 only. ``--profile`` instead
runs gate's side of each scenario in-process under cProfile, to see where a request's time goes.
"""

from __future__ import annotations

import contextlib
import http.client
import http.cookiejar
import json
import math
import os
import re
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import psutil
from flask.sessions import SessionInterface

from benchmarks.bench import arguments, percentile
from benchmarks.engines import CHECKOUT, postgres_engine, postgres_master, process_tree_cpu, spent
from gate.loadtest.server import ServerProcess, free_port, site_env
from gate.rules import paywall, periods
from gate.storage.db import MMAP_BYTES
from gate.storage.engine import is_url

UTC = timezone.utc
#: Every side of a scenario, in the order of a round: each gate beside its pooled baseline.
SIDES = ("gate", "pooled", "bare")
PG_SIDES = ("postgresql", "pg_pooled")  # gate on PostgreSQL, and the pooled page on the same database
GATE_SIDES = ("gate", "postgresql")
#: The ratios of a measurement: (measured side, baseline side, key).
RATIOS = (("gate", "pooled", "pooled_ratio"), ("gate", "bare", "bare_ratio"),
          ("postgresql", "pg_pooled", "pg_pooled_ratio"), ("postgresql", "gate", "pg_sqlite_ratio"))
CONNECTIONS = (16, 64)
#: Rounds at the first connection count: an even number, so each pair runs as often in either order.
ROUNDS = 8
WORKERS, THREADS = 2, 4
_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
READER = ("bench-reader@bench.example", "bench-reader-pass")
SUBSCRIBER = ("bench-subscriber@bench.example", "bench-subscriber-pass")
#: Every request of the benchmark, set-up and load alike, comes from one browser: a logged-in
#: session is bound to its user agent, and a request from another agent rewrites the cookie.
USER_AGENT = "gate-httpbench/1"
BARE_CSRF = "bare-page-constant-csrf-token-of-a-similar-length-to-a-signed-one.0123456789abcdef"

WRK_SCRIPT = r"""
-- Method, user agent, cookie and CSRF header come from the environment; done() prints one JSON line.
wrk.method = os.getenv("BENCH_METHOD") or "GET"
if wrk.method == "POST" then wrk.body = "" end
local cookie, csrf = os.getenv("BENCH_COOKIE"), os.getenv("BENCH_CSRF")
wrk.headers["User-Agent"] = os.getenv("BENCH_UA")
if cookie and cookie ~= "" then wrk.headers["Cookie"] = cookie end
if csrf and csrf ~= "" then wrk.headers["X-CSRFToken"] = csrf end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "bytes": %d, "non2xx": %d, "errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


@dataclass(frozen=True)
class Scenario:
    """One measured request, on gate and on the bare app (``bare_path``; /pooled/ for the pooled page)."""

    name: str
    method: str
    gate_path: str
    bare_path: str
    session: str  # which session's cookie: anonymous, registered, subscriber
    expect: str  # a marker every side's answer must contain (checked before loading)
    target: float | None  # of the pooled baseline, on each engine
    csrf: bool = False

    @property
    def pooled_path(self) -> str:
        """The bare app's path that keeps its connection per thread, as gate does."""
        return self.bare_path.replace("/bare/", "/pooled/", 1)


# --- the bare baseline ----------------------------------------------------------


def _bare_views(cfg, now: datetime) -> dict[str, SimpleNamespace]:
    """Fixed template context per tier: what gate decides, written down once.

    The meters are the ones gate shows these readers: nothing for a visitor, one
    article of the registered tier's quota spent (the one they unlocked), none for a subscriber.
    """
    site_info = cfg.publication
    rules = cfg.preset(site_info.default_preset)
    spent = (paywall.Spend("bench-unlocked", now),)
    nothing, quota, unlimited = (
        paywall.meter_for(rules, paywall.Viewer(tier, f"bench:{tier}", spends), now)
        for tier, spends in (("anonymous", ()), ("registered", spent), ("subscriber", ())))
    anonymous = SimpleNamespace(is_authenticated=False, is_admin=False, email=None)

    def user(email):
        return SimpleNamespace(is_authenticated=True, is_admin=False, email=email)

    def decision(access, reason, offer, tier, meter):
        return SimpleNamespace(access=access, reason=reason, offer=offer, tier=tier, meter=meter,
                               access_class="metered")

    return {
        "anonymous": SimpleNamespace(full=False, user=anonymous, tier="anonymous", meter=nothing,
                                     decision=decision("teaser", "registration_required", "register",
                                                       "anonymous", nothing)),
        "registered": SimpleNamespace(full=False, user=user(READER[0]), tier="registered", meter=quota,
                                      decision=decision("teaser", "meter_available", "unlock",
                                                        "registered", quota)),
        "unlocked": SimpleNamespace(full=True, user=user(READER[0]), tier="registered", meter=quota,
                                    decision=decision("full", "already_unlocked", None, "registered", quota)),
        "subscriber": SimpleNamespace(full=True, user=user(SUBSCRIBER[0]), tier="subscriber",
                                      meter=unlimited, decision=decision("full", "subscriber", None,
                                                                         "subscriber", unlimited)),
        "rules": rules,
    }


#: The article row as gate reads it (``content.COLUMNS``): on PostgreSQL ``select *`` would also send the
#: ``search`` tsvector, which the server decompresses and prints (about 360 K instructions a read) and gate never reads.
ARTICLE_SQL = "select {columns} from articles where slug = {mark}"


def _connect(database: str):
    """A connection giving rows by column name: psycopg for a PostgreSQL URL, else sqlite3."""
    if is_url(database):
        import psycopg
        from psycopg.rows import dict_row

        return psycopg.connect(database, autocommit=True, row_factory=dict_row)
    conn = sqlite3.connect(database, check_same_thread=False)
    conn.execute(f"pragma mmap_size = {MMAP_BYTES}")  # gate's connections read through a map too
    conn.row_factory = sqlite3.Row
    return conn


class NoSession(SessionInterface):
    """The bare app's sessions: none. The request's cookie is gate's session, and Flask's own sessions
    would verify it on every request (key derivation, HMAC, base64, JSON): gate's work, not the page's."""

    def open_session(self, app, request):
        return self.make_null_session(app)

    def save_session(self, app, session, response) -> None:
        return None


def bare_app(database: str, secret_key: str):
    """A bare Flask app: gate's templates and URL map, one article read per request, no gate logic.

    ``database`` is a SQLite file or a PostgreSQL URL. It borrows gate's URL
    rules (with stub views) only so that the template's ``url_for`` calls
    build the same links at the same cost, and gate's Markdown renderer,
    cached as gate caches it, so the body is the same HTML.
    """
    from flask import Flask, abort, jsonify, render_template, request, url_for

    from gate import create_app
    from gate.conf.resources import resource_dir
    from gate.conf.settings import Config
    from gate.services import content
    from gate.web import passes

    # Limits off: Flask-Limiter keeps one switch per process, and a benchmarked gate in this process has them off.
    borrowed = create_app({"DATABASE": database, "SECRET_KEY": secret_key, "RATELIMIT_ENABLED": False})
    app = Flask("bare", template_folder=str(resource_dir("templates")),
                static_folder=borrowed.static_folder)
    app.config.update(SECRET_KEY=secret_key, DEMO=False, JSON_SORT_KEYS=False)
    app.session_interface = NoSession()  # it gets gate's cookie, as over HTTP, and leaves it alone

    cfg = Config()
    views = _bare_views(cfg, datetime.now(UTC))
    rules, site_info = views.pop("rules"), cfg.publication
    signup_lists = cfg.signup_lists
    gate_pass = passes.gate_offer(cfg.passes)
    sql = ARTICLE_SQL.format(columns=content.COLUMNS, mark="%s" if is_url(database) else "?")
    html: dict[str, tuple[str, str, str]] = {}

    def rendered(body_md: str) -> tuple[str, str, str]:
        """Teaser, gated part and whole body, rendered once per article (gate caches too)."""
        if body_md not in html:
            teaser, rest = content.split_parts(body_md, rules.teaser_paragraphs)
            html[body_md] = (content.render(teaser), content.render(rest), content.render(body_md))
        return html[body_md]

    local, kept = threading.local(), app.extensions.setdefault("bench.kept", [])

    def row_for(slug: str):
        """The article row: under /pooled/ on this thread's kept connection, under /bare/ on a new one."""
        if request.path.startswith("/pooled/"):
            if not hasattr(local, "conn"):
                local.conn = _connect(database)
                kept.append(local.conn)
            row = local.conn.execute(sql, [slug]).fetchone()
        else:
            with contextlib.closing(_connect(database)) as conn:
                row = conn.execute(sql, [slug]).fetchone()
        if row is None:
            abort(404)
        return row

    def article_of(row) -> SimpleNamespace:
        fields = {key: row[key] for key in row.keys()}
        fields["published_at"] = datetime.fromisoformat(row["published_at"])
        return SimpleNamespace(**fields)

    def view() -> SimpleNamespace:
        return views[request.args.get("as", "anonymous")]

    @app.context_processor
    def _globals():
        chosen = view()
        return {"site_info": site_info, "rules": rules, "viewer": SimpleNamespace(tier=chosen.tier),
                "meter": chosen.meter, "site_now": datetime.now(UTC).astimezone(rules.tz),
                "clock_simulated": False, "sections": site_info.sections, "personas": [],
                "current_persona": None, "signup_lists": signup_lists,
                "csrf_token": lambda: BARE_CSRF, "current_user": chosen.user,
                "billing_alert": None, "consent_lesson": lambda: False,
                "consent_ticked": lambda item: item.consent_default == "ticked", "gate_pass": lambda: gate_pass}

    app.jinja_env.filters["local"] = lambda moment: moment.astimezone(rules.tz)
    app.jinja_env.filters["period_phrase"] = lambda period: periods.describe(period) if period else ""

    def page(slug):
        """The article page, under gate's endpoint name (the masthead's login link asks for it)."""
        row, chosen = row_for(slug), view()
        article = article_of(row)
        teaser, gated, _ = rendered(row["body_md"])
        ld = {"@context": "https://schema.org", "@type": "NewsArticle", "headline": article.title,
              "description": article.dek, "datePublished": article.published_at.isoformat(),
              "author": {"@type": "Person", "name": article.author}, "articleSection": article.section,
              "publisher": {"@type": "Organization", "name": site_info.name},
              "url": url_for("reading.article", slug=slug, _external=True),
              "isAccessibleForFree": False,
              "hasPart": {"@type": "WebPageElement", "isAccessibleForFree": False,
                          "cssSelector": ".story__gated"}}
        return render_template("reading/article.html", article=article, decision=chosen.decision,
                               teaser=teaser, gated=gated if chosen.full else None, json_ld=ld,
                               meter=chosen.meter, explain=None, porous=False)

    def stub(**_):
        abort(404)

    app.url_map.converters.update(borrowed.url_map.converters)  # the site's routes use <id:...>
    for rule in borrowed.url_map.iter_rules():
        if rule.endpoint != "static":
            app.add_url_rule(rule.rule, endpoint=rule.endpoint, methods=rule.methods,
                             view_func=page if rule.endpoint == "reading.article" else stub)
    for prefix in ("/bare", "/pooled"):  # after gate's own rule, which url_for keeps building
        app.add_url_rule(f"{prefix}/articles/<slug>", endpoint="reading.article", view_func=page)

    def payload(slug: str, full: bool) -> dict:
        row, chosen = row_for(slug), view()
        teaser, _, body = rendered(row["body_md"])
        data = {key: row[key] for key in ("slug", "title", "dek", "author", "section", "access_class")}
        data["published_at"] = article_of(row).published_at.isoformat()
        data.update(access="full" if full else chosen.decision.access,
                    reason="already_unlocked" if full else chosen.decision.reason,
                    offer=None if full else chosen.decision.offer, meter=chosen.meter.as_dict(),
                    tier=chosen.tier, access_class="metered", teaser_html=teaser, grant=None)
        if full:
            data["body_html"] = body
        return data

    @app.get("/bare/api/articles/<slug>")
    @app.get("/pooled/api/articles/<slug>", endpoint="pooled_api_article")
    def api_article(slug):
        return jsonify(payload(slug, full=False))

    @app.post("/bare/api/articles/<slug>/unlock")
    @app.post("/pooled/api/articles/<slug>/unlock", endpoint="pooled_api_unlock")
    def api_unlock(slug):
        return jsonify({**payload(slug, full=True), "spent": False})

    return app


def close_kept(app) -> None:
    """Close the connections the bare app's threads kept (a server closes them by exiting)."""
    while app.extensions["bench.kept"]:
        app.extensions["bench.kept"].pop().close()


def serve_bare() -> None:
    """Entry point of the bare server process: DATABASE (file or URL) BIND SECRET WORKER_CONNECTIONS."""
    from gate.cli.serving import _gunicorn

    database, bind, secret, per_worker = sys.argv[1:5]
    _gunicorn(bare_app(database, secret), bind, WORKERS, THREADS, int(per_worker))


# --- the servers ------------------------------------------------------------------


def worker_cpu(server: ServerProcess) -> list[float]:
    """CPU seconds (user + system) each gunicorn worker of ``server`` has used so far."""
    times = []
    for worker in psutil.Process(server.process.pid).children():
        try:
            used = worker.cpu_times()
        except psutil.NoSuchProcess:  # a worker restarting: its time is gone with it
            continue
        times.append(used.user + used.system)
    return times


def worker_memory(server: ServerProcess) -> dict:
    """The memory of ``server``'s gunicorn workers now, in MiB, the mean of its workers.

    ``uss``: pages the worker alone holds (what another worker adds); ``pss``:
    those plus its share of the pages it shares with the master and the other
    workers (what the workers hold between them, divided fairly).
    """
    held = []
    for worker in psutil.Process(server.process.pid).children():
        try:
            held.append(worker.memory_full_info())
        except psutil.NoSuchProcess:  # a worker restarting: nothing to read
            continue
    if not held:
        return {"workers": 0, "uss_mib": None, "pss_mib": None}
    return {"workers": len(held), **{f"{field}_mib": round(statistics.fmean(getattr(info, field) for info in held)
                                                          / 2**20, 1) for field in ("uss", "pss")}}


def prepare_site(directory: Path, database_url: str | None = None) -> dict:
    """A seeded database with a reader and a subscriber, and the database the bare app reads.

    On SQLite the bare app reads a copy of the file. With ``database_url`` the site is on that
    PostgreSQL database, with the same articles and accounts, and the bare app reads it too.
    """
    from gate.conf.settings import Config
    from gate.services import accounts, seed, subscriptions
    from gate.storage.clock import Clock
    from gate.storage.db import backup, open_site_db

    database = database_url or directory / "gate.sqlite"
    cfg = Config()
    db = open_site_db(database)
    try:
        now = Clock(db).now()
        seed.seed_articles(db)
        seed.seed_synthetic(db, 200, cfg.publication.sections, now)
        accounts.create(db, READER[0], READER[1], now)
        reader = accounts.create(db, SUBSCRIBER[0], SUBSCRIBER[1], now)
        subscriptions.grant(db, cfg, reader.id, cfg.plans[0].id, now, by="bench")
        if database_url is None:  # the bare app's own copy: a shared file would checkpoint gate's WAL
            backup(db, directory / "bare.sqlite")
        slugs = [row[0] for row in db.execute(
            "select slug from articles where access_class = 'metered' and slug not like 'synthetic-%'"
            " order by published_at desc limit 2")]
    finally:
        db.close()
    return {"database": database, "bare_database": database_url or directory / "bare.sqlite",
            "page": slugs[0], "unlocked": slugs[1]}


class Browser:
    """A cookie-keeping client for setting up sessions (login, CSRF token, first unlock)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.opener.addheaders = [("User-Agent", USER_AGENT)]
        self.token = ""

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=10) as answer:
            text = answer.read().decode()
        found = _CSRF.search(text)
        self.token = found.group(1) if found else self.token
        return text

    def post(self, path: str, data: dict | None = None, headers: dict | None = None) -> int:
        body = urllib.parse.urlencode(data or {}).encode()
        request = urllib.request.Request(self.base + path, data=body, headers=headers or {}, method="POST")
        try:
            with self.opener.open(request, timeout=10) as answer:
                answer.read()
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code

    def login(self, email: str, password: str) -> None:
        self.get("/login")
        status = self.post("/login", {"csrf_token": self.token, "email": email, "password": password})
        if status != 200:  # the redirect is followed to the front page
            raise RuntimeError(f"benchmark login for {email} answered {status}")

    def settle(self, path: str, tries: int = 3) -> None:
        """Load ``path`` until the answer sets no cookie: the load then replays a settled session.

        A browser stores each new cookie; the load generators replay one
        cookie for thousands of requests. Replaying one the site would still
        rewrite (a first visit's, say) would make every request re-sign and
        resend the session, which no real reader causes.
        """
        for _ in range(tries):
            with self.opener.open(self.base + path, timeout=10) as answer:
                text = answer.read().decode()
                changed = answer.headers.get_all("Set-Cookie")
            found = _CSRF.search(text)
            self.token = found.group(1) if found else self.token
            if not changed:
                return
        raise RuntimeError(f"the session cookie still changes after {tries} visits to {path}")

    @property
    def cookie(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)


def sessions(url: str, page: str, unlocked: str) -> dict[str, dict]:
    """Cookie and CSRF token of an anonymous visitor, a registered reader and a subscriber."""
    found = {}
    anonymous = Browser(url)
    anonymous.settle(f"/articles/{page}")
    found["anonymous"] = {"cookie": anonymous.cookie, "csrf": anonymous.token}
    reader = Browser(url)
    reader.login(*READER)
    reader.get(f"/articles/{unlocked}")
    if reader.post(f"/api/articles/{unlocked}/unlock", headers={"X-CSRFToken": reader.token}) != 200:
        raise RuntimeError("the benchmark reader could not unlock an article")
    reader.settle(f"/articles/{unlocked}")
    found["registered"] = {"cookie": reader.cookie, "csrf": reader.token}
    subscriber = Browser(url)
    subscriber.login(*SUBSCRIBER)
    subscriber.settle(f"/articles/{page}")
    found["subscriber"] = {"cookie": subscriber.cookie, "csrf": subscriber.token}
    return found


# --- load generators -------------------------------------------------------------


def wrk_version() -> str | None:
    """wrk's version line, if wrk is installed."""
    path = shutil.which("wrk")
    if not path:
        return None
    done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    first = (done.stdout + done.stderr).strip().splitlines()[:1]
    return first[0].split(" Copyright")[0].strip() if first else "wrk"


def run_wrk(url: str, method: str, headers: dict, seconds: float, connections: int, script: Path) -> dict:
    """Load ``url`` with wrk for ``seconds``; returns requests, rps and latency percentiles."""
    env = dict(os.environ, BENCH_METHOD=method, BENCH_COOKIE=headers.get("Cookie", ""),
               BENCH_CSRF=headers.get("X-CSRFToken", ""), BENCH_UA=headers.get("User-Agent", USER_AGENT))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
               "-s", str(script), url]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = next((l for l in done.stdout.splitlines() if l.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result:\n{done.stdout}\n{done.stderr}")
    data = json.loads(line[6:])
    elapsed = data["duration_us"] / 1e6
    return {"requests": data["requests"], "seconds": round(elapsed, 3),
            "rps": data["requests"] / elapsed, "p50_ms": data["p50_us"] / 1000,
            "p99_ms": data["p99_us"] / 1000, "non2xx": data["non2xx"], "errors": data["errors"]}


def in_threads(target, count: int) -> float:
    """Run ``target`` in ``count`` threads at once; the seconds until the last one ended."""
    began = time.perf_counter()
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def generate(spec: dict) -> dict:
    """The built-in generator: keep-alive http.client loops in threads, for spec['seconds']."""
    parts = urllib.parse.urlsplit(spec["url"])
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    body = b"" if spec["method"] == "POST" else None
    headers = dict(spec["headers"], **({"Content-Length": "0"} if body is not None else {}))
    deadline = time.perf_counter() + spec["seconds"]
    latencies: list[list[float]] = []
    counts = {"non2xx": 0, "errors": 0}
    lock = threading.Lock()

    def loop() -> None:
        mine, conn = [], None
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                conn = conn or http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
                conn.request(spec["method"], path, body=body, headers=headers)
                answer = conn.getresponse()
                answer.read()
                if not 200 <= answer.status < 300:
                    with lock:
                        counts["non2xx"] += 1
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                with lock:
                    counts["errors"] += 1
                continue
            mine.append(time.perf_counter() - start)
        if conn is not None:
            conn.close()
        with lock:
            latencies.append(mine)

    elapsed = in_threads(loop, spec["connections"])
    ordered = sorted(x for chunk in latencies for x in chunk)
    return {"requests": len(ordered), "seconds": round(elapsed, 3), "rps": len(ordered) / elapsed,
            "p50_ms": percentile(ordered, 0.5) * 1000, "p99_ms": percentile(ordered, 0.99) * 1000,
            **counts}


def _entry_point(function: str, module: str = "benchmarks.httpbench") -> list[str]:
    """A command running an entry point of a benchmark module in a new interpreter, from any directory.

    The benchmarks live in the checkout, not in the installed package, so the
    child puts the checkout on its path before importing them.
    """
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(CHECKOUT)!r}); "
            f"from {module} import {function}; {function}()"]


def generator_main() -> None:
    """Entry point of the built-in generator's process: a JSON spec in, a JSON result out."""
    print(json.dumps(generate(json.loads(sys.argv[1]))))


def run_builtin(url: str, method: str, headers: dict, seconds: float, connections: int) -> dict:
    """Run the built-in generator in its own process (never in the process being measured)."""
    spec = {"url": url, "method": method, "headers": headers, "seconds": seconds, "connections": connections}
    done = subprocess.run([*_entry_point("generator_main"), json.dumps(spec)],
                          capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode:
        raise RuntimeError(f"the load generator failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])



# --- the benchmark ------------------------------------------------------------------


def scenarios(page: str, unlocked: str) -> list[Scenario]:
    """The measured requests: the article page per tier, the unlock API, the JSON article."""
    return [
        Scenario("article page, anonymous", "GET", f"/articles/{page}",
                 f"/bare/articles/{page}?as=anonymous", "anonymous", 'data-offer="register"', 0.8),
        Scenario("article page, registered (quota left)", "GET", f"/articles/{page}",
                 f"/bare/articles/{page}?as=registered", "registered", 'data-offer="unlock"', 0.8),
        Scenario("article page, registered (unlocked)", "GET", f"/articles/{unlocked}",
                 f"/bare/articles/{unlocked}?as=unlocked", "registered", 'data-reason="already_unlocked"',
                 0.8),
        Scenario("article page, subscriber", "GET", f"/articles/{page}",
                 f"/bare/articles/{page}?as=subscriber", "subscriber", 'data-reason="subscriber"', 0.8),
        Scenario("unlock API (already unlocked)", "POST", f"/api/articles/{unlocked}/unlock",
                 f"/bare/api/articles/{unlocked}/unlock?as=unlocked", "registered", '"already_unlocked"', 0.7,
                 csrf=True),
        Scenario("JSON article, anonymous", "GET", f"/api/articles/{page}",
                 f"/bare/api/articles/{page}?as=anonymous", "anonymous", '"registration_required"', None),
    ]


@dataclass(frozen=True)
class Side:
    """One side of a scenario: the server it loads, the URL, the request's headers, and its database server.

    ``db_pid``: the process of the PostgreSQL server a PostgreSQL side reads, when this run can see
    it (a local server, read as root); its CPU is measured around each run too.
    """

    server: ServerProcess
    url: str
    headers: dict
    db_pid: int | None = None


#: Each side: its server, which of the scenario's paths, and which engine's sessions.
SIDE_PLACES = {"gate": ("gate", "gate_path", "sqlite"), "pooled": ("bare", "pooled_path", "sqlite"),
               "bare": ("bare", "bare_path", "sqlite"), "postgresql": ("postgresql", "gate_path", "postgresql"),
               "pg_pooled": ("pg_bare", "pooled_path", "postgresql")}


def sides_of(scenario: Scenario, servers: dict[str, ServerProcess], cookies: dict[str, dict],
             db_pid: int | None = None) -> dict[str, Side]:
    """The sides ``scenario`` is loaded on, in the order of a round; PostgreSQL's when it is served
    (``db_pid``: its server's process, when seen)."""
    sides = {}
    for name in (*SIDES, *PG_SIDES):
        server, path, engine = SIDE_PLACES[name]
        if server in servers:
            sides[name] = Side(servers[server], servers[server].url + getattr(scenario, path),
                               _headers(cookies[engine], scenario), db_pid if engine == "postgresql" else None)
    return sides


def _fetch(url: str, method: str, headers: dict) -> tuple[int, bytes, bool]:
    """Status, body, and whether the answer set a cookie."""
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, headers=headers,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read(), bool(answer.headers.get_all("Set-Cookie"))
    except urllib.error.HTTPError as error:
        return error.code, error.read(), False


def check(scenario: Scenario, sides: dict[str, Side]) -> dict[str, int]:
    """One request to each side first: each must answer 200 with the scenario's marker, and keep its cookie.

    The marker proves gate decided as the scenario says (a teaser with its
    offer, full text and why) and that the baseline renders the same tier.
    """
    sizes = {}
    for name, side in sides.items():
        status, body, set_cookie = _fetch(side.url, scenario.method, side.headers)
        if status != 200 or scenario.expect.encode() not in body:
            raise RuntimeError(f"{scenario.name}: {name} answered {status} without {scenario.expect!r}:"
                               f"\n{body[:500]!r}")
        if set_cookie:  # the load replays one cookie: it must be one the site keeps
            raise RuntimeError(f"{scenario.name}: {name} rewrote the session cookie of a replayed request")
        sizes[name] = len(body)
    return sizes


def timed(server: ServerProcess, load, url: str, method: str, headers: dict, seconds: float,
          connections: int, db_pid: int | None = None) -> dict:
    """One load run, with the CPU time the server's workers spent on it, and with ``db_pid`` the
    CPU time of that database server's processes (``db_cpu_s``; absent when none could be read)."""
    database = process_tree_cpu(db_pid)
    before = worker_cpu(server)
    run = load(url, method, headers, seconds, connections)
    used = [max(0.0, after - start) for after, start in zip(worker_cpu(server), before)]
    run["worker_cpu_s"] = [round(value, 2) for value in used]
    run["per_cpu_s"] = run["requests"] / sum(used) if sum(used) > 0 else 0.0
    if database:
        run["db_cpu_s"] = spent(database, process_tree_cpu(db_pid))
        total = sum(used) + run["db_cpu_s"]
        run["per_cpu_db_s"] = run["requests"] / total if total > 0 else 0.0
    return run


def _median(runs: list[dict], key: str, digits: int) -> float:
    return round(statistics.median(run[key] for run in runs), digits)


#: How often the interval :func:`median_interval` gives holds the true median, at least.
CONFIDENCE = 0.90


def median_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """A distribution-free interval for the median of what ``values`` sample, or None for too few values.

    Two order statistics, the k-th smallest and the k-th largest value: the
    true median lies below the k-th smallest only if fewer than k of the n
    values fall below it, which happens with probability P(Binomial(n, 1/2) < k).
    So the interval holds the median with probability 1 - 2 P(Binomial(n, 1/2) < k);
    k is the largest that keeps that at ``confidence`` or more. It asks nothing
    of the shape of the noise (a burst from another tenant, a slow core), so a
    ratio's interval says how far this run's rounds leave it from settled.
    With 8 rounds it is the 2nd smallest to the 2nd largest (at least 93%).
    """
    ordered, n = sorted(values), len(values)
    below, k = 0.0, 0  # below: P(Binomial(n, 1/2) < k + 1) as k grows
    while True:
        below += math.comb(n, k) / 2**n
        if 1 - 2 * below < confidence:
            break
        k += 1
    return None if k == 0 else (ordered[k - 1], ordered[n - k])


def round_order(sides, number: int) -> list[str]:
    """The order of round ``number``: every gate side beside its baseline, reversed every other round.

    Rounds 0 and 1 run gate, pooled, bare, postgresql, pg_pooled and then the
    reverse: each pair of a target's ratio is adjacent both times, once each way round.
    """
    order = [name for name in (*SIDES, *PG_SIDES) if name in sides]
    return order if number % 2 == 0 else order[::-1]


def measure(scenario: Scenario, sides: dict[str, Side], load, connections: int, seconds: float,
            rounds: int, warmup: float) -> dict:
    """Warm every side, then run them round after round, each round in the reverse order of the last.

    Each gate side runs right beside its baseline (:func:`round_order`), so a
    round's ratio divides two runs next to each other in time, and which of
    the two goes first alternates, so a drift in the machine's speed favours
    neither. A ratio is the median of the rounds' ratios, which a burst of
    noise from another process on a shared machine moves less than a ratio of totals.
    """
    sizes = check(scenario, sides)
    if warmup:
        for side in sides.values():
            load(side.url, scenario.method, side.headers, warmup, connections)
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for number in range(rounds):
        for name in round_order(sides, number):
            side = sides[name]
            runs[name].append(timed(side.server, load, side.url, scenario.method, side.headers, seconds,
                                    connections, side.db_pid))
    result: dict = {"connections": connections, "rounds": rounds}
    for name, done in runs.items():
        result[name] = {"rps": _median(done, "rps", 1), "p50_ms": _median(done, "p50_ms", 2),
                        "p99_ms": _median(done, "p99_ms", 2), "per_cpu_s": _median(done, "per_cpu_s", 1),
                        "requests": sum(run["requests"] for run in done),
                        "non2xx": sum(run["non2xx"] for run in done),
                        "errors": sum(run["errors"] for run in done), "bytes": sizes[name],
                        "runs": [{"rps": round(run["rps"], 1), "worker_cpu_s": run["worker_cpu_s"],
                                  **({"db_cpu_s": round(run["db_cpu_s"], 3)} if "db_cpu_s" in run else {})}
                                 for run in done]}
        if all("db_cpu_s" in run for run in done):  # PostgreSQL's server, seen in every run
            result[name]["db_us_per_req"] = round(statistics.median(
                run["db_cpu_s"] * 1e6 / max(run["requests"], 1) for run in done), 1)
    for measured, baseline, key in RATIOS:
        if measured in runs and baseline in runs:
            pairs = list(zip(runs[measured], runs[baseline]))
            ratios = [m["rps"] / max(b["rps"], 1e-9) for m, b in pairs]
            result[key] = round(statistics.median(ratios), 3)
            result[f"round_{key}s"] = [round(ratio, 3) for ratio in ratios]
            interval = median_interval(ratios)
            result[f"{key}_interval"] = [round(end, 3) for end in interval] if interval else None
            result[f"cpu_{key}"] = round(statistics.median(
                m["per_cpu_s"] / max(b["per_cpu_s"], 1e-9) for m, b in pairs), 3)
            if all("per_cpu_db_s" in run for pair in pairs for run in pair):  # with the database server's CPU
                result[f"cpu_db_{key}"] = round(statistics.median(
                    m["per_cpu_db_s"] / max(b["per_cpu_db_s"], 1e-9) for m, b in pairs), 3)
    result["balanced"] = all(_balanced(run["worker_cpu_s"]) for done in runs.values() for run in done)
    return result


def _balanced(worker_cpu: list[float]) -> bool:
    """Whether every worker did a fair share of a run (none under half of the busiest)."""
    return len(worker_cpu) < 2 or min(worker_cpu) >= 0.5 * max(worker_cpu)


def worker_connections(connections: int) -> int:
    """Each worker's connection cap: its share of the load's connections, plus a thread's worth.

    A gthread worker accepts every connection it can: without a cap, all the
    keep-alive connections of a run can land on one worker while the other
    idles, and throughput halves at random. Capping each worker near its
    share splits them evenly; the headroom of one thread per worker keeps
    gunicorn from closing keep-alive connections it counts as surplus.
    """
    return -(-connections // WORKERS) + THREADS


def gate_site(directory: Path, name: str, database: dict, secret: str, connections: int) -> ServerProcess:
    """`gate serve` on ``database`` (GATE_DATABASE or GATE_DATABASE_URL), the benchmark's gunicorn settings."""
    port = free_port()
    env = site_env(**database, GATE_SECRET_KEY=secret, GATE_RATE_LIMITS="off",
                   GATE_BASE_URL=f"http://127.0.0.1:{port}")  # gate serve needs its public origin
    return ServerProcess.gate_serve(env, directory / f"{name}.log", workers=WORKERS, port=port,
                                    options=("--threads", str(THREADS),
                                             "--worker-connections", str(worker_connections(connections))))


def bare_site(directory: Path, name: str, site: dict, env: dict, connections: int) -> ServerProcess:
    """The bare app on ``site``'s bare database (a SQLite copy or the PostgreSQL URL), same gunicorn settings."""
    port = free_port()
    command = [*_entry_point("serve_bare"), str(site["bare_database"]), f"127.0.0.1:{port}",
               env["GATE_SECRET_KEY"], str(worker_connections(connections))]
    return ServerProcess(command, env, directory / f"{name}.log", port,
                         ready=f"/pooled/api/articles/{site['page']}")


def start_servers(directory: Path, site: dict, connections: int, secret: str | None = None,
                  pg_site: dict | None = None) -> dict[str, ServerProcess]:
    """gate (`gate serve`) and the bare app on each engine, same gunicorn settings, all on loopback.

    ``site`` is the SQLite site; with ``pg_site`` gate and its own bare app
    serve from PostgreSQL too (as ``postgresql`` and ``pg_bare``). If one
    fails to start, those already started are stopped and the error raised.
    """
    secret = secret or secrets.token_hex(32)
    servers: dict[str, ServerProcess] = {}
    plan = [("gate", "bare", {"GATE_DATABASE": str(site["database"])}, site)]
    if pg_site is not None:
        plan.append(("postgresql", "pg_bare", {"GATE_DATABASE_URL": pg_site["database"]}, pg_site))
    try:
        for gate_name, bare_name, database, served in plan:
            servers[gate_name] = gate_site(directory, gate_name, database, secret, connections).start()
            servers[bare_name] = bare_site(directory, bare_name, served, servers[gate_name].env,
                                           connections).start()
    except Exception:
        for server in servers.values():
            server.stop()
        raise
    return servers


def postgres_site(stack: contextlib.ExitStack, directory: Path, pg_local: bool = True) -> tuple[dict | None, str]:
    """The benchmark's site on PostgreSQL (same articles and accounts as SQLite's), or why not."""
    engine = stack.enter_context(postgres_engine(directory, pg_local))
    if engine.skipped:
        return None, engine.skipped
    try:
        site = prepare_site(directory, engine.database(directory, "http")["GATE_DATABASE_URL"])
    except Exception as error:  # reported in the table, as a skipped engine is
        return None, _refusal(error)
    site["db_pid"] = postgres_master(engine.port)  # its processes' CPU is read around each run, when seen
    return site, "measured"


def _refusal(error: Exception) -> str:
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return f"skipped: gate could not serve from PostgreSQL: {lines[-1][:300]}"


def _headers(cookies: dict, scenario: Scenario) -> dict:
    """The replayed request's headers: its session's cookie, the one user agent, the CSRF token if needed."""
    session = cookies[scenario.session]
    headers = {"Cookie": session["cookie"], "User-Agent": USER_AGENT}
    if scenario.csrf:
        headers["X-CSRFToken"] = session["csrf"]
    return headers


def _loader(directory: Path, version: str | None):
    """load(url, method, headers, seconds, connections): wrk when installed, else the built-in generator."""
    if version is None:
        return run_builtin
    script = directory / "bench.lua"
    script.write_text(WRK_SCRIPT)

    def load(url, method, headers, seconds, connections):
        return run_wrk(url, method, headers, seconds, connections, script)

    return load


def run(quick: bool = False, generator: str = "auto", connections: tuple[int, ...] = CONNECTIONS,
        pg_local: bool = True) -> dict:
    """Serve every site, measure every scenario at each connection count, stop; returns the results document.

    The servers are restarted for each count, each worker capped near its
    share of that many connections. The first count gets every round, the others one.
    """
    version = wrk_version() if generator in ("auto", "wrk") else None
    if generator == "wrk" and version is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk), use --generator builtin")
    seconds, rounds, warmup = (1, 1, 0) if quick else (2, ROUNDS, 1)  # wrk counts whole seconds
    began = time.perf_counter()
    rows: dict[str, dict] = {}
    memory: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gate-httpbench-") as tmp, contextlib.ExitStack() as stack:
        directory = Path(tmp)
        load, site = _loader(directory, version), prepare_site(directory)
        pg_site, postgresql = postgres_site(stack, directory, pg_local)
        if pg_site and (pg_site["page"], pg_site["unlocked"]) != (site["page"], site["unlocked"]):
            raise RuntimeError("the PostgreSQL site was seeded with other articles than SQLite's")
        secret, cookies = secrets.token_hex(32), {}
        for number, count in enumerate(connections):
            try:
                servers = start_servers(directory, site, count, secret, pg_site)
            except Exception as error:
                if pg_site is None:
                    raise
                pg_site, postgresql = None, _refusal(error)  # gate's own refusal, in the table
                servers = start_servers(directory, site, count, secret)
            try:
                if not cookies:
                    cookies = {engine: sessions(servers[gate].url, site["page"], site["unlocked"])
                               for engine, gate in (("sqlite", "gate"), ("postgresql", "postgresql"))
                               if gate in servers}
                for scenario in scenarios(site["page"], site["unlocked"]):
                    sides = sides_of(scenario, servers, cookies, pg_site["db_pid"] if pg_site else None)
                    measured = measure(scenario, sides, load, count, seconds, rounds if number == 0 else 1,
                                       warmup)
                    if number == 0:
                        rows[scenario.name] = {"name": scenario.name, "method": scenario.method,
                                               "gate_path": scenario.gate_path, "bare_path": scenario.bare_path,
                                               "target": scenario.target, **measured, "more_connections": {}}
                    else:
                        rows[scenario.name]["more_connections"][str(count)] = measured
                if number == 0:  # each engine's gate and pooled workers, after every page and the API
                    memory = {side: worker_memory(servers[SIDE_PLACES[side][0]]) for _, *pair, _ in ENGINES
                              for side in pair if SIDE_PLACES[side][0] in servers}
            finally:
                for server in servers.values():
                    server.stop()
    return {"when": datetime.now(UTC).isoformat(), "quick": quick,
            "generator": version or "builtin (http.client keep-alive threads, separate process)",
            "gunicorn": {"workers": WORKERS, "threads": THREADS, "worker_class": "gthread"},
            "connections": list(connections), "seconds_per_run": seconds, "rounds": rounds,
            "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "rate_limits": "off", "postgresql": postgresql,
            "elapsed_s": round(time.perf_counter() - began, 1), "results": list(rows.values()),
            "memory": memory}


def client_sessions(app, site: dict) -> tuple[dict, dict]:
    """In-process sessions on ``app`` (test clients), as :func:`sessions` sets them up over HTTP.

    Returns a client per session (anonymous, registered, subscriber) and its
    CSRF token; the registered reader has unlocked ``site["unlocked"]``.
    """
    clients = {kind: app.test_client() for kind in ("anonymous", "registered", "subscriber")}
    for kind, (email, password) in (("registered", READER), ("subscriber", SUBSCRIBER)):
        client = clients[kind]
        token = _CSRF.search(client.get("/login").get_data(as_text=True)).group(1)
        client.post("/login", data={"csrf_token": token, "email": email, "password": password})
    tokens = {kind: _CSRF.search(client.get(f"/articles/{site['unlocked']}").get_data(as_text=True)).group(1)
              for kind, client in clients.items()}
    unlocked = clients["registered"].post(f"/api/articles/{site['unlocked']}/unlock",
                                          headers={"X-CSRFToken": tokens["registered"]})
    if unlocked.status_code != 200:
        raise RuntimeError(f"the benchmark reader could not unlock an article: {unlocked.status_code}")
    return clients, tokens


def profile(requests: int = 300) -> str:
    """cProfile of gate's side of every scenario, in-process through the test client.

    Returns the report: per scenario, the mean time per request and the
    functions with the most time of their own (SQLite calls show up here as
    ``execute`` and ``close`` of ``sqlite3.Connection``).
    """
    import cProfile
    import io
    import pstats

    from gate import create_app

    with tempfile.TemporaryDirectory(prefix="gate-httpbench-") as tmp:
        site = prepare_site(Path(tmp))
        app = create_app({"DATABASE": str(site["database"]), "SECRET_KEY": secrets.token_hex(16),
                          "RATELIMIT_ENABLED": False})
        clients, tokens = client_sessions(app, site)
        report = io.StringIO()
        for scenario in scenarios(site["page"], site["unlocked"]):
            client = clients[scenario.session]
            headers = {"X-CSRFToken": tokens[scenario.session]} if scenario.csrf else {}

            def call(client=client, scenario=scenario, headers=headers):
                return client.open(scenario.gate_path, method=scenario.method, headers=headers)

            for _ in range(30):
                call()
            profiler = cProfile.Profile()
            start = time.perf_counter()
            profiler.enable()
            for _ in range(requests):
                answer = call()
            profiler.disable()
            per_request = (time.perf_counter() - start) / requests * 1000
            report.write(f"\n=== {scenario.name}: {per_request:.2f} ms per request under cProfile "
                         f"(status {answer.status_code}) ===\n")
            pstats.Stats(profiler, stream=report).sort_stats("tottime").print_stats(15)
    return report.getvalue()


# --- the tables -------------------------------------------------------------------

#: Per engine: its gate side, its pooled side, and the keys of their ratio.
ENGINES = (("SQLite", "gate", "pooled", "pooled_ratio"), ("PostgreSQL", "postgresql", "pg_pooled", "pg_pooled_ratio"))


def render(header: list[str], body: list[list[str]], markdown: bool = False) -> str:
    """A table as aligned text (names left, figures right), or as Markdown."""
    if markdown:
        return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, ["---"] * len(header), *body])
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(cells, widths))).rstrip()
                     for cells in [header, *body])


def _rps(value: float) -> str:
    return f"{value:,.0f}"


def _per_request(per_cpu_s: float) -> str:
    """Requests per CPU-second as CPU microseconds a request."""
    return _rps(1e6 / per_cpu_s) if per_cpu_s > 0 else "—"


def _latency(side: dict) -> str:
    return f"{side['p50_ms']:.1f} / {side['p99_ms']:.1f}"


def _target(ratio: float, target: float | None) -> str:
    return "—" if target is None else f"{target:.2f} {'✓' if ratio >= target else '✗'}"


def _ratio(row: dict, key: str) -> str:
    """A median ratio and, when the run had rounds enough, the interval its rounds give it."""
    interval = row.get(f"{key}_interval")
    return f"{row[key]:.2f}" + (f" ({interval[0]:.2f}–{interval[1]:.2f})" if interval else "")


def _engine_rows(document: dict):
    """(row, engine, gate side, pooled side, ratio key) for every scenario on every measured engine."""
    for row in document["results"]:
        for engine, gate, pooled, key in ENGINES:
            if gate in row:
                yield row, engine, gate, pooled, key


def throughput_table(document: dict, markdown: bool = False) -> str:
    """Per scenario and engine: throughput, requests per worker CPU-second, the ratios to each baseline."""
    header = ["scenario", "engine", "gate rps", "pooled rps", "gate / pooled", "target", "gate req/CPU-s",
              "pooled req/CPU-s", "CPU ratio", "bare rps", "gate / bare", "PG / SQLite"]
    body = []
    for row, engine, gate, pooled, key in _engine_rows(document):
        sqlite = gate == "gate"
        body.append([row["name"] + ("" if row["balanced"] else " †"), engine, _rps(row[gate]["rps"]),
                     _rps(row[pooled]["rps"]), _ratio(row, key), _target(row[key], row["target"]),
                     _rps(row[gate]["per_cpu_s"]), _rps(row[pooled]["per_cpu_s"]), f"{row[f'cpu_{key}']:.2f}",
                     _rps(row["bare"]["rps"]) if sqlite else "—", f"{row['bare_ratio']:.2f}" if sqlite else "—",
                     "—" if sqlite else f"{row['pg_sqlite_ratio']:.2f}"])
    return render(header, body, markdown)


def latency_table(document: dict, markdown: bool = False) -> str:
    """Per scenario and engine: p50/p99 latency of gate and its pooled baseline at each connection count."""
    first, *more = document["connections"]
    header = ["scenario", "engine", f"gate p50 / p99 ms ({first})", f"pooled p50 / p99 ms ({first})"]
    for count in more:
        header += [f"gate rps ({count})", f"gate / pooled ({count})", f"gate p50 / p99 ms ({count})",
                   f"pooled p50 / p99 ms ({count})"]
    body = []
    for row, engine, gate, pooled, key in _engine_rows(document):
        cells = [row["name"], engine, _latency(row[gate]), _latency(row[pooled])]
        for count in more:
            at = row["more_connections"][str(count)]
            cells += [_rps(at[gate]["rps"]), f"{at[key]:.2f}", _latency(at[gate]), _latency(at[pooled])]
        body.append(cells)
    return render(header, body, markdown)


def database_table(document: dict, markdown: bool = False) -> str:
    """Per scenario on PostgreSQL: CPU microseconds a request in the workers and in the database server,
    gate's and its pooled page's, and the CPU ratio without and with the server's share ("" if unmeasured)."""
    header = ["scenario", "engine", "gate workers µs/req", "gate server µs/req", "pooled workers µs/req",
              "pooled server µs/req", "CPU ratio", "CPU ratio with server"]
    body = []
    for row in document["results"]:
        gate, pooled = row.get("postgresql", {}), row.get("pg_pooled", {})
        if "db_us_per_req" in gate and "db_us_per_req" in pooled and "cpu_db_pg_pooled_ratio" in row:
            body.append([row["name"], "PostgreSQL", _per_request(gate["per_cpu_s"]), _rps(gate["db_us_per_req"]),
                         _per_request(pooled["per_cpu_s"]), _rps(pooled["db_us_per_req"]),
                         f"{row['cpu_pg_pooled_ratio']:.2f}", f"{row['cpu_db_pg_pooled_ratio']:.2f}"])
    return render(header, body, markdown) if body else ""


def memory_table(document: dict, markdown: bool = False) -> str:
    """Per engine: a worker's own memory and its fair share, gate's against its pooled baseline's."""
    header = ["engine", "gate USS MiB", "pooled USS MiB", "pooled / gate (USS)", "gate PSS MiB", "pooled PSS MiB",
              "pooled / gate (PSS)"]
    body, sides = [], document.get("memory", {})  # runs saved before memory was measured have none
    for engine, gate, pooled, _ in ENGINES:
        if sides.get(gate, {}).get("uss_mib") and sides.get(pooled, {}).get("uss_mib"):
            ours, base = sides[gate], sides[pooled]
            body.append([engine, f"{ours['uss_mib']:.1f}", f"{base['uss_mib']:.1f}",
                         f"{base['uss_mib'] / ours['uss_mib']:.2f}", f"{ours['pss_mib']:.1f}",
                         f"{base['pss_mib']:.1f}", f"{base['pss_mib'] / ours['pss_mib']:.2f}"])
    return render(header, body, markdown) if body else ""


def format_table(document: dict, markdown: bool = False) -> str:
    """The run's tables: throughput and CPU against the baselines, then latency, then notes."""
    first = document["connections"][0]
    lines = [f"Throughput at {first} connections, median of {document['rounds']} alternating rounds "
             f"(target: gate / pooled on each engine; in brackets, an interval that holds the median "
             f"ratio at least {CONFIDENCE:.0%} of the time, from the rounds):", "",
             throughput_table(document, markdown)]
    database = database_table(document, markdown)
    if database:
        lines += ["", "PostgreSQL's server beside the workers, CPU a request (medians of the rounds; the server's "
                      "processes read with psutil around each run): the CPU ratio again with the server's share "
                      "added, as one machine running both pays it:", "", database]
    lines += ["", "Latency at each connection count (further counts: one round):", "",
              latency_table(document, markdown)]
    memory = memory_table(document, markdown)
    if memory:
        lines += ["", "Memory of a worker after the run's rounds at the first count (the mean of its workers; "
                      "USS: its own pages, PSS: those and its share of the shared ones):", "", memory]
    if document["postgresql"] != "measured":
        lines += ["", f"PostgreSQL: {document['postgresql']}"]
    if not all(row["balanced"] for row in document["results"]):
        lines += ["", "† a worker did under half the work of the other in some run"]
    return "\n".join(lines)


def across_runs(documents: list[dict]) -> list[dict]:
    """Per scenario and engine, over several saved runs of the same code: what one run cannot settle.

    A run's ratio moves with the machine by about ±0.05 (see the benchmarks doc), so
    a page near its target meets it in one run and misses in the next. Over runs,
    the median of their medians and the interval :func:`median_interval` gives it
    (the runs as its draws) say where the page stands; the verdict is "met" or
    "missed" only when the whole interval is on one side of the target.
    """
    found: dict[tuple[str, str], dict] = {}
    for document in documents:
        for row, engine, _gate, _pooled, key in _engine_rows(document):
            entry = found.setdefault((row["name"], engine), {"name": row["name"], "engine": engine,
                                                             "target": row["target"], "ratios": [], "cpu": []})
            entry["ratios"].append(row[key])
            if row.get(f"cpu_{key}") is not None:  # a run saved before CPU was read has none
                entry["cpu"].append(row[f"cpu_{key}"])
    for entry in found.values():
        ratios, target = entry["ratios"], entry["target"]
        entry["median"], entry["interval"] = statistics.median(ratios), median_interval(ratios)
        entry["cpu_median"] = statistics.median(entry["cpu"]) if entry["cpu"] else None
        entry["met"] = None if target is None else sum(ratio >= target for ratio in ratios)
        low, high = entry["interval"] or (None, None)
        entry["verdict"] = ("—" if target is None else "too few runs" if low is None
                            else "met" if low >= target else "missed" if high < target else "unsettled")
    return list(found.values())


def across_table(documents: list[dict], markdown: bool = False) -> str:
    """The table of :func:`across_runs`: each run's ratio, their median and interval, and the verdict."""
    header = ["scenario", "engine", "runs", "gate / pooled, each run", "median", "interval", "target",
              "runs meeting it", "verdict", "CPU ratio (median)"]
    body = []
    for entry in across_runs(documents):
        interval, target = entry["interval"], entry["target"]
        body.append([entry["name"], entry["engine"], str(len(entry["ratios"])),
                     " ".join(f"{ratio:.2f}" for ratio in entry["ratios"]), f"{entry['median']:.3f}",
                     f"{interval[0]:.2f}–{interval[1]:.2f}" if interval else "—",
                     "—" if target is None else f"{target:.2f}",
                     "—" if target is None else f"{entry['met']} of {len(entry['ratios'])}",
                     entry["verdict"], "—" if entry["cpu_median"] is None else f"{entry['cpu_median']:.2f}"])
    return (f"Across {len(documents)} runs: each run's median ratio (gate / pooled), their median, and an interval "
            f"that holds the median at least {CONFIDENCE:.0%} of the time, from the runs:\n\n"
            + render(header, body, markdown))


def _saved_run(path: str, parser) -> dict:
    """The saved run at ``path`` (an http.json), or the parser's error naming it when it is not one."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        parser.error(f"{path}: not a saved run ({error})")
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        parser.error(f"{path}: not a saved run (no results)")
    return document


def _saved_full_runs(paths: list[str], parser) -> list[dict]:
    """The saved runs at ``paths``, each a full run (a --quick run's single rounds do not compare)."""
    documents = [_saved_run(path, parser) for path in paths]
    for path, document in zip(paths, documents):
        if document.get("quick"):
            parser.error(f"{path}: a --quick run (one round per count) does not compare with full runs")
    return documents


def _connection_counts(text: str) -> tuple[int, ...]:
    """``--connections 16,64``: the first count gets every round, each further one a round."""
    counts = tuple(int(part) for part in text.split(","))
    if not counts or min(counts) < 1:
        raise ValueError(text)
    return counts


def main(argv=None) -> None:
    """Run the HTTP benchmarks, print the tables and write bench-results/http.json."""
    parser = arguments(__doc__, "http.json", "one short round per count (a smoke test, ~1.5 min)")
    parser.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto",
                        help="load generator (auto: wrk if installed)")
    parser.add_argument("--connections", type=_connection_counts, default=CONNECTIONS,
                        help="keep-alive connection counts, comma-separated (default 16,64)")
    parser.add_argument("--no-pg-local", action="store_true",
                        help="never start tools/pg-local (PostgreSQL only from the environment)")
    parser.add_argument("--markdown", action="store_true", help="print the tables in Markdown (for the docs)")
    parser.add_argument("--show", metavar="HTTP_JSON",
                        help="instead, print the tables of a saved run (an http.json) and stop")
    parser.add_argument("--across", metavar="HTTP_JSON", nargs="+",
                        help="instead, compare several saved full runs of the same code (each page's median "
                             "over them, its interval and a verdict) and stop")
    parser.add_argument("--profile", action="store_true",
                        help="instead, profile gate's request path in-process (cProfile) into http-profile.txt")
    args = parser.parse_args(argv)
    if args.show:
        print(format_table(_saved_run(args.show, parser), args.markdown))
        return
    if args.across:
        print(across_table(_saved_full_runs(args.across, parser), args.markdown))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.profile:
        text = profile()
        (out / "http-profile.txt").write_text(text)
        print(text)
        print(f"written to {out / 'http-profile.txt'}")
        return
    document = run(quick=args.quick, generator=args.generator, connections=args.connections,
                   pg_local=not args.no_pg_local)
    print(f"gunicorn {WORKERS} workers x {THREADS} threads on 127.0.0.1; load: {document['generator']}; "
          f"{document['elapsed_s']:.0f} s, load average {document['load_average'][0]}\n")
    print(format_table(document, args.markdown))
    (out / "http.json").write_text(json.dumps(document, indent=2))
    print(f"written to {out / 'http.json'}")


if __name__ == "__main__":
    main()

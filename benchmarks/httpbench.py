"""HTTP benchmarks: gate under gunicorn, next to a bare Flask page, loaded by an external generator.

Run with `python -m benchmarks.httpbench [--quick]` from the checkout. Two sites are served on
loopback by the same gunicorn configuration (gate.cli.serving's, 2 workers x 4
threads, each worker capped near its share of the connections): gate itself,
and a bare Flask app that reads the same article row from SQLite (a copy of
the same database) and renders it with the same templates, but has no
sessions, meters, decisions or events. The bare app serves its page two
ways: under /bare/ it opens a SQLite connection per request, as Flask's
tutorial does; under /pooled/ it keeps one connection per thread, as gate
does, which leaves only gate's own logic in the difference. Each scenario
loads gate and both baselines in rotating rounds with the same generator,
headers and concurrency, and reports requests per second, p50/p99 latency,
the CPU time of every worker, and the ratios gate/bare and gate/pooled, each
the median of the rounds' ratios (higher is better; targets, against the
bare page: article pages >= 0.8, unlock >= 0.5). A --quick run is one short
round: a smoke test, not a measurement.

The load comes from another process: wrk (Debian package `wrk`) when it is
installed, otherwise a small keep-alive http.client generator run in a
subprocess (``--generator builtin``). Rate limits are off on the benchmarked
site: the unlock scenario repeats one reader's unlock thousands of times a
second, far past any limit. Everything listens on 127.0.0.1 only.
``--profile`` instead runs gate's side of each scenario in-process under
cProfile, to see where a request's time goes.
"""

from __future__ import annotations

import contextlib
import http.client
import http.cookiejar
import json
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

from benchmarks.bench import arguments, percentile
from benchmarks.engines import CHECKOUT, postgres_engine
from gate.loadtest.server import ServerProcess, free_port, site_env
from gate.rules.periods import period_window

UTC = timezone.utc
SIDES = ("gate", "bare", "pooled")
GATE_SIDES = ("gate", "postgresql")  # gate itself, on SQLite and on PostgreSQL
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
    """One measured request, on gate and on the bare app."""

    name: str
    method: str
    gate_path: str
    bare_path: str
    session: str  # which session's cookie: anonymous, registered, subscriber
    expect: str  # a marker gate's answer must contain (checked before loading)
    target: float | None
    csrf: bool = False
    postgres: bool = False  # also measured on gate serving from PostgreSQL (the article pages)


# --- the bare baseline ----------------------------------------------------------


def _bare_views(cfg, now: datetime) -> dict[str, SimpleNamespace]:
    """Fixed template context per tier: what gate decides, written down once."""
    site_info = cfg.publication
    rules = cfg.preset(site_info.default_preset)
    nothing = SimpleNamespace(used=0, limit=0, remaining=0, resets_at=None, period=None)
    quota = SimpleNamespace(used=1, limit=3, remaining=2, period="month",
                            resets_at=period_window("month", now, rules.tz).end)
    unlimited = SimpleNamespace(used=0, limit=None, remaining=None, resets_at=None, period=None)
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
        "subscriber": SimpleNamespace(full=True, user=user(SUBSCRIBER[0]), tier="subscriber",
                                      meter=unlimited, decision=decision("full", "subscriber", None,
                                                                         "subscriber", unlimited)),
        "rules": rules,
    }


def bare_app(database: str, secret_key: str):
    """A bare Flask app: gate's templates and URL map, one SQLite read per request, no gate logic.

    It borrows gate's URL rules (with stub views) only so that the template's
    ``url_for`` calls build the same links at the same cost, and gate's
    Markdown renderer, cached as gate caches it, so the body is the same HTML.
    """
    from flask import Flask, abort, jsonify, render_template, request, url_for

    from gate import create_app
    from gate.conf.resources import resource_dir
    from gate.conf.settings import Config
    from gate.services import content

    borrowed = create_app({"DATABASE": database, "SECRET_KEY": secret_key})
    app = Flask("bare", template_folder=str(resource_dir("templates")),
                static_folder=borrowed.static_folder)
    app.config.update(SECRET_KEY=secret_key, DEMO=False, JSON_SORT_KEYS=False)

    def stub(**_):
        abort(404)

    app.url_map.converters.update(borrowed.url_map.converters)  # the site's routes use <id:...>
    for rule in borrowed.url_map.iter_rules():
        if rule.endpoint != "static":
            app.add_url_rule(rule.rule, endpoint=rule.endpoint, view_func=stub, methods=rule.methods)
    cfg = Config()
    views = _bare_views(cfg, datetime.now(UTC))
    rules, site_info = views.pop("rules"), cfg.publication
    signup_lists = cfg.signup_lists
    html: dict[str, tuple[str, str, str]] = {}

    def rendered(body_md: str) -> tuple[str, str, str]:
        """Teaser, gated part and whole body, rendered once per article (gate caches too)."""
        if body_md not in html:
            teaser, rest = content.split_parts(body_md, rules.teaser_paragraphs)
            html[body_md] = (content.render(teaser), content.render(rest), content.render(body_md))
        return html[body_md]

    local = threading.local()

    def row_for(slug: str):
        """The article row: under /bare/ on a new connection, under /pooled/ on this thread's own."""
        if request.path.startswith("/pooled/"):
            if not hasattr(local, "conn"):
                local.conn = sqlite3.connect(database, check_same_thread=False)
                local.conn.row_factory = sqlite3.Row
            row = local.conn.execute("select * from articles where slug = ?", [slug]).fetchone()
        else:
            conn = sqlite3.connect(database)
            conn.row_factory = sqlite3.Row
            try:
                row = conn.execute("select * from articles where slug = ?", [slug]).fetchone()
            finally:
                conn.close()
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
                "consent_ticked": lambda item: item.consent_default == "ticked"}

    app.jinja_env.filters["local"] = lambda moment: moment.astimezone(rules.tz)
    app.jinja_env.filters["period_phrase"] = lambda period: "this month" if period else ""

    @app.get("/bare/articles/<slug>")
    @app.get("/pooled/articles/<slug>", endpoint="pooled_page")
    def page(slug):
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

    def payload(slug: str, full: bool) -> dict:
        row, chosen = row_for(slug), view()
        teaser, _, body = rendered(row["body_md"])
        data = {key: row[key] for key in ("slug", "title", "dek", "author", "section",
                                          "published_at", "access_class")}
        data.update(access="full" if full else chosen.decision.access,
                    reason="already_unlocked" if full else chosen.decision.reason,
                    offer=None if full else chosen.decision.offer, meter=vars(chosen.meter),
                    tier=chosen.tier, access_class="metered", teaser_html=teaser)
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


def serve_bare() -> None:
    """Entry point of the bare server process: DATABASE BIND SECRET WORKER_CONNECTIONS."""
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


def prepare_site(directory: Path, database_url: str | None = None) -> dict:
    """A seeded database with a reader and a subscriber, and a SQLite copy for the bare app.

    With ``database_url`` the site is on that PostgreSQL database, with the same articles and
    accounts, and no copy is made: the bare baselines always read the SQLite site's copy.
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
    return {"database": database, "bare_database": directory / "bare.sqlite", "page": slugs[0],
            "unlocked": slugs[1]}


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
    """The measured requests: an article page per tier, the unlock, the JSON article."""
    return [
        Scenario("article page, anonymous", "GET", f"/articles/{page}",
                 f"/bare/articles/{page}?as=anonymous", "anonymous", 'data-offer="register"', 0.8,
                 postgres=True),
        Scenario("article page, registered (quota left)", "GET", f"/articles/{page}",
                 f"/bare/articles/{page}?as=registered", "registered", 'data-offer="unlock"', 0.8,
                 postgres=True),
        Scenario("article page, subscriber", "GET", f"/articles/{page}",
                 f"/bare/articles/{page}?as=subscriber", "subscriber", 'data-access="full"', 0.8,
                 postgres=True),
        Scenario("unlock (already unlocked), API", "POST", f"/api/articles/{unlocked}/unlock",
                 f"/bare/api/articles/{unlocked}/unlock", "registered", '"already_unlocked"', 0.5,
                 csrf=True),
        Scenario("JSON article, anonymous", "GET", f"/api/articles/{page}",
                 f"/bare/api/articles/{page}?as=anonymous", "anonymous", '"registration_required"', None),
    ]


def _fetch(url: str, method: str, headers: dict) -> tuple[int, bytes, bool]:
    """Status, body, and whether the answer set a cookie."""
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, headers=headers,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read(), bool(answer.headers.get_all("Set-Cookie"))
    except urllib.error.HTTPError as error:
        return error.code, error.read(), False


def check(scenario: Scenario, urls: dict[str, str], headers: dict[str, dict]) -> dict[str, int]:
    """One request to each side first: all must answer 200, and gate (on each engine) as the scenario expects."""
    sizes = {}
    for side, url in urls.items():
        status, body, set_cookie = _fetch(url, scenario.method, headers[side])
        gate = side in GATE_SIDES
        if status != 200 or (gate and scenario.expect.encode() not in body):
            raise RuntimeError(f"{scenario.name}: {side} answered {status}"
                               f"{f' without {scenario.expect!r}' if gate else ''}:\n{body[:500]!r}")
        if set_cookie:  # the load replays one cookie: it must be one the site keeps
            raise RuntimeError(f"{scenario.name}: {side} rewrote the session cookie of a replayed request")
        sizes[side] = len(body)
    return sizes


def timed(server: ServerProcess, load, url: str, method: str, headers: dict, seconds: float) -> dict:
    """One load run, with the CPU time the server's workers spent on it."""
    before = worker_cpu(server)
    run = load(url, method, headers, seconds)
    spent = [max(0.0, after - start) for after, start in zip(worker_cpu(server), before)]
    run["worker_cpu_s"] = [round(value, 2) for value in spent]
    run["per_cpu_s"] = run["requests"] / sum(spent) if sum(spent) > 0 else 0.0
    return run


def measure(scenario: Scenario, sites: dict, headers: dict, load, seconds: float, rounds: int,
            warmup: float, pg_headers: dict | None = None) -> dict:
    """Warm every side, then run them in rotating order each round, so drift hits all alike.

    The sides are gate, the bare page (a new SQLite connection per request,
    as Flask's tutorial writes it) and the pooled bare page (one connection
    kept per thread, as gate keeps its own). Each round's gate run is divided
    by the baseline runs next to it in time; a ratio is the median of the
    rounds' ratios, which a burst of noise from another process on a shared
    machine moves less than a ratio of totals.

    With a ``postgresql`` site (and ``pg_headers``, its session's), a scenario
    marked ``postgres`` adds gate serving from PostgreSQL as a fourth side in
    the same rotation, against the same SQLite baselines.
    """
    urls = {"gate": sites["gate"].url + scenario.gate_path,
            "bare": sites["bare"].url + scenario.bare_path,
            "pooled": sites["bare"].url + scenario.bare_path.replace("/bare/", "/pooled/", 1)}
    server = {"gate": sites["gate"], "bare": sites["bare"], "pooled": sites["bare"]}
    side_headers = dict.fromkeys(SIDES, headers)
    sides = SIDES
    if scenario.postgres and "postgresql" in sites:
        sides = (*SIDES, "postgresql")
        urls["postgresql"] = sites["postgresql"].url + scenario.gate_path
        server["postgresql"], side_headers["postgresql"] = sites["postgresql"], pg_headers
    sizes = check(scenario, urls, side_headers)
    for side in sides:
        load(urls[side], scenario.method, side_headers[side], warmup)
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for number in range(rounds):
        for side in sides[number % len(sides):] + sides[:number % len(sides)]:
            runs[side].append(timed(server[side], load, urls[side], scenario.method, side_headers[side],
                                    seconds))
    result = {"name": scenario.name, "method": scenario.method, "gate_path": scenario.gate_path,
              "bare_path": scenario.bare_path, "target": scenario.target}
    for side in sides:
        result[side] = {"rps": round(statistics.median([run["rps"] for run in runs[side]]), 1),
                        "p50_ms": round(statistics.median([run["p50_ms"] for run in runs[side]]), 2),
                        "p99_ms": round(statistics.median([run["p99_ms"] for run in runs[side]]), 2),
                        "requests": sum(run["requests"] for run in runs[side]),
                        "non2xx": sum(run["non2xx"] for run in runs[side]),
                        "errors": sum(run["errors"] for run in runs[side]),
                        "bytes": sizes[side],
                        "per_cpu_s": round(statistics.median([run["per_cpu_s"] for run in runs[side]]), 1),
                        "runs": [{"rps": round(run["rps"], 1), "worker_cpu_s": run["worker_cpu_s"]}
                                 for run in runs[side]]}
    pairs_of = [("gate", "bare", "ratio"), ("gate", "pooled", "pooled_ratio")]
    if "postgresql" in sides:
        pairs_of += [("postgresql", "bare", "pg_ratio"), ("postgresql", "pooled", "pg_pooled_ratio"),
                     ("postgresql", "gate", "pg_sqlite_ratio")]
    for measured, baseline, key in pairs_of:
        pairs = list(zip(runs[measured], runs[baseline]))
        ratios = [g["rps"] / max(b["rps"], 1e-9) for g, b in pairs]
        cpu_ratios = [g["per_cpu_s"] / max(b["per_cpu_s"], 1e-9) for g, b in pairs]
        result[key] = round(statistics.median(ratios), 3)
        result[f"round_{key}s"] = [round(ratio, 3) for ratio in ratios]
        result[f"cpu_{key}"] = round(statistics.median(cpu_ratios), 3)
    result["balanced"] = all(_balanced(run["worker_cpu_s"]) for side in sides for run in runs[side])
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


def start_servers(directory: Path, site: dict, connections: int) -> dict[str, ServerProcess]:
    """gate (`gate serve`) and the bare app, same gunicorn settings, both on loopback."""
    secret, per_worker = secrets.token_hex(32), str(worker_connections(connections))
    servers = {"gate": gate_site(directory, "gate", {"GATE_DATABASE": str(site["database"])}, secret, connections)}
    env = servers["gate"].env
    try:
        servers["gate"].start()
        bare_port = free_port()
        servers["bare"] = ServerProcess(
            [*_entry_point("serve_bare"), str(site["bare_database"]), f"127.0.0.1:{bare_port}", secret, per_worker],
            env, directory / "bare.log", bare_port, ready=f"/bare/api/articles/{site['page']}").start()
    except RuntimeError:
        for server in servers.values():
            server.stop()
        raise
    return servers


def run(quick: bool = False, generator: str = "auto", connections: int = 16, pg_local: bool = True) -> dict:
    """Serve both sites, measure every scenario, stop; returns the results document."""
    version = wrk_version() if generator in ("auto", "wrk") else None
    if generator == "wrk" and version is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk), use --generator builtin")
    seconds, rounds, warmup = (1, 1, 1) if quick else (2, 6, 1)  # wrk counts whole seconds
    with tempfile.TemporaryDirectory(prefix="gate-httpbench-") as tmp:
        directory = Path(tmp)
        site = prepare_site(directory)
        if version:
            script = directory / "bench.lua"
            script.write_text(WRK_SCRIPT)

            def load(url, method, headers, duration):
                return run_wrk(url, method, headers, duration, connections, script)
        else:
            def load(url, method, headers, duration):
                return run_builtin(url, method, headers, duration, connections)

        servers = start_servers(directory, site, connections)
        stack = contextlib.ExitStack()
        try:
            cookies = sessions(servers["gate"].url, site["page"], site["unlocked"])
            pg_cookies, postgresql = start_postgres(stack, directory, servers, connections, pg_local)
            results = []
            for scenario in scenarios(site["page"], site["unlocked"]):
                headers = _headers(cookies, scenario)
                pg_headers = _headers(pg_cookies, scenario) if pg_cookies else None
                results.append(measure(scenario, servers, headers, load, seconds, rounds, warmup, pg_headers))
        finally:
            for server in servers.values():
                server.stop()
            stack.close()
    return {"when": datetime.now(UTC).isoformat(), "quick": quick,
            "generator": version or "builtin (http.client keep-alive threads, separate process)",
            "gunicorn": {"workers": WORKERS, "threads": THREADS, "worker_class": "gthread"},
            "connections": connections, "seconds_per_run": seconds, "rounds": rounds,
            "cpus": os.cpu_count(), "rate_limits": "off", "postgresql": postgresql, "results": results}


def _headers(cookies: dict, scenario: Scenario) -> dict:
    """The replayed request's headers: its session's cookie, the one user agent, the CSRF token if needed."""
    session = cookies[scenario.session]
    headers = {"Cookie": session["cookie"], "User-Agent": USER_AGENT}
    if scenario.csrf:
        headers["X-CSRFToken"] = session["csrf"]
    return headers


def start_postgres(stack: contextlib.ExitStack, directory: Path, servers: dict, connections: int,
                   pg_local: bool = True) -> tuple[dict | None, str]:
    """gate on PostgreSQL beside the SQLite site (same articles, accounts and secret), or why not.

    Adds ``servers["postgresql"]`` and returns its sessions and "measured", or
    (None, "skipped: ...") when no PostgreSQL server is at hand or gate can't serve from it.
    """
    engine = stack.enter_context(postgres_engine(directory, pg_local))
    if engine.skipped:
        return None, engine.skipped
    try:
        database = engine.database(directory, "http")
        site = prepare_site(directory, database["GATE_DATABASE_URL"])
        server = gate_site(directory, "gate-postgresql", database, servers["gate"].env["GATE_SECRET_KEY"],
                           connections)
        server.start()
    except Exception as error:  # reported in the table, as a skipped engine is
        lines = str(error).strip().splitlines() or [type(error).__name__]
        return None, f"skipped: gate could not serve from PostgreSQL: {lines[-1][:300]}"
    servers["postgresql"] = server
    return sessions(server.url, site["page"], site["unlocked"]), "measured"


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
        clients = {"anonymous": app.test_client(), "registered": app.test_client(),
                   "subscriber": app.test_client()}
        clients["anonymous"].get(f"/articles/{site['page']}")
        tokens = {}
        for kind, (email, password) in (("registered", READER), ("subscriber", SUBSCRIBER)):
            client = clients[kind]
            token = _CSRF.search(client.get("/login").get_data(as_text=True)).group(1)
            client.post("/login", data={"csrf_token": token, "email": email, "password": password})
        for kind, client in clients.items():
            tokens[kind] = _CSRF.search(client.get(f"/articles/{site['unlocked']}").get_data(as_text=True)).group(1)
        clients["registered"].post(f"/api/articles/{site['unlocked']}/unlock",
                                   headers={"X-CSRFToken": tokens["registered"]})
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


def format_table(document: dict) -> str:
    """One line per scenario: throughput of gate and both baselines, the ratios, gate's latency."""
    lines = [f"{'scenario':<38} {'gate rps':>9} {'bare rps':>9} {'ratio':>6} {'target':>6} "
             f"{'pooled rps':>10} {'ratio':>6}  {'gate p50/p99 ms':>16}"]
    for row in document["results"]:
        gate, bare, pooled = row["gate"], row["bare"], row["pooled"]
        target = f"{row['target']:.2f}" if row["target"] else "-"
        flags = [" below target"] if row["target"] and row["ratio"] < row["target"] else []
        if not row["balanced"]:
            flags.append(" (a worker sat idle in some run)")
        lines.append(f"{row['name']:<38} {gate['rps']:>9.0f} {bare['rps']:>9.0f} {row['ratio']:>6.2f} "
                     f"{target:>6} {pooled['rps']:>10.0f} {row['pooled_ratio']:>6.2f}  "
                     f"{gate['p50_ms']:>7.1f}/{gate['p99_ms']:<8.1f}{''.join(flags)}")
    measured = [row for row in document["results"] if "postgresql" in row]
    if document.get("postgresql", "measured") != "measured":
        lines.append(f"gate on PostgreSQL: {document['postgresql']}")
    elif measured:
        lines.append(f"\ngate on PostgreSQL, same bare baselines (SQLite):\n{'scenario':<38} {'pg rps':>9} "
                     f"{'bare rps':>9} {'ratio':>6} {'pooled rps':>10} {'ratio':>6} {'pg/sqlite':>9}  "
                     f"{'pg p50/p99 ms':>16}")
        for row in measured:
            postgresql = row["postgresql"]
            lines.append(f"{row['name']:<38} {postgresql['rps']:>9.0f} {row['bare']['rps']:>9.0f} "
                         f"{row['pg_ratio']:>6.2f} {row['pooled']['rps']:>10.0f} {row['pg_pooled_ratio']:>6.2f} "
                         f"{row['pg_sqlite_ratio']:>9.2f}  {postgresql['p50_ms']:>7.1f}/{postgresql['p99_ms']:<8.1f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    """Run the HTTP benchmarks, print a table and write bench-results/http.json."""
    parser = arguments(__doc__, "http.json", "short runs (a smoke test, ~30 s)")
    parser.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto",
                        help="load generator (auto: wrk if installed)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument("--no-pg-local", action="store_true",
                        help="never start tools/pg-local (PostgreSQL only from the environment)")
    parser.add_argument("--profile", action="store_true",
                        help="instead, profile gate's request path in-process (cProfile) into http-profile.txt")
    args = parser.parse_args(argv)
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
    print(f"gunicorn {WORKERS} workers x {THREADS} threads on 127.0.0.1; load: {document['generator']}, "
          f"{args.connections} connections")
    print(format_table(document))
    (out / "http.json").write_text(json.dumps(document, indent=2))
    print(f"written to {out / 'http.json'}")


if __name__ == "__main__":
    main()

"""Run a load test: a fresh site under gunicorn, Locust headless against it, and its numbers.

The library behind `gate loadtest`. :func:`run_loadtest` starts the site on a
free loopback port (or several nodes, each on its own) with a new database
(demo articles, synthetic ones, demo accounts and subscriber accounts for the
personas): a SQLite file per run, or the PostgreSQL database of
GATE_DATABASE_URL, which must be empty (or a fresh schema of it). It runs
Locust headless in a subprocess (Locust patches the standard library with
gevent, so it never runs inside this process), alone or as the master of
local worker processes (Locust's distributed mode), stops the site and returns
a :class:`LoadReport` with the per-endpoint statistics, the failures by kind
and the database, which outlives the run so the invariant audit can read it.

Load must only ever target servers you run yourself: :func:`is_loopback`
is the check the command applies before it sends anything.
"""

from __future__ import annotations

import csv
import ipaddress
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from gate.loadtest.server import LOOPBACK, Nodes, database_env, free_port, site_env

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
#: Subscriber accounts for the binge-reading persona; passed to Locust as --gate-* options.
SUBSCRIBER_EMAIL = "loadtest-subscriber-{n:03d}@loadtest.example"
SUBSCRIBER_PASSWORD = "loadtest-pass-{n:03d}"
#: The capped code a fresh site's flash-sale buyers race: a cap small enough to be reached in a short run.
FLASH_CODE, FLASH_CAP = "LOADTEST-FLASH", 3
#: Seats of the group licence the seat rush persona joins from the users' addresses (198.18.0.0/15).
SEAT_RUSH_SEATS = 10
CSV_PREFIX, HTML_REPORT, LOCUST_LOG = "loadtest", "loadtest.html", "locust.log"
WORKER_LOG = "locust-worker{n}.log"
_REFUSED = re.compile(r" \[(\d{3})\]$")


@dataclass(frozen=True)
class LoadPlan:
    """What to run: the load, the target and where the reports go."""

    users: int = 200
    spawn_rate: float = 50.0
    duration: int = 60  # seconds
    host: str | None = None  # None: start a fresh site here
    workers: int = 2  # gunicorn workers of each node of the site started here
    targets: tuple[str, ...] = ()  # the nodes of a running site (instead of host)
    nodes: int = 1  # `gate serve` processes of the site started here, one database
    locust_workers: int = 0  # >0: a Locust master here and this many local worker processes
    database: str | None = None  # the site started here: a PostgreSQL URL (None: a SQLite file)
    out: Path = Path("loadtest-report")
    synthetic: int = 500
    subscribers: int = 20
    preset: str | None = None
    rate_limits: bool = True  # the site's own limits, per simulated client address
    locust_args: tuple[str, ...] = ()  # distributed mode and other passthrough options
    wait_for_workers: int = 0  # seconds a master may wait for its workers
    flash_code: str = "FLASH10"  # the capped code the flash-sale buyers race (a fresh site's: FLASH_CODE)

    @property
    def hosts(self) -> tuple[str, ...]:
        """The running site's nodes this plan targets (none: start a fresh site)."""
        return self.targets or ((self.host,) if self.host else ())


@dataclass(frozen=True)
class EndpointStats:
    """One row of Locust's statistics; times in milliseconds."""

    method: str
    name: str
    requests: int
    failures: int
    rps: float
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass
class LoadReport:
    """What a run produced: statistics, failures by kind, report files and the database."""

    database: Path | str | None  # a SQLite path or a PostgreSQL URL
    endpoints: list[EndpointStats]
    total: EndpointStats
    failures: list[dict]
    exceptions: int
    files: list[Path]
    server_log: dict | None = None  # from the log of a site started here (see read_server_log)

    def count(self, kind: str) -> int:
        """Failure occurrences of one kind (see :func:`failure_kind`)."""
        return sum(int(row["Occurrences"]) for row in self.failures if failure_kind(row["Error"]) == kind)

    @property
    def refused(self) -> dict[str, int]:
        """Expected refusals, counted apart: the meter's 403s and the rate limits' 429s."""
        counts: dict[str, int] = {}
        for row in self.endpoints:
            found = _REFUSED.search(row.name)
            if found:
                counts[found.group(1)] = counts.get(found.group(1), 0) + row.requests
        return counts

    def problems(self, max_server_errors: int = 0, max_failure_rate: float = 0.01) -> list[str]:
        """Why this run fails its thresholds (empty when it passes)."""
        found = []
        server = self.count("server")
        if self.total.requests <= 0:
            found.append("no requests were made")
        if server > max_server_errors:
            found.append(f"{server} server error(s) or dropped connection(s) (allowed: {max_server_errors})")
        if self.count("invariant"):
            found.append(f"{self.count('invariant')} broken invariant(s) seen by the personas")
        if self.server_log and self.server_log["errors"]:
            found.append(f"the server logged {len(self.server_log['errors'])} error(s), "
                         f"e.g. {self.server_log['errors'][0]}")
        other = self.count("other") + self.exceptions
        if self.total.requests and other / self.total.requests > max_failure_rate:
            found.append(f"{other} other failure(s), {other / self.total.requests:.1%} of requests "
                         f"(allowed: {max_failure_rate:.1%})")
        return found


#: Rows the personas add that are not requests: resends after a dropped keep-alive, checks.
PSEUDO = ("RETRY", "CHECK")


def failure_kind(error: str) -> str:
    """``server`` (5xx, connection), ``invariant`` (a persona's check) or ``other``."""
    if "invariant:" in error:
        return "invariant"
    if "server error" in error or "connection error" in error or re.search(r"\b5\d\d Server Error", error):
        return "server"
    return "other"


def is_loopback(url: str) -> bool:
    """Whether ``url`` is http(s) on this machine (localhost, 127.0.0.0/8 or ::1)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def subscriber_account(n: int) -> tuple[str, str]:
    """Email and password of seeded subscriber ``n``."""
    return SUBSCRIBER_EMAIL.format(n=n), SUBSCRIBER_PASSWORD.format(n=n)


def seed_site(database: Path | str, synthetic: int, subscribers: int) -> None:
    """Seed a site as `gate db seed --synthetic N` and `gate readers add … --subscriber` do."""
    from gate.conf.settings import Config
    from gate.rules.offers import OfferTerms
    from gate.services import accounts, newsletter, offers, orgs, seed, subscriptions
    from gate.storage import events
    from gate.storage.clock import Clock
    from gate.storage.db import open_site_db

    cfg = Config()
    db = open_site_db(database)
    try:
        now = Clock(db).now()
        seed.seed_articles(db)
        seed.seed_schedule(db, now, cfg.preset(cfg.publication.default_preset).tz)
        newsletter.start_schedule(db, cfg, now)
        if synthetic:
            seed.seed_synthetic(db, synthetic, cfg.publication.sections, now)
        seed.seed_demo_accounts(db, cfg, now)
        for n in range(subscribers):
            email, password = subscriber_account(n)
            reader = accounts.create(db, email, password, now)
            events.record(db, "signup", now, reader_id=reader.id, source="loadtest")
            subscriptions.grant(db, cfg, reader.id, cfg.plans[0].id, now, by="loadtest")
        offers.add(db, OfferTerms(FLASH_CODE, "Load test flash sale", "amount", 500, "forever", plans=("monthly",),
                                  cap=FLASH_CAP, source="cli"), now)
        orgs.create(db, "Seat Rush College", SEAT_RUSH_SEATS, now, slug="seat-rush", ip_ranges=["198.18.0.0/15"])
    finally:
        db.close()


def site_nodes(database: Path | str, plan: LoadPlan, directory: Path) -> Nodes:
    """plan.nodes `gate serve` processes over ``database``, each on a free loopback port (not started yet)."""
    ports = [free_port() for _ in range(plan.nodes)]
    # One trusted proxy: each simulated user's X-Forwarded-For is its client address.
    env = site_env(**database_env(database), GATE_SECRET_KEY=secrets.token_hex(32),  # one key for every node
                   GATE_PROXY_COUNT="1", GATE_RATE_LIMITS="on" if plan.rate_limits else "off",
                   GATE_BASE_URL=f"http://{LOOPBACK}:{ports[0]}")  # the site's public origin: the first node
    if plan.preset:
        env["GATE_PRESET"] = plan.preset
    return Nodes(env, directory, plan.nodes, workers=plan.workers, ports=ports)


_ACCESS_STATUS = re.compile(r'" (\d{3}) (?:\d+|-) "')
_SERVER_ERROR = re.compile(r"\[(ERROR|CRITICAL)\]|^Traceback|WORKER TIMEOUT")


def read_server_log(*paths: Path) -> dict:
    """What the servers saw: requests and 5xx from gunicorn's access logs, and error lines."""
    requests = server_errors = 0
    errors: list[str] = []
    for path in paths:
        for line in Path(path).read_text(errors="replace").splitlines():
            status = _ACCESS_STATUS.search(line)
            if status:
                requests += 1
                server_errors += status.group(1).startswith("5")
            elif _SERVER_ERROR.search(line):
                errors.append(line.strip()[:200])
    return {"requests": requests, "5xx": server_errors, "errors": errors}


def locust_command(plan: LoadPlan, hosts: str | tuple[str, ...], out: Path,
                   master: tuple[str, ...] = ()) -> list[str]:
    """The headless Locust command line for ``plan`` against ``hosts`` (the nodes of one site)."""
    hosts = (hosts,) if isinstance(hosts, str) else tuple(hosts)
    spread = ["--gate-targets", ",".join(hosts)] if len(hosts) > 1 else []
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--users", str(plan.users), "--spawn-rate", str(plan.spawn_rate),
        "--run-time", f"{plan.duration}s", "--stop-timeout", "3", "--host", hosts[0], *spread,
        "--csv", str(out / CSV_PREFIX), "--html", str(out / HTML_REPORT), "--only-summary",
        "--gate-subscribers", str(plan.subscribers),
        "--gate-subscriber-email", SUBSCRIBER_EMAIL, "--gate-subscriber-password", SUBSCRIBER_PASSWORD,
        "--gate-flash-code", plan.flash_code, *master, *plan.locust_args,
    ]


def worker_command(master_host: str, master_port: int) -> list[str]:
    """A Locust worker of the master at ``master_host:master_port`` (it gets the options from the master)."""
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker",
            "--master-host", master_host, "--master-port", str(master_port)]


def _stop(process: subprocess.Popen) -> None:
    """Terminate a Locust process, and kill it if it is still there 10 s later."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _finish(process: subprocess.Popen, timeout: float) -> int:
    """Wait for a Locust process; on a timeout or Ctrl-C never leave it running, and re-raise."""
    try:
        return process.wait(timeout=timeout)
    except BaseException:
        _stop(process)
        raise


def run_locust(plan: LoadPlan, hosts: str | tuple[str, ...]) -> int:
    """Run Locust to completion (bounded by the plan's duration); returns the master's exit code.

    With ``plan.locust_workers`` it runs Locust's distributed mode here: a
    master on a free loopback port expecting that many workers, and each
    worker in a process of its own (its log OUT/locust-workerN.log).
    """
    out = Path(plan.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{CSV_PREFIX}_*.csv"):
        stale.unlink()
    master: tuple[str, ...] = ()
    wait = plan.wait_for_workers
    if plan.locust_workers:
        port, wait = free_port(), max(wait, 60)
        master = ("--master", "--expect-workers", str(plan.locust_workers), "--expect-workers-max-wait",
                  str(wait), "--master-bind-host", LOOPBACK, "--master-bind-port", str(port))
    limit = plan.duration + plan.users / max(plan.spawn_rate, 0.1) + wait + 90
    workers: list[subprocess.Popen] = []
    logs = []
    try:
        logs.append(open(out / LOCUST_LOG, "wb"))
        process = subprocess.Popen(locust_command(plan, hosts, out, master), stdout=logs[0],
                                   stderr=subprocess.STDOUT)
        try:
            for n in range(1, plan.locust_workers + 1):
                logs.append(open(out / WORKER_LOG.format(n=n), "wb"))
                workers.append(subprocess.Popen(worker_command(LOOPBACK, port), stdout=logs[-1],
                                                stderr=subprocess.STDOUT))
        except BaseException:
            _stop(process)
            raise
        returncode = _finish(process, limit)
    finally:
        for worker in workers:  # they leave when the master quits; a stray one is stopped
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _stop(worker)
        for handle in logs:
            handle.close()
    return returncode


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_stats(out: Path) -> tuple[list[EndpointStats], EndpointStats]:
    """Per-endpoint rows and the aggregate from Locust's ``*_stats.csv``."""
    rows = []
    with open(Path(out) / f"{CSV_PREFIX}_stats.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append(EndpointStats(
                method=row["Type"], name=row["Name"], requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]), rps=_number(row["Requests/s"]) or 0.0,
                p50=_number(row["50%"]), p95=_number(row["95%"]), p99=_number(row["99%"]),
            ))
    total = next((row for row in rows if row.name == "Aggregated"), None)
    if total is None:
        raise RuntimeError(f"no aggregate row in {out}/{CSV_PREFIX}_stats.csv")
    endpoints = [row for row in rows if row.name != "Aggregated"]
    pseudo = [row for row in endpoints if row.method in PSEUDO]
    if pseudo:  # Locust's aggregate counts them as requests: take them out again
        real = total.requests - sum(row.requests for row in pseudo)
        total = replace(total, requests=real, rps=total.rps * real / max(total.requests, 1))
    return endpoints, total


def read_failures(out: Path) -> tuple[list[dict], int]:
    """Locust's failures (method, name, error, occurrences) and how many script exceptions."""
    out = Path(out)
    failures_csv, exceptions_csv = out / f"{CSV_PREFIX}_failures.csv", out / f"{CSV_PREFIX}_exceptions.csv"
    with open(failures_csv, newline="") as handle:
        failures = list(csv.DictReader(handle))
    exceptions = 0
    if exceptions_csv.exists():
        with open(exceptions_csv, newline="") as handle:
            exceptions = sum(int(row.get("Count") or 0) for row in csv.DictReader(handle))
    return failures, exceptions


def collect(plan: LoadPlan, database: Path | None, returncode: int) -> LoadReport:
    """Read the reports Locust wrote into a :class:`LoadReport`."""
    out = Path(plan.out)
    if not (out / f"{CSV_PREFIX}_stats.csv").exists():
        log = (out / LOCUST_LOG).read_text(errors="replace")[-3000:]
        raise RuntimeError(f"Locust wrote no statistics (exit code {returncode}):\n{log}")
    endpoints, total = read_stats(out)
    failures, exceptions = read_failures(out)
    files = sorted(out.glob(f"{CSV_PREFIX}_*.csv")) + [out / HTML_REPORT]
    return LoadReport(database=database, endpoints=endpoints, total=total, failures=failures,
                  exceptions=exceptions, files=[f for f in files if f.exists()])


def run_loadtest(plan: LoadPlan, workdir: Path) -> LoadReport:
    """Run ``plan``: against its hosts, or a fresh seeded site (kept for the audit).

    The fresh site's database is plan.database (a PostgreSQL URL, checked empty
    by the caller) or a SQLite file in ``workdir``; its nodes log there too.
    """
    if plan.hosts:
        return collect(plan, None, run_locust(plan, plan.hosts))
    database = plan.database or Path(workdir) / "gate.sqlite"
    seed_site(database, plan.synthetic, plan.subscribers)
    plan = replace(plan, flash_code=FLASH_CODE)
    with site_nodes(database, plan, Path(workdir)) as nodes:
        returncode = run_locust(plan, tuple(nodes.urls))
        stopped = [server for server in nodes.servers if not server.running]
        if stopped:
            raise RuntimeError(f"a node stopped during the load test:\n{stopped[0].log_tail()}")
    report = collect(plan, database, returncode)
    report.server_log = read_server_log(*(server.log_path for server in nodes.servers))
    return report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_table(result: LoadReport) -> str:
    """Requests, failures, throughput and p50/p95/p99 per endpoint, then the total."""
    width = max([len(f"{row.method} {row.name}") for row in result.endpoints] + [20])
    lines = [f"{'endpoint':<{width}} {'requests':>9} {'fails':>6} {'req/s':>8} "
             f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"]
    lines.append("-" * len(lines[0]))
    for row in sorted(result.endpoints, key=lambda r: (r.name, r.method)):
        times = (_ms(row.p50), _ms(row.p95), _ms(row.p99)) if row.method not in PSEUDO else ("",) * 3
        lines.append(f"{row.method + ' ' + row.name:<{width}} {row.requests:>9} {row.failures:>6} "
                     f"{row.rps:>8.1f} {times[0]:>7} {times[1]:>7} {times[2]:>7}")
    lines.append("-" * len(lines[0]))
    t = result.total
    lines.append(f"{'total':<{width}} {t.requests:>9} {t.failures:>6} {t.rps:>8.1f} "
                 f"{_ms(t.p50):>7} {_ms(t.p95):>7} {_ms(t.p99):>7}")
    return "\n".join(lines)


def format_failures(result: LoadReport, limit: int = 10) -> str:
    """The most frequent failures, one line each."""
    rows = sorted(result.failures, key=lambda r: -int(r["Occurrences"]))[:limit]
    return "\n".join(f"{int(r['Occurrences']):>7}x {r['Method']} {r['Name']}: {r['Error']}" for r in rows)

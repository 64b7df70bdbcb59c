"""`gate loadtest`: Locust against a fresh site (or your own), a clean table, and the audit."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import click

from gate.cli.base import parsed
from gate.loadtest import run
from gate.rules.timeutil import parse_duration

EPILOG = f"""\b
Only load servers you run yourself. Without --host a fresh site is started
on a free 127.0.0.1 port and stopped afterwards; --host must be loopback
(localhost, 127.0.0.0/8, ::1) unless --allow-remote is given, and even then
only ever point it at servers you own or are allowed to test.

\b
Distributed Locust (one master, many worker processes or machines):
  gate loadtest --master --expect-workers 2 --users 1000 --duration 5m
  gate loadtest --worker                # in each of 2 other terminals
or with Locust itself (the locustfile needs only Locust and the stdlib):
  locust -f {run.LOCUSTFILE} --master --headless -u 1000 -t 5m \\
         --expect-workers 2 --host http://127.0.0.1:8000
  locust -f {run.LOCUSTFILE} --worker --master-host 127.0.0.1
For workers on other machines, give the master --master-bind-host 0.0.0.0
and the workers --master-host MASTER. On one machine, --processes N forks N
Locust workers (Python's load generator uses one core per process).

\b
Several app servers of one site (one database), driven by one command:
  gate loadtest --nodes 2 --locust-workers 2
starts two `gate serve` nodes and a Locust master with two local workers;
requests rotate over the nodes, as behind a proxy without sticky sessions.
  gate loadtest --targets http://127.0.0.1:8001,http://127.0.0.1:8002
loads nodes you run yourself. With GATE_DATABASE_URL set the fresh site is
seeded into that PostgreSQL database, which must hold no site yet, or into a
new schema of it with --fresh-schema (dropped after a passing run).

\b
Reports: OUT/loadtest_stats.csv, _stats_history.csv, _failures.csv,
_exceptions.csv (Locust's --csv), OUT/loadtest.html (--html) and
OUT/locust.log. The run fails (exit 1) on a 5xx or dropped connection
(--max-server-errors), on other failures above --max-failure-rate, on an
invariant a persona saw broken, or on a violation found by `gate audit`;
the site's database is then kept as OUT/gate.sqlite (a PostgreSQL
site stays in its database or schema) for inspection.
"""


class Duration(click.ParamType):
    """A run time such as 60s, 5m or 1h30m (or plain seconds)."""

    name = "duration"

    def convert(self, value, param, ctx) -> int:
        """The duration in whole seconds, at least one."""
        if isinstance(value, int):
            return value
        text = str(value).strip()
        try:
            seconds = int(text) if text.isdigit() else int(parse_duration(text).total_seconds())
        except ValueError:
            self.fail(f"{value!r} is not a duration: use 60s, 5m or 1h30m", param, ctx)
        if seconds < 1 or seconds > timedelta(hours=24).total_seconds():
            self.fail(f"{value!r}: choose between 1s and 24h", param, ctx)
        return seconds


def check_host(host: str | None, allow_remote: bool) -> str | None:
    """Refuse a target that is not this machine, unless remote load was explicitly allowed."""
    if host is None:
        return None
    host = host.rstrip("/")
    if not host.startswith(("http://", "https://")):
        raise click.BadParameter(f"{host!r}: give a URL such as http://127.0.0.1:8000", param_hint="--host")
    if not run.is_loopback(host) and not allow_remote:
        raise click.BadParameter(
            f"{host} is not a loopback address. Load must only target servers you run; "
            "add --allow-remote if this one is yours.", param_hint="--host")
    return host


def check_targets(targets: str | None, host: str | None, allow_remote: bool) -> tuple[str, ...]:
    """The nodes named by --targets, each checked as --host is."""
    if not targets:
        return ()
    if host:
        raise click.BadParameter("give either --host or --targets", param_hint="--targets")
    found = [check_host(target.strip(), allow_remote) for target in targets.split(",") if target.strip()]
    if not found:
        raise click.BadParameter("give one or more URLs separated by commas", param_hint="--targets")
    return tuple(found)


def site_database(fresh_schema: bool) -> tuple[str | None, tuple[str, str] | None]:
    """The fresh site's PostgreSQL URL from GATE_DATABASE_URL (None: a SQLite file), and the schema made for it.

    A database that already holds a site is refused: the run seeds and writes.
    """
    from gate.storage import schemas

    url = parsed("GATE_DATABASE_URL")
    if url is None:
        if fresh_schema:
            raise click.BadParameter("needs GATE_DATABASE_URL (a SQLite run always starts a new file)",
                                     param_hint="--fresh-schema")
        return None, None
    if fresh_schema:
        name, scoped = schemas.create_schema(url, "gate_loadtest")
        click.echo(f"Running in a new schema {name} of GATE_DATABASE_URL.")
        return scoped, (url, name)
    found = {table: count for table, count in schemas.site_rows(url).items() if count}
    if found:
        held = ", ".join(f"{count} {table}" for table, count in found.items())
        raise click.ClickException(f"GATE_DATABASE_URL already holds a site ({held}); the load test seeds "
                                   "and writes, so point it at an empty database or add --fresh-schema")
    return url, None


def audit_database(path: Path | str) -> list:
    """The invariant audit's violations for a site database."""
    from gate import audit
    from gate.conf.settings import Config
    from gate.storage.db import open_site_db

    db = open_site_db(path)
    try:
        return list(audit.run(db, Config()))
    finally:
        db.close()


def keep_database(database: Path, out: Path) -> Path:
    """Copy the site's database (with its WAL) into the report folder for inspection."""
    from gate.storage.db import backup, connect

    kept = out / "gate.sqlite"
    kept.unlink(missing_ok=True)
    db = connect(database)
    try:
        backup(db, kept)
    finally:
        db.close()
    return kept


def _worker(master_host: str, master_port: int) -> None:
    """Be one Locust worker of a distributed run, until the master stops."""
    command = [sys.executable, "-m", "locust", "-f", str(run.LOCUSTFILE), "--worker",
               "--master-host", master_host, "--master-port", str(master_port)]
    click.echo(f"Locust worker for {master_host}:{master_port} (Ctrl-C to stop)")
    raise SystemExit(subprocess.call(command))


def _leave_schema(schema: tuple[str, str] | None, problems: list[str]) -> None:
    """Drop the run's fresh schema after a passing run; keep it (and say where) for a failing one."""
    if schema is None:
        return
    from gate.storage import schemas

    url, name = schema
    if problems:
        click.echo(f"The site is kept in schema {name}: {schemas.schema_url(url, name)}")
    else:
        schemas.drop_schema(url, name, schemas.schema_url(url, name))


def _report(result: run.LoadReport, plan: run.LoadPlan) -> None:
    """Print the table, the throughput, the failures and where the reports are."""
    click.echo(run.format_table(result))
    total = result.total
    refused = ", ".join(f"{count} x {code}" for code, count in sorted(result.refused.items())) or "none"
    click.echo(f"\n{total.requests} requests, {total.rps:.1f} req/s; {total.failures} failed "
               f"({result.count('server')} server errors or dropped connections, "
               f"{result.count('invariant')} broken invariants, {result.count('other')} other); "
               f"expected refusals (counted apart): {refused}")
    if result.server_log:
        log = result.server_log
        click.echo(f"Server log: {log['requests']} requests, {log['5xx']} answered 5xx, "
                   f"{len(log['errors'])} error line(s)")
    if result.exceptions:
        click.echo(f"{result.exceptions} exception(s) in the load script: see {plan.out}/loadtest_exceptions.csv")
    if result.failures:
        click.echo("Failures:\n" + run.format_failures(result))
    click.echo("Reports: " + ", ".join(str(path) for path in result.files))


def _audit(database: Path | None) -> list[str]:
    """Run `gate audit` on the database and print what it found."""
    if database is None:
        click.echo("Audit: skipped (give --database with --host to audit that site).")
        return []
    violations = audit_database(database)
    if not violations:
        click.echo("Audit: clean, no invariant violations.")
        return []
    click.echo(f"Audit: {len(violations)} violation(s):")
    for violation in violations[:20]:
        click.echo(f"  [{violation.kind}] {violation.message}")
    return [f"the audit found {len(violations)} violation(s)"]


@click.command("loadtest", epilog=EPILOG)
@click.option("--users", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Peak number of simulated readers.")
@click.option("--spawn-rate", type=click.FloatRange(min=0.1), default=50.0, show_default=True,
              help="Readers started per second.")
@click.option("--duration", type=Duration(), default="60s", show_default=True,
              help="How long to run: 60s, 5m, 1h30m.")
@click.option("--host", default=None, metavar="URL",
              help="Load a site already running at URL (loopback only) instead of a fresh one.")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --host (only servers you own).")
@click.option("--database", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="With --host: that site's database, to audit after the run.")
@click.option("--targets", default=None, metavar="URL,URL",
              help="Load the nodes of a site already running (loopback only); requests rotate over them.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="gunicorn workers of each node of the fresh site.")
@click.option("--nodes", type=click.IntRange(1, 16), default=1, show_default=True,
              help="`gate serve` processes of the fresh site, on one database.")
@click.option("--fresh-schema", is_flag=True,
              help="With GATE_DATABASE_URL: seed the fresh site into a new schema of that database.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("loadtest-report"),
              show_default=True, help="Folder for the CSV and HTML reports.")
@click.option("--synthetic", type=click.IntRange(0, 100_000), default=500, show_default=True,
              help="Synthetic articles seeded into the fresh site (besides the demo ones).")
@click.option("--subscribers", type=click.IntRange(0, 1000), default=20, show_default=True,
              help="Subscriber accounts seeded for the binge-reading persona.")
@click.option("--preset", default=None, help="Paywall preset of the fresh site (default: the site's).")
@click.option("--rate-limits/--no-rate-limits", default=True, show_default=True,
              help="Keep the fresh site's rate limits (applied per simulated client address).")
@click.option("--max-server-errors", type=click.IntRange(min=0), default=0, show_default=True,
              help="5xx answers and dropped connections allowed before the run fails.")
@click.option("--max-failure-rate", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Share of other failures (unexpected 4xx, script errors) allowed.")
@click.option("--processes", type=click.IntRange(1, 64), default=None,
              help="Fork N Locust worker processes on this machine (Locust's --processes).")
@click.option("--locust-workers", type=click.IntRange(1, 64), default=None,
              help="Locust's distributed mode on this machine: a master and N worker processes.")
@click.option("--master", is_flag=True, help="Run as the master of a distributed Locust run.")
@click.option("--expect-workers", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="With --master: start once this many workers have connected.")
@click.option("--master-bind-host", default="127.0.0.1", show_default=True,
              help="With --master: address to accept workers on (0.0.0.0 for other machines).")
@click.option("--worker", is_flag=True, help="Run as a Locust worker of a master (see below).")
@click.option("--master-host", default="127.0.0.1", show_default=True, help="With --worker: the master.")
@click.option("--master-port", type=click.IntRange(1, 65535), default=5557, show_default=True,
              help="The master's port.")
def loadtest(users, spawn_rate, duration, host, allow_remote, database, targets, workers, nodes, fresh_schema,
             out, synthetic, subscribers, preset, rate_limits, max_server_errors, max_failure_rate, processes,
             locust_workers, master, expect_workers, master_bind_host, worker, master_host, master_port):
    """Load-test the site with Locust personas, report per endpoint and audit the meter."""
    if worker:
        _worker(master_host, master_port)
    if master and processes:
        raise click.BadParameter("use either --master (with separate workers) or --processes",
                                 param_hint="--processes")
    if locust_workers and (master or processes):
        raise click.BadParameter("--locust-workers runs its own master and workers: leave out "
                                 "--master and --processes", param_hint="--locust-workers")
    host = check_host(host, allow_remote)
    hosts = check_targets(targets, host, allow_remote)
    if (host or hosts) and (nodes > 1 or fresh_schema):
        raise click.BadParameter("--nodes and --fresh-schema shape the fresh site: not with --host or --targets",
                                 param_hint="--nodes")
    url, schema = (None, None) if host or hosts else site_database(fresh_schema)
    extra: list[str] = ["--processes", str(processes)] if processes else []
    if master:
        extra += ["--master", "--expect-workers", str(expect_workers), "--expect-workers-max-wait", "120",
                  "--master-bind-host", master_bind_host, "--master-bind-port", str(master_port)]
    plan = run.LoadPlan(users=users, spawn_rate=spawn_rate, duration=duration, host=host, targets=hosts,
                        workers=workers, nodes=nodes, locust_workers=locust_workers or 0, database=url,
                        out=out, synthetic=synthetic, subscribers=subscribers, preset=preset,
                        rate_limits=rate_limits, locust_args=tuple(extra),
                        wait_for_workers=120 if master else 0)
    target = ", ".join(hosts) or host or (
        f"a fresh site ({nodes} node(s) of {workers} gunicorn workers, {synthetic} synthetic articles, "
        f"{'PostgreSQL' if url else 'SQLite'})")
    load = f"{locust_workers} Locust workers" if locust_workers else "Locust"
    click.echo(f"Load test: {users} users (spawning {spawn_rate:g}/s) for {duration}s against {target} "
               f"from {load}; Locust log: {out / run.LOCUST_LOG}")
    problems = ["the run did not finish"]
    try:
        with tempfile.TemporaryDirectory(prefix="gate-loadtest-") as workdir:
            try:
                result = run.run_loadtest(plan, Path(workdir))
            except RuntimeError as error:
                raise click.ClickException(str(error)) from None
            _report(result, plan)
            problems = result.problems(max_server_errors, max_failure_rate)
            problems += _audit(result.database or database)
            if problems and result.database and not url:
                click.echo(f"The site's database is kept at {keep_database(result.database, Path(out))}")
    finally:
        _leave_schema(schema, problems)
    if problems:
        raise click.ClickException("load test failed: " + "; ".join(problems))
    click.echo("Load test passed.")

"""The `gate` command: a thin click layer over the library (FlaskGroup, so `gate run` works too)."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from gate import create_app
from gate.app import clockops, site
from gate.app.db import get_db
from gate.conf import environment
from gate.conf.settings import ConfigError
from gate.rules.timeutil import parse_moment
from gate.services import accounts, mail, newsletter, presets, seed, subscriptions
from gate.storage import events
from gate.storage.clock import Clock, ClockError, parse_step, parse_target
from gate.storage.db import close_thread_connections
from gate.web import newsletter as web_newsletter


def _create_app():
    """Build the app for a CLI command, turning config errors into clean messages."""
    try:
        return create_app()
    except (ConfigError, environment.SettingError) as error:
        raise click.ClickException(f"configuration error:\n{error}") from None


def _environment_help() -> str:
    """The GATE_* table for `gate --help` (click keeps \b paragraphs as written)."""
    return "\b\nEnvironment (booleans: 1/true/yes/on or 0/false/no/off):\n" + environment.table()


@click.group(cls=FlaskGroup, create_app=_create_app, add_version_option=False,
             load_dotenv=False, set_debug_flag=False, epilog=_environment_help())
def main():
    """gate: a metered-paywall and subscription-gate simulator."""


def init_app(app) -> None:
    """Register gate's commands on the app, so `gate` and app.test_cli_runner() see them."""
    from gate.cli.audit import audit
    from gate.cli.loadtest import loadtest
    from gate.cli.simulate import simulate

    for command in (db, readers, billing, clock, newsletter_group, preset, outbox, audit, simulate,
                    loadtest, serve, demo, traffic_group):
        app.cli.add_command(command)


def _now() -> datetime:
    return Clock(get_db()).now()


def _tz():
    return site.config().preset(site.config().publication.default_preset).tz


# --- db -----------------------------------------------------------------------


@click.group()
def db():
    """Create, seed and back up the site database."""


@db.command("init")
@with_appcontext
def db_init():
    """Create the database (or bring its schema up to date)."""
    get_db()
    click.echo(f"Database ready at {current_app.config['DATABASE']}")


@db.command("seed")
@click.option("--synthetic", type=click.IntRange(min=0), default=0,
              help="Also add N generated articles (for load tests).")
@click.option("--schedule/--no-schedule", default=True, show_default=True,
              help="Also add the upcoming articles, dated from today's site time.")
@with_appcontext
def db_seed(synthetic, schedule):
    """Load the demo articles (and, with --synthetic N, N generated ones)."""
    database = get_db()
    count = seed.seed_articles(database)
    click.echo(f"Seeded {count} demo articles.")
    if schedule:
        upcoming = seed.seed_schedule(database, _now(), _tz())
        newsletter.start_schedule(database, site.config(), _now())
        click.echo(f"Scheduled {upcoming} upcoming articles (they appear as the clock passes them).")
    if synthetic:
        added = seed.seed_synthetic(database, synthetic, site.config().publication.sections, _now())
        click.echo(f"Added {added} synthetic articles ({synthetic} requested).")


@db.command("backup")
@click.argument("destination", type=click.Path(dir_okay=False, writable=True))
@with_appcontext
def db_backup(destination):
    """Write a consistent copy of the database to DESTINATION."""
    if os.path.exists(destination):
        raise click.ClickException(f"{destination} exists; choose a new file name")
    from gate.storage.db import backup

    backup(get_db(), destination)
    click.echo(f"Backed up to {destination} (SQLite online backup)")


# --- readers ------------------------------------------------------------------


@click.group()
def readers():
    """Manage reader accounts."""


@readers.command("add")
@click.argument("email")
@click.option("--password", default=None, help="Password (optional: without one, sign in by emailed link).")
@click.option("--subscriber", is_flag=True,
              help="Start a paid-up subscription (test card 4242) on --plan.")
@click.option("--plan", default=None, help="Plan id for --subscriber (default: the first plan).")
@click.option("--admin", is_flag=True, help="Make the account an admin.")
@with_appcontext
def readers_add(email, password, subscriber, plan, admin):
    """Create an account (or update an existing one)."""
    database, cfg = get_db(), site.config()
    plan = plan or cfg.plans[0].id
    try:
        subscriptions.plan_terms(cfg, plan)
        address = accounts.normalize_email(email)
        reader = accounts.by_email(database, address)
        created = reader is None
        if reader:
            accounts.set_flags(database, reader.id, admin=admin or None, password=password)
            events.record(database, "reader_changed", _now(), reader_id=reader.id,
                          admin=admin, password=bool(password), by="cli")
        else:
            reader = accounts.create(database, address, password, _now(), admin=admin)
            events.record(database, "signup", _now(), reader_id=reader.id, source="cli")
    except (accounts.AccountError, subscriptions.CheckoutError) as error:
        raise click.ClickException(str(error)) from None
    if subscriber:
        subscriptions.grant(database, cfg, reader.id, plan, _now(), by="cli")
    sub = subscriptions.current(database, reader.id)
    status = f"subscription {sub.plan_id} {sub.status}" if sub else "no subscription"
    click.echo(f"{'Created' if created else 'Updated'} {reader.email}"
               f" ({status}{', admin' if reader.is_admin or admin else ''})")


@readers.command("list")
@with_appcontext
def readers_list():
    """List accounts."""
    database, now = get_db(), _now()
    for row in database.query("select id from readers order by id"):
        reader = subscriptions.refresh(database, site.config(), accounts.by_id(database, row["id"]), now)
        sub = subscriptions.current(database, reader.id)
        flags = [f"{sub.plan_id} {sub.status}"] if sub else []
        flags += ["comp"] if reader.comp_active(now) else []
        flags += ["admin"] if reader.is_admin else []
        click.echo(f"{reader.email:<36} {'subscriber' if reader.is_subscriber else 'registered':<11}"
                   f" {', '.join(flags)}")


@readers.command("comp")
@click.argument("email")
@click.option("--until", "until", required=True,
              help="Last moment of access (ISO date or date-time, site time zone), or 'never' to remove.")
@with_appcontext
def readers_comp(email, until):
    """Grant complimentary full access until a date (or remove it with --until never)."""
    database = get_db()
    try:
        reader = accounts.by_email(database, accounts.normalize_email(email))
    except accounts.AccountError as error:
        raise click.ClickException(str(error)) from None
    if reader is None:
        raise click.ClickException(f"no account for {email}")
    try:
        moment = None if until == "never" else parse_moment(until, _tz())
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if moment is not None and moment <= _now():
        raise click.ClickException(f"--until must be in the future (site time is {_now().isoformat()})")
    accounts.grant_comp(database, reader.id, moment, by="cli")
    events.record(database, "comp_changed", _now(), reader_id=reader.id, by="cli",
                  **{"from": reader.comp_until.isoformat() if reader.comp_until else None,
                     "to": moment.isoformat() if moment else None})
    click.echo(f"{reader.email}: complimentary access "
               + (f"until {moment.astimezone(_tz()).isoformat(timespec='minutes')}" if moment else "removed"))


# --- billing ------------------------------------------------------------------


@click.group()
def billing():
    """Renewals, retries and expiries of subscriptions."""


@billing.command("tick")
@with_appcontext
def billing_tick():
    """Settle every subscription with a renewal, retry or expiry due now."""
    done = subscriptions.settle_all(get_db(), site.config(), _now())
    click.echo(f"Settled {done['subscriptions']} subscription(s), {done['charges']} charge attempt(s).")


# --- clock --------------------------------------------------------------------


@click.group()
def clock():
    """Show and move the site's simulated clock."""


def _show():
    clock = Clock(get_db())
    state, now = clock.state(), clock.now().astimezone(_tz())
    label = {"real": "real time", "offset": "simulated (running)", "frozen": "simulated (frozen)"}
    click.echo(f"{now.isoformat(timespec='seconds')}  [{label[state.mode]}]")


def _changed(before, how):
    """Record the move, then run everything that fell due while time passed."""
    _report(clockops.moved(before, how, by="cli"))


def _report(done):
    """Say what billing and the newsletters did while time passed."""
    if done["subscriptions"]:
        click.echo(f"Billing: settled {done['subscriptions']} subscription(s), "
                   f"{done['charges']} charge attempt(s).")
    if done["issues"]:
        click.echo(f"Newsletters: {done['issues']} issue(s) sent, {done['messages']} message(s).")


@clock.command("show")
@with_appcontext
def clock_show():
    """Print the site time."""
    _show()


@clock.command("advance")
@click.argument("duration")
@with_appcontext
def clock_advance(duration):
    """Move the clock forward by DURATION (90min, 12h, 31d, 2w, 1mo; at most 100 years ahead)."""
    try:
        done = clockops.advance(parse_step(duration), _tz(), who="cli")
    except (ValueError, ClockError) as error:
        raise click.ClickException(str(error)) from None
    _report(done)
    _show()


@clock.command("set")
@click.argument("moment")
@click.option("--freeze", is_flag=True, help="Stop the clock at MOMENT.")
@with_appcontext
def clock_set(moment, freeze):
    """Jump to MOMENT (ISO 8601; site time zone if none given). Never backward, at most 100 years ahead."""
    try:
        target = parse_target(moment, _tz())
        before = _now()
        Clock(get_db()).set(target, freeze=freeze)
    except (ValueError, ClockError) as error:
        raise click.ClickException(str(error)) from None
    _changed(before, f"set {moment}")
    _show()


@clock.command("reset")
@with_appcontext
def clock_reset():
    """Return to real time (for a fresh demo)."""
    before = _now()
    Clock(get_db()).reset()
    _changed(before, "reset")
    _show()


# --- newsletters --------------------------------------------------------------


@click.group("newsletter")
def newsletter_group():
    """Send newsletter issues and run their schedule."""


@newsletter_group.command("list")
@with_appcontext
def newsletter_list():
    """Show each list with its audience, schedule, readers by status and last issue."""
    database = get_db()
    for item in site.config().newsletters:
        counts = dict(database.execute(
            "select status, count(*) from enrollments where list_id = ? group by status", [item.id]))
        last = newsletter.last_issue(database, item.id)
        when = "weekdays" if item.cadence == "daily" else f"{item.send_day}s"
        click.echo(f"{item.id:<16} {item.audience:<10} {when} {item.send_time}  "
                   + " ".join(f"{k}={counts.get(k, 0)}" for k in newsletter.STATUSES)
                   + (f"  last issue No. {last['number']}" if last else "  no issues yet"))


@newsletter_group.command("send")
@click.argument("list_id")
@click.option("--dry-run", is_flag=True, help="Show what would be sent, send nothing.")
@with_appcontext
def newsletter_send(list_id, dry_run):
    """Send the next issue of LIST now: the articles published since the last issue."""
    try:
        result = web_newsletter.send_next(list_id, _now(), dry_run=dry_run)
    except newsletter.NewsletterError as error:
        raise click.ClickException(str(error)) from None
    if result is None:
        click.echo(f"Nothing new to send on {list_id}: no articles since the last issue.")
    elif dry_run:
        click.echo(f"Would send {list_id} No. {result['issue']} to {result['recipients']} reader(s):")
        for title in result["articles"]:
            click.echo(f"  - {title}")
    else:
        click.echo(f"Sent {list_id} No. {result['issue']} ({result['articles']} article(s)) "
                   f"to {result['sent']} reader(s); {result['skipped']} paused.")


@newsletter_group.command("schedule")
@with_appcontext
def newsletter_schedule():
    """Send every scheduled issue whose time has passed on the site clock."""
    issues = web_newsletter.run_due(_now())
    click.echo(f"{len(issues)} issue(s) sent, {sum(i['sent'] for i in issues)} message(s).")


# --- generated traffic --------------------------------------------------------


@click.group("traffic")
def traffic_group():
    """Generate simulated readers' traffic into the site (tagged synthetic)."""


@traffic_group.command("generate")
@click.option("--visitors", type=int, default=1000, show_default=True,
              help="Simulated readers (at most 2,000).")
@click.option("--days", type=int, default=14, show_default=True,
              help="Past days of simulated time the traffic is spread over (at most 60).")
@click.option("--seed", type=click.IntRange(min=0), default=42, show_default=True,
              help="Random seed: the same seed draws the same readers.")
@with_appcontext
def traffic_generate(visitors, days, seed):
    """Run a simulated population through the active preset and its experiments into the database."""
    from gate.simulate import traffic  # NumPy is loaded only when generating

    cfg, database = site.config(), get_db()
    try:
        done = traffic.generate(database, cfg, cfg.preset(presets.active_name(database, cfg)), _now(),
                                visitors=visitors, days=days, seed=seed, people=traffic.population(cfg.dir))
    except (traffic.TrafficError, ConfigError) as error:
        raise click.ClickException(str(error)) from None
    events.record(database, "admin_action", _now(), admin="cli", action="traffic_generated",
                  target=done.batch, asked=visitors, days=days, **done.counts)
    click.echo(f"Traffic generated: {done.summary()}.")


# --- presets ------------------------------------------------------------------


@click.group()
def preset():
    """List the paywall presets and switch the running site's rules."""


@preset.command("list")
@with_appcontext
def preset_list():
    """List presets; the active one is marked with *."""
    cfg = site.config()
    active = presets.active_name(get_db(), cfg)
    for name, rules in sorted(cfg.presets.items()):
        click.echo(f"{'*' if name == active else ' '} {name:<20} {rules.title}")


@preset.command("use")
@click.argument("name")
@with_appcontext
def preset_use(name):
    """Make NAME the active preset (the running site applies it at once)."""
    try:
        before, after = presets.use(get_db(), site.config(), name, _now(), by="cli")
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Preset {after} is active (was {before}).")


# --- outbox -------------------------------------------------------------------


@click.command("outbox")
@click.option("--to", "to", default=None, help="Only messages to this address.")
@click.option("--limit", type=click.IntRange(1, 500), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the messages as JSON.")
@with_appcontext
def outbox(to, limit, as_json):
    """Print the newest messages the site has sent."""
    rows = mail.messages(get_db(), to=to.strip().lower() if to else None, limit=limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("The outbox is empty.")
    for row in reversed(rows):
        click.echo(f"--- #{row['id']}  {row['created_at']}")
        for key in ("From", "To", "Subject", "Date"):
            click.echo(f"{key}: {row['headers'].get(key, '')}")
        click.echo("")
        click.echo(row["body_text"] or "")


# --- serving ------------------------------------------------------------------


def _gunicorn(app, bind: str, workers: int, threads: int, worker_connections: int = 1000) -> None:
    """Serve ``app`` with gunicorn, in this process."""
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self):
            options = {"bind": bind, "workers": workers, "threads": threads,
                       "worker_class": "gthread", "worker_connections": worker_connections,
                       "accesslog": "-", "timeout": 60,
                       "graceful_timeout": 5}
            # Several sites may run at once (tests, demos): no shared control socket.
            if "control_socket_disable" in self.cfg.settings:
                options["control_socket_disable"] = True
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    Server().run()


@click.command("serve")
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--worker-connections", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Most connections one worker holds at once; past it, other workers accept.")
def serve(bind, workers, threads, worker_connections):
    """Serve the site in production through gunicorn."""
    os.environ.setdefault("GATE_EVENT_BUFFER", "1")  # views are logged by a background writer
    if _parsed("GATE_DEMO"):
        _origin_from_bind(bind)
    app = _create_app()
    if not app.config["BASE_URL"]:
        raise click.ClickException(
            "no public origin: set GATE_BASE_URL (e.g. https://news.example.com) or [site] base_url "
            "in config/site.toml. Links in mail, the feed and the sitemap are built from it, never "
            "from a request's Host header.")
    _gunicorn(app, bind, workers, threads, worker_connections)


def _parsed(name: str):
    """One GATE_* variable, strictly parsed (a bad value is a clean refusal)."""
    try:
        return environment.read()[name]
    except environment.SettingError as error:
        raise click.ClickException(f"configuration error:\n{error}") from None


def _origin_from_bind(bind: str) -> None:
    """In demo mode the --bind address is the origin, unless GATE_BASE_URL names one."""
    if not os.environ.get("GATE_BASE_URL", "").strip():  # links in the inbox reach this server
        os.environ["GATE_BASE_URL"] = f"http://{bind}"


@click.command("demo")
@click.option("--bind", default="127.0.0.1:5000", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", type=click.IntRange(1, 16), default=2, show_default=True)
def demo(bind, workers):
    """Create and seed the database if needed, create demo accounts, and serve the site."""
    os.environ["GATE_DEMO"] = "1"
    os.environ.setdefault("GATE_EVENT_BUFFER", "1")
    _origin_from_bind(bind)
    app = _create_app()
    with app.app_context():
        database = get_db()
        if database["articles"].count == 0:
            click.echo(f"Seeded {seed.seed_articles(database)} demo articles and "
                       f"{seed.seed_schedule(database, _now(), _tz())} upcoming ones.")
        newsletter.start_schedule(database, site.config(), _now())
        people = seed.seed_demo_accounts(database, site.config(), _now())
    close_thread_connections()  # the master keeps no connection into the forked workers
    click.echo(f"\nThe Meridian is at http://{bind}/  (database: {app.config['DATABASE']})")
    click.echo("Demo accounts (log in at /login):")
    for email, password, role in people:
        click.echo(f"  {email:<30} {password:<20} {role}")
    click.echo("Move the clock with `gate clock advance 31d`; switch rules with `gate preset use NAME`.\n")
    sys.stdout.flush()
    _gunicorn(app, bind, workers, 4)


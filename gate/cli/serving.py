"""`gate serve` and `gate demo`: the site through gunicorn, for production or a prepared demo."""

from __future__ import annotations

import gc
import os
import sys
from urllib.parse import urlsplit, urlunsplit

import click

from gate.app import site
from gate.app.db import get_db
from gate.cli.base import build_app, parsed
from gate.cli.sitetime import now, tz
from gate.services import newsletter, seed
from gate.storage.db import close_thread_connections
from gate.storage.engine import is_url

#: `gate serve`'s shape, chosen with `python -m benchmarks.serving` on 1 and 2 cores: see "Choosing
#: workers and threads" in docs/deployment.md. More cores are the rule's extrapolation, not a measurement.
WORKERS_PER_CORE = 1
THREADS = 4
#: Keep-alive connections a worker is expected to hold, per thread: measured best at 64 connections over
#: 2 workers of 4 threads (a cap below the connections gave 1-second tails; docs/deployment.md).
CONNECTIONS_PER_THREAD = 8


def default_workers(cores: int | None = None) -> int:
    """Workers for ``cores`` (this machine's by default): the measured per-core rule, at most 64."""
    return max(1, min(64, WORKERS_PER_CORE * (cores or os.cpu_count() or 1)))


def default_worker_connections(threads: int) -> int:
    """A worker's connection cap: the connections it is expected to hold, plus one per thread.

    A gthread worker accepts every connection it can, so without a cap a few keep-alive
    connections (a proxy's pool) can all land on one worker while another idles. Near its share,
    the others accept the rest; the threads' headroom keeps gunicorn from closing the expected
    keep-alive connections as surplus (it keeps at most the cap minus the threads idle).
    """
    return CONNECTIONS_PER_THREAD * threads + threads


def _gunicorn(app, bind: str, workers: int, threads: int, worker_connections: int | None = None) -> None:
    """Serve ``app`` with gunicorn, in this process (capped per worker by default_worker_connections)."""
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self):
            options = {"bind": bind, "workers": workers, "threads": threads, "worker_class": "gthread",
                       "worker_connections": worker_connections or default_worker_connections(threads),
                       "accesslog": "-", "timeout": 60,
                       "graceful_timeout": 5}
            # Several sites may run at once (tests, demos): no shared control socket.
            if "control_socket_disable" in self.cfg.settings:
                options["control_socket_disable"] = True
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    close_thread_connections()  # the master keeps no connection (nor pool) into the forked workers
    # The app's objects are built once, here: in the permanent generation, no worker's full collection
    # walks them again (with them, one took about 40 ms every few thousand pages; docs/benchmarks.md).
    gc.freeze()
    Server().run()


@click.command("serve")
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", type=click.IntRange(1, 64), default=default_workers(), show_default=(
              f"{default_workers()}: {WORKERS_PER_CORE} per core, {os.cpu_count() or 1} here"),
              help="Gunicorn worker processes.")
@click.option("--threads", type=click.IntRange(1, 64), default=THREADS, show_default=True,
              help="Request threads per worker.")
@click.option("--worker-connections", type=click.IntRange(1, 100_000), default=None, show_default=(
              f"{CONNECTIONS_PER_THREAD + 1} x threads: {default_worker_connections(THREADS)} at {THREADS}"),
              help="Most connections one worker holds at once; past it, other workers accept.")
def serve(bind, workers, threads, worker_connections):
    """Serve the site in production through gunicorn."""
    os.environ.setdefault("GATE_EVENT_BUFFER", "1")  # views are logged by a background writer
    # On PostgreSQL, a connection each request thread keeps, one the event writer keeps, and a spare.
    os.environ.setdefault("GATE_DATABASE_POOL", str(threads + 2))
    if parsed("GATE_DEMO"):
        _origin_from_bind(bind)
    app = build_app()
    if not app.config["BASE_URL"]:
        raise click.ClickException(
            "no public origin: set GATE_BASE_URL (e.g. https://news.example.com) or [site] base_url "
            "in config/site.toml. Links in mail, the feed and the sitemap are built from it, never "
            "from a request's Host header.")
    _gunicorn(app, bind, workers, threads, worker_connections)


def _shown(database: str) -> str:
    """The database as printed: a PostgreSQL URL without its password."""
    parts = urlsplit(str(database))
    if not is_url(database) or parts.password is None:
        return str(database)
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


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
    app = build_app()
    with app.app_context():
        database = get_db()
        if seed.needs_articles(database):
            click.echo(f"Seeded {seed.seed_articles(database)} demo articles and "
                       f"{seed.seed_schedule(database, now(), tz())} upcoming ones.")
        newsletter.start_schedule(database, site.config(), now())
        people = seed.seed_demo_accounts(database, site.config(), now())
    click.echo(f"\nThe Meridian is at http://{bind}/  (database: {_shown(app.config['DATABASE'])})")
    click.echo("Demo accounts (log in at /login):")
    for email, password, role in people:
        click.echo(f"  {email:<30} {password:<20} {role}")
    click.echo("Move the clock with `gate clock advance 31d`; switch rules with `gate preset use NAME`.\n")
    sys.stdout.flush()
    _gunicorn(app, bind, workers, THREADS)

"""The `gate` command: every subcommand, its errors and its help."""

from __future__ import annotations

import click
import pytest

from gate.cli import main
from tests.helpers import METERED, Reader


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from _commands(command, prefix + (name,))


def test_every_command_has_help(app):
    with app.app_context():
        groups = list(_commands(app.cli))
    assert {path[0] for path, _ in groups} >= {"db", "readers", "clock", "preset", "outbox", "serve", "demo"}
    for path, command in groups:
        assert command.help and command.help.strip(), f"gate {' '.join(path)} has no help"


def test_console_script_lists_commands(app, monkeypatch, tmp_path):
    from click.testing import CliRunner

    monkeypatch.setenv("GATE_DATABASE", str(tmp_path / "cli.sqlite"))
    monkeypatch.setenv("GATE_SECRET_KEY", "k")
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in ("db", "clock", "preset", "readers", "serve", "demo", "outbox", "routes", "run"):
        assert f"  {name} " in result.output


def test_db_init_and_seed_synthetic(runner, db):
    assert "Database ready" in runner.invoke(args=["db", "init"]).output
    result = runner.invoke(args=["db", "seed", "--synthetic", "250"])
    assert result.exit_code == 0, result.output
    assert "Seeded 14 demo articles" in result.output
    assert "Scheduled 48 upcoming articles" in result.output
    assert db["articles"].count == 14 + 48 + 250
    again = runner.invoke(args=["db", "seed", "--synthetic", "250"])
    assert "Added 0 synthetic articles" in again.output and "Scheduled 0 upcoming" in again.output
    assert db["articles"].count == 14 + 48 + 250


def test_db_seed_rejects_a_negative_count(runner):
    result = runner.invoke(args=["db", "seed", "--synthetic", "-5"])
    assert result.exit_code == 2 and "-5" in result.output


def test_db_backup(runner, tmp_path):
    target = tmp_path / "copy.sqlite"
    assert runner.invoke(args=["db", "backup", str(target)]).exit_code == 0
    assert target.stat().st_size > 10_000
    refused = runner.invoke(args=["db", "backup", str(target)])
    assert refused.exit_code == 1 and "exists" in refused.output


def test_backup_is_consistent_and_restores(runner, app, tmp_path):
    """SQLite's online backup while the site runs (PostgreSQL's pg_dump: tests/test_db.py)."""
    person = Reader(app.test_client())
    person.signup("kept@example.com")
    person.unlock(METERED)
    target = tmp_path / "backup.sqlite"
    assert runner.invoke(args=["db", "backup", str(target)]).exit_code == 0
    from gate import create_app
    from gate.storage.db import connect

    restored = create_app({"DATABASE": str(target), "SECRET_KEY": app.secret_key, "SERVER_NAME": "meridian.test"})
    copy = connect(target)
    assert copy.execute("pragma integrity_check").fetchone() == ("ok",)
    assert copy.execute("select count(*) from unlocks").fetchone() == (1,)
    copy.close()
    again = Reader(restored.test_client())
    again.client.set_cookie("session", person.client.get_cookie("session", domain="meridian.test").value,
                            domain="meridian.test")
    assert again.article(METERED)["reason"] == "already_unlocked"


def test_readers_add_flags_and_errors(runner, db):
    ok = runner.invoke(args=["readers", "add", "Ed@Example.COM", "--password", "long-enough-1", "--admin"])
    assert ok.exit_code == 0 and "ed@example.com" in ok.output
    assert "Created ed@example.com (no subscription, admin)" in ok.output
    assert db.execute("select is_admin from readers where email = 'ed@example.com'").fetchone() == (1,)
    sub = runner.invoke(args=["readers", "add", "ed@example.com", "--subscriber", "--plan", "annual"])
    assert sub.exit_code == 0 and "Updated ed@example.com (subscription annual active, admin)" in sub.output
    assert db.execute("select count(*) from payments where amount_cents = 12000").fetchone() == (1,)
    listing = runner.invoke(args=["readers", "list"]).output
    assert "ed@example.com" in listing and "subscriber" in listing and "annual active" in listing
    bad_plan = runner.invoke(args=["readers", "add", "ed@example.com", "--subscriber", "--plan", "weekly"])
    assert bad_plan.exit_code == 1 and "no plan called 'weekly'" in bad_plan.output
    bad = runner.invoke(args=["readers", "add", "not-an-email"])
    assert bad.exit_code == 1 and "@-sign" in bad.output
    short = runner.invoke(args=["readers", "add", "x@example.com", "--password", "short"])
    assert short.exit_code == 1 and "8 characters" in short.output
    assert db.execute("select count(*) from readers where email = 'x@example.com'").fetchone() == (0,)


def test_clock_commands(runner):
    assert "2026-11-28T12:00:00-05:00" in runner.invoke(args=["clock", "show"]).output
    advanced = runner.invoke(args=["clock", "advance", "31d"])
    assert advanced.exit_code == 0 and "2026-12-29T12:00:00-05:00" in advanced.output
    jumped = runner.invoke(args=["clock", "set", "2027-03-01T09:00"])
    assert jumped.exit_code == 0 and "2027-03-01T09:00:00-05:00" in jumped.output


@pytest.mark.parametrize("args, message", [
    (["clock", "advance", "soon"], "not a duration"),
    (["clock", "advance", "0d"], "only moves forward"),
    (["clock", "set", "2020-01-01"], "only moves forward"),
    (["clock", "set", "yesterday"], "not a date"),
])
def test_clock_refuses_bad_moves_and_changes_nothing(runner, args, message):
    result = runner.invoke(args=args)
    assert result.exit_code == 1 and message in result.output
    assert "2026-11-28T12:00:00-05:00" in runner.invoke(args=["clock", "show"]).output


def test_clock_reset_returns_to_real_time(runner):
    output = runner.invoke(args=["clock", "reset"]).output
    assert "[real time]" in output


def test_clock_moves_are_seen_by_the_running_site(runner, client):
    runner.invoke(args=["clock", "advance", "2d"])
    assert client.get("/api/health").get_json()["now"].startswith("2026-11-30T17:00")


def test_preset_list_and_use(runner, client):
    listing = runner.invoke(args=["preset", "list"]).output
    for name in ("wpr", "metered", "hard", "freemium", "registration-wall"):
        assert name in listing
    assert "* wpr" in listing
    used = runner.invoke(args=["preset", "use", "hard"])
    assert used.exit_code == 0 and "hard is active" in used.output
    assert "* hard" in runner.invoke(args=["preset", "list"]).output
    data = client.get(f"/api/articles/{METERED}").get_json()
    assert (data["reason"], data["offer"]) == ("subscribers_only", "subscribe")


def test_preset_use_unknown_name_changes_nothing(runner):
    result = runner.invoke(args=["preset", "use", "nope"])
    assert result.exit_code == 1 and "no preset named 'nope'" in result.output
    assert "* wpr" in runner.invoke(args=["preset", "list"]).output


def test_preset_change_is_an_event(runner, db):
    runner.invoke(args=["preset", "use", "metered"])
    row = db.execute("select data from events where type = 'preset_changed'").fetchone()
    assert '"from": "wpr"' in row[0] and '"to": "metered"' in row[0]


def test_outbox_when_empty(runner):
    assert "The outbox is empty." in runner.invoke(args=["outbox"]).output


def test_serve_passes_its_gunicorn_settings(runner, monkeypatch):
    from gunicorn.app.base import BaseApplication

    seen = {}

    def run(self):  # instead of serving: what gunicorn was configured with
        seen.update(workers=self.cfg.workers, threads=self.cfg.threads,
                    worker_connections=self.cfg.worker_connections, bind=self.cfg.bind)

    monkeypatch.setattr(BaseApplication, "run", run)
    monkeypatch.setenv("GATE_EVENT_BUFFER", "1")  # serve sets it if unset; this undoes it afterwards
    monkeypatch.setenv("GATE_BASE_URL", "https://news.example.com")  # serve needs a public origin
    result = runner.invoke(args=["serve", "--bind", "127.0.0.1:9", "--workers", "3", "--threads", "2",
                                 "--worker-connections", "12"])
    assert result.exit_code == 0, result.output
    assert seen == {"workers": 3, "threads": 2, "worker_connections": 12, "bind": ["127.0.0.1:9"]}


def test_serve_freezes_the_built_app_before_the_workers_fork(runner, monkeypatch):
    import gc

    from gunicorn.app.base import BaseApplication

    seen = {}

    def run(self):  # where gunicorn would fork its workers
        seen.update(frozen=gc.get_freeze_count())
        gc.unfreeze()

    monkeypatch.setattr(BaseApplication, "run", run)
    monkeypatch.setenv("GATE_EVENT_BUFFER", "1")
    monkeypatch.setenv("GATE_BASE_URL", "https://news.example.com")
    gc.unfreeze()
    assert runner.invoke(args=["serve", "--bind", "127.0.0.1:9"]).exit_code == 0
    assert seen["frozen"] > 1000  # the app and what it imported, not just a few objects


def test_serve_sizes_the_pool_for_its_threads_the_event_writer_and_a_spare(runner, monkeypatch):
    from gate.cli import serving

    seen = {}
    monkeypatch.setattr(serving, "_gunicorn", lambda app, *args: seen.update(pool=app.config["DATABASE_POOL"]))
    monkeypatch.setenv("GATE_EVENT_BUFFER", "1")  # serve sets it if unset; this undoes it afterwards
    monkeypatch.setenv("GATE_BASE_URL", "https://news.example.com")
    monkeypatch.delenv("GATE_DATABASE_POOL", raising=False)  # serve sets it; undone afterwards
    assert runner.invoke(args=["serve", "--threads", "6"]).exit_code == 0
    assert seen == {"pool": 8}
    monkeypatch.setenv("GATE_DATABASE_POOL", "3")  # a pool set by hand is kept
    assert runner.invoke(args=["serve", "--threads", "6"]).exit_code == 0
    assert seen == {"pool": 3}


def test_serve_refuses_a_worker_connection_cap_of_zero(runner):
    result = runner.invoke(args=["serve", "--worker-connections", "0"])
    assert result.exit_code == 2 and "--worker-connections" in result.output


def test_demo_prepares_a_fresh_database_then_serves(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from gate.cli import serving
    from gate.storage.db import connect

    served = {}
    monkeypatch.setattr(serving, "_gunicorn", lambda app, bind, workers, threads: served.update(
        bind=bind, workers=workers, demo=app.config["DEMO"]))
    database = tmp_path / "fresh.sqlite"
    monkeypatch.setenv("GATE_DATABASE", str(database))
    monkeypatch.setenv("GATE_SECRET_KEY", "demo-test-key")
    for name in ("GATE_DEMO", "GATE_EVENT_BUFFER", "GATE_BASE_URL"):  # demo sets these; undone after
        monkeypatch.setenv(name, "")
    result = CliRunner().invoke(main, ["demo", "--bind", "127.0.0.1:5099"])
    assert result.exit_code == 0, result.output
    assert "Seeded 14 demo articles" in result.output and "Demo accounts" in result.output
    assert served == {"bind": "127.0.0.1:5099", "workers": 2, "demo": True}
    db = connect(database)
    articles, readers = db["articles"].count, db["readers"].count
    assert articles >= 14 and readers >= 3
    again = CliRunner().invoke(main, ["demo", "--bind", "127.0.0.1:5099"])  # a second start reuses it
    assert again.exit_code == 0 and "Seeded" not in again.output, again.output
    assert (db["articles"].count, db["readers"].count) == (articles, readers)

"""The database: migrations, pragmas, the instance secret and events."""

from __future__ import annotations

import pytest

from gate import create_app
from gate.storage import events, migrations
from gate.storage.db import connect, open_site_db


def test_schema_is_migrated_once(tmp_path):
    path = tmp_path / "m.sqlite"
    db = open_site_db(path)
    applied = [row["name"] for row in db.rows("select name from _sqlite_migrations order by id")]
    assert applied == [function.__name__ for function in migrations.MIGRATIONS]
    open_site_db(path).close()
    assert [row["name"] for row in db.rows("select name from _sqlite_migrations order by id")] == applied
    assert migrations.pending(db) == []
    db.close()


def test_wal_busy_timeout_and_foreign_keys(tmp_path):
    db = open_site_db(tmp_path / "p.sqlite")
    assert db.journal_mode == "wal"
    assert db.execute("pragma foreign_keys").fetchone()[0] == 1
    assert db.execute("pragma busy_timeout").fetchone()[0] >= 5000
    db.close()


def test_unlock_uniqueness_is_in_the_schema(tmp_path):
    db = open_site_db(tmp_path / "u.sqlite")
    row = {"meter_key": "reader:1", "slug": "a", "window_key": "month:2026-11",
           "unlocked_at": "2026-11-02T00:00:00.000000+00:00"}
    db["unlocks"].insert(row)
    import sqlite3

    with pytest.raises(sqlite3.IntegrityError):
        db["unlocks"].insert(row)
    db.close()


def test_database_path_and_secret_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GATE_DATABASE", str(tmp_path / "env.sqlite"))
    monkeypatch.setenv("GATE_SECRET_KEY", "from-env")
    app = create_app()
    assert app.config["DATABASE"] == str(tmp_path / "env.sqlite")
    assert app.secret_key == "from-env"
    assert (tmp_path / "env.sqlite").exists()


def test_secret_key_is_generated_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("GATE_SECRET_KEY", raising=False)
    config = {"DATABASE": str(tmp_path / "s.sqlite")}
    first = create_app(config)
    first.instance_path = str(tmp_path / "instance")
    from gate import _instance_secret

    key = _instance_secret(str(tmp_path / "instance"))
    assert len(key) == 64 and key == _instance_secret(str(tmp_path / "instance"))
    assert (tmp_path / "instance" / "secret_key").stat().st_mode & 0o077 == 0


def test_unknown_event_types_are_refused(tmp_path):
    db = open_site_db(tmp_path / "e.sqlite")
    from datetime import datetime, timezone

    with pytest.raises(events.UnknownEvent):
        events.record(db, "made_up", datetime.now(timezone.utc))
    events.record(db, "signup", datetime(2026, 1, 1, tzinfo=timezone.utc), reader_id=None, source="t")
    assert db.execute("select count(*) from events where type = 'signup'").fetchone()[0] == 1
    assert events.recent(db)[0]["data"] == {"source": "t"}
    db.close()


def test_connect_creates_missing_folders(tmp_path):
    db = connect(tmp_path / "deep" / "er" / "x.sqlite")
    db.close()
    assert (tmp_path / "deep" / "er" / "x.sqlite").exists()

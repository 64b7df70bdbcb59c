"""The database: migrations, pragmas, the instance secret and events."""

from __future__ import annotations

import pytest

from gate import create_app
from gate.storage import events, migrations
from gate.storage.db import MMAP_BYTES, connect, open_site_db


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


def test_reads_go_through_a_memory_map_and_see_every_commit_of_another_connection(tmp_path):
    """The map covers the file as it grows and as checkpoints move pages from the WAL into it."""
    path = tmp_path / "mapped.sqlite"
    reader, writer = connect(path), connect(path)
    assert reader.execute("pragma mmap_size").fetchone()[0] == MMAP_BYTES
    writer.execute("create table notes (n integer primary key, text text)")
    total = 0
    for batch in range(4):
        writer.conn.executemany("insert into notes (text) values (?)", [("x" * 500,)] * 2000)
        total += 2000
        assert reader.execute("select count(*), sum(length(text)) from notes").fetchone() == (total, 500 * total)
        if batch % 2:
            writer.execute("pragma wal_checkpoint(truncate)")
            assert reader.execute("select count(*) from notes").fetchone()[0] == total
    assert path.stat().st_size > 4 * 2000 * 500  # read back through the map, far past its first size
    reader.close()
    writer.close()


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


def test_a_command_that_loses_the_race_for_the_secret_keeps_the_winners_key(tmp_path, monkeypatch):
    import gate

    folder = tmp_path / "instance"
    real = gate.secrets.token_hex

    def drawn_while_another_process_links_its_key(size):
        (folder / "secret_key").write_text("a" * 64)  # the other process was first
        return real(size)

    monkeypatch.setattr(gate.secrets, "token_hex", drawn_while_another_process_links_its_key)
    assert gate._instance_secret(str(folder)) == "a" * 64
    assert sorted(path.name for path in folder.iterdir()) == ["secret_key"]  # no draft left behind


def test_commands_started_at_once_on_a_fresh_instance_share_one_key(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    import gate

    def started(folder, start):
        start.wait()
        return gate._instance_secret(folder)

    for attempt in range(20):
        folder, start = str(tmp_path / f"instance{attempt}"), Barrier(8)
        with ThreadPoolExecutor(8) as pool:
            keys = set(pool.map(started, [folder] * 8, [start] * 8))
        assert len(keys) == 1 and len(keys.pop()) == 64


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


def _some_history(db) -> list[tuple]:
    """A reader, an unlock and three events, as a site writes them; the rows a backup must keep."""
    reader = db.insert("readers", {"email": "kept@example.com", "session_token": "t", "created_at": "2026-11-28"})
    db.insert("unlocks", {"meter_key": f"reader:{reader}", "slug": "a", "window_key": "month:2026-11",
                          "unlocked_at": "2026-11-28T17:00:00.000000+00:00"})
    events.record_rows(db, [("2026-11-28T17:00:00.000000+00:00", "article_view", reader, None, f"s{n}", "{}")
                            for n in range(3)])
    return _rows(db)


def _rows(db) -> list[tuple]:
    return [tuple(row.values()) for table in ("readers", "unlocks", "events")
            for row in db.rows(f"select * from {table} order by id")]


def test_backup_restores_the_same_rows(backend, tmp_path, request):
    """SQLite: an online-backup file. PostgreSQL: a pg_dump that pg_restore loads into a fresh database."""
    import subprocess
    import uuid
    from urllib.parse import urlsplit

    from gate.storage.db import backup, open_database, pg_tool

    expected = _some_history(backend)
    target = tmp_path / "backup.dump"
    how = backup(backend, target)
    if backend.dialect == "sqlite":
        assert how == "SQLite online backup"
        copy = open_database(target)
        assert _rows(copy) == expected
        copy.close()
        return
    import psycopg

    assert "pg_dump custom format" in how and target.stat().st_size > 1000
    server, name = request.getfixturevalue("pg_url"), f"gate_restore_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    try:
        restored = urlsplit(server)._replace(path=f"/{name}").geturl()
        done = subprocess.run([pg_tool("pg_restore"), "--no-owner", f"--dbname={restored}", str(target)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        schema = backend.scalar("select current_schema()")
        with psycopg.connect(restored, autocommit=True, options=f"-csearch_path={schema}") as conn:
            found = []
            for table in ("readers", "unlocks", "events"):
                found += [tuple(row) for row in conn.execute(f"select * from {table} order by id").fetchall()]
        assert found == expected
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"drop database {name} with (force)")


def test_a_failed_pg_dump_leaves_no_file_and_says_why(pg_database, tmp_path, monkeypatch):
    from gate.storage import db as storage_db

    monkeypatch.setattr(storage_db, "pg_tool", lambda name: "false")  # a dump that fails at once
    target = tmp_path / "broken.dump"
    target.write_text("partial")
    db = storage_db.open_database(pg_database)
    try:
        with pytest.raises(RuntimeError, match="pg_dump failed"):
            storage_db.backup(db, target)
    finally:
        db.close()
    assert not target.exists()

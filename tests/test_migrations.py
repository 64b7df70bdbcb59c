"""Migrations: one list, the same schema on SQLite and PostgreSQL, and old SQLite files upgrade in place."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from gate.storage import migrations
from gate.storage.db import connect, open_database, open_site_db

#: A database made by the sqlite-utils migrations m001…m013 (before this list), as `iterdump` wrote it.
OLD_FILE = Path(__file__).parent / "data" / "gate-m013.sql"
NAMES = [function.__name__ for function in migrations.MIGRATIONS]
#: SQLite's FTS5 tables and PostgreSQL's tsvector column: the one place the engines' schemas differ.
SEARCH_ONLY = {"articles_fts", "articles_fts_config", "articles_fts_data", "articles_fts_docsize",
               "articles_fts_idx"}
TYPES = {"INTEGER": "integer", "bigint": "integer", "TEXT": "text", "text": "text", "REAL": "real",
         "double precision": "real"}


def sqlite_schema(db) -> dict:
    """{table: [(column, type, nullable)]} and {index: (table, unique)} of a SQLite database."""
    tables = [row["name"] for row in db.rows("select name from sqlite_master where type = 'table'"
                                            " and name not like 'sqlite_%' order by name")]
    columns = {table: [(c["name"], TYPES[c["type"]], not (c["notnull"] or c["pk"]))
                       for c in db.rows(f"pragma table_info({table})")]
               for table in tables if table not in SEARCH_ONLY}
    indexes = {i["name"]: (table, bool(i["unique"])) for table in tables
               for i in db.rows(f"pragma index_list({table})") if i["origin"] == "c"}
    return {"columns": columns, "indexes": indexes}


def postgres_schema(db) -> dict:
    """The same picture of a PostgreSQL schema, from information_schema and pg_indexes."""
    columns: dict[str, list] = {}
    for c in db.rows("select table_name, column_name, data_type, is_nullable from information_schema.columns"
                     " where table_schema = current_schema() order by table_name, ordinal_position"):
        if (c["table_name"], c["column_name"]) != ("articles", "search"):
            columns.setdefault(c["table_name"], []).append(
                (c["column_name"], TYPES[c["data_type"]], c["is_nullable"] == "YES"))
    indexes = {i["indexname"]: (i["tablename"], " unique " in i["indexdef"].lower())
               for i in db.rows("select indexname, tablename, indexdef from pg_indexes"
                                " where schemaname = current_schema() and indexname like 'idx_%'")
               if i["indexname"] != "idx_articles_search"}
    return {"columns": dict(sorted(columns.items())), "indexes": indexes}


def old_file(tmp_path) -> Path:
    """A copy of the database the sqlite-utils migrations made."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_FILE.read_text())
    conn.close()
    return path


@pytest.fixture
def restore_migrations():
    """Keep a test's extra migration out of the shared list."""
    saved = list(migrations.MIGRATIONS)
    yield
    migrations.MIGRATIONS[:] = saved


def test_a_fresh_database_has_the_same_tables_and_columns_on_both_engines(tmp_path, pg_empty):
    lite, pg = open_site_db(tmp_path / "fresh.sqlite"), open_site_db(pg_empty)
    try:
        assert postgres_schema(pg) == sqlite_schema(lite)
        assert {"readers", "unlocks", "subscriptions", "deliveries", "_sqlite_migrations"} <= \
            set(sqlite_schema(lite)["columns"])
        assert pg.scalar("select data_type from information_schema.columns where table_name = 'articles'"
                         " and column_name = 'search' and table_schema = current_schema()") == "tsvector"
    finally:
        lite.close()
        pg.close()


def sqlite_details(db) -> dict:
    """Everything SQLite knows of a schema: objects, columns with defaults, indexes with columns, foreign keys."""
    details = {"objects": db.rows("select type, name, tbl_name from sqlite_master order by type, name")}
    for table in [row["name"] for row in db.rows("select name from sqlite_master where type = 'table'")]:
        # sqlite-utils' transform of readers re-quoted is_admin's default: '0' and 0 mean the same
        details[table] = [{**column, "dflt_value": str(column["dflt_value"]).strip("'")}
                          for column in db.rows(f"pragma table_info({table})")]
        details[table, "indexes"] = sorted(
            (index["name"], index["unique"], [c["name"] for c in db.rows(f"pragma index_info({index['name']})")])
            for index in db.rows(f"pragma index_list({table})"))
        details[table, "foreign keys"] = db.rows(f"pragma foreign_key_list({table})")
    return details


def test_a_fresh_sqlite_database_matches_one_the_sqlite_utils_migrations_made(tmp_path):
    # Nothing changes for SQLite users: the same columns, types, defaults, keys, indexes and triggers.
    fresh, old = open_site_db(tmp_path / "fresh.sqlite"), open_site_db(old_file(tmp_path))
    try:
        assert sqlite_details(fresh) == sqlite_details(old)
    finally:
        fresh.close()
        old.close()


def test_an_old_sqlite_file_upgrades_in_place_keeping_its_data_and_search(tmp_path, restore_migrations):
    path = old_file(tmp_path)
    db = connect(path)
    later = NAMES[NAMES.index("m013_synthetic_readers") + 1:]  # the migrations written since the switch
    assert [function.__name__ for function in migrations.pending(db)] == later
    assert migrations.apply(db) == later

    @migrations.migration
    def m999_a_later_change(db):
        """A migration added after the switch from sqlite-utils."""
        migrations.ddl(db, "alter table readers add column nickname TEXT")
    assert migrations.apply(db) == ["m999_a_later_change"]
    assert [row["name"] for row in db.rows("select name from _sqlite_migrations where migration_set = 'gate'"
                                           " order by id")] == NAMES + ["m999_a_later_change"]
    assert db.first("select email, nickname, synthetic from readers") == \
        {"email": "old@example.com", "nickname": None, "synthetic": 0}
    assert db.scalar("select count(*) from unlocks") == 1
    assert db.scalar("select rowid from articles_fts where articles_fts match 'lighthouse'") == 1
    db.close()


def test_rerunning_the_migrations_is_a_no_op(backend_target):
    db = open_site_db(backend_target)
    try:
        assert migrations.pending(db) == []
        assert migrations.apply(db) == []
        assert db.scalar("select count(*) from _sqlite_migrations") == len(NAMES)
    finally:
        db.close()


def test_a_failing_migration_changes_nothing_and_stays_pending(backend_target, restore_migrations):
    @migrations.migration
    def m998_half_done(db):
        """Creates a table, then fails."""
        migrations.ddl(db, "create table half (id INTEGER PRIMARY KEY)")
        raise RuntimeError("broken migration")

    db = open_database(backend_target)
    try:
        with pytest.raises(RuntimeError, match="broken migration"):
            migrations.apply(db)
        assert not db.has_table("half")
        assert [function.__name__ for function in migrations.pending(db)] == ["m998_half_done"]
    finally:
        db.close()


def test_processes_starting_together_migrate_once_on_postgresql(pg_empty):
    errors, start = [], threading.Barrier(4)

    def starter():
        """One process's start-up: open and migrate."""
        start.wait()
        try:
            open_site_db(pg_empty, 8).close()
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=starter) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    db = open_database(pg_empty)
    assert [r["name"] for r in db.rows("select name from _sqlite_migrations order by id")] == NAMES
    db.close()


@pytest.mark.parametrize(("sqlite", "postgresql"), [
    ("id INTEGER PRIMARY KEY, n INTEGER", "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT"),
    ("offset_seconds REAL, key TEXT PRIMARY KEY", "offset_seconds DOUBLE PRECISION, key TEXT PRIMARY KEY"),
])
def test_ddl_is_written_once_in_sqlite_type_words(sqlite, postgresql):
    seen = []

    class Recorder:
        """Just enough of the seam to capture a statement."""

        dialect = "postgresql"

        def execute(self, sql):
            seen.append(sql)

    migrations.ddl(Recorder(), f"create table t ({sqlite})")
    assert seen == [f"create table t ({postgresql})"]

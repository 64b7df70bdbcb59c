"""The engines a benchmark runs on: SQLite files, and databases on a PostgreSQL server.

PostgreSQL comes from GATE_TEST_DATABASE_URL or GATE_DATABASE_URL (a benchmark creates its own
databases on that server and drops them at the end); without either, :func:`postgres_engine`
starts a throwaway cluster with tools/pg-local when the PostgreSQL server binaries are installed
and stops it afterwards; otherwise the engine is skipped, saying why.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sqlite3
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

CHECKOUT = Path(__file__).resolve().parents[1]
PG_LOCAL = CHECKOUT / "tools" / "pg-local"
NO_POSTGRES = "skipped: no GATE_TEST_DATABASE_URL / GATE_DATABASE_URL"



@dataclass
class Engine:
    """One engine of the run: how to make a fresh site database, or why it is skipped."""

    name: str
    server_url: str | None = None  # PostgreSQL: the server to create databases on
    skipped: str | None = None
    port: int | None = None  # PostgreSQL on this machine: its listening port, to find its processes
    made: list[str] = field(default_factory=list)

    def database(self, directory: Path, label: str, template: dict | None = None) -> dict[str, str]:
        """A new site database, empty or a copy of ``template``'s: the environment that points gate at it."""
        if self.server_url is None:
            path = directory / f"{label}.sqlite"
            if template:
                with contextlib.closing(sqlite3.connect(template["GATE_DATABASE"])) as source, \
                        contextlib.closing(sqlite3.connect(path)) as copy:
                    source.backup(copy)
            return {"GATE_DATABASE": str(path)}
        import psycopg

        name = f"gate_bench_{label}_{os.getpid()}"
        copied = f' template "{urllib.parse.urlsplit(template["GATE_DATABASE_URL"]).path[1:]}"' if template else ""
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}"')
            conn.execute(f'create database "{name}"{copied}')
        self.made.append(name)
        return {"GATE_DATABASE_URL": with_database(self.server_url, name)}

    def drop_databases(self) -> None:
        """Drop every database this run created (after its servers stopped)."""
        if not self.made:
            return
        import psycopg

        with psycopg.connect(self.server_url, autocommit=True) as conn:
            for name in self.made:
                conn.execute(f'drop database if exists "{name}" with (force)')
        self.made.clear()


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead of its own."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def postgres_installed() -> bool:
    """Whether tools/pg-local can start a server here (the Debian postgresql package)."""
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


@contextlib.contextmanager
def postgres_engine(directory: Path, start_local: bool = True) -> Iterator[Engine]:
    """PostgreSQL from the environment, else a throwaway tools/pg-local cluster, else skipped."""
    url = os.environ.get("GATE_TEST_DATABASE_URL") or os.environ.get("GATE_DATABASE_URL")
    started = None
    if not url and start_local and postgres_installed():
        started = directory / "pg"
        directory.chmod(0o711)  # the server runs as `postgres` when we are root: it must reach its folder
        done = subprocess.run([str(PG_LOCAL), "start", str(started)], capture_output=True, text=True,
                              timeout=120)
        if done.returncode:
            yield Engine("postgresql", skipped=f"skipped: tools/pg-local could not start: "
                                               f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
            subprocess.run([str(PG_LOCAL), "stop", str(started)], capture_output=True, timeout=120)
            return
        url = done.stdout.strip()
    if not url:
        yield Engine("postgresql", skipped=NO_POSTGRES + (
            " (and no PostgreSQL server installed for tools/pg-local)" if start_local else ""))
        return
    # Only a server on this machine has processes to read: a local one on a remote server's port is another.
    port = (urllib.parse.urlsplit(url).port or 5432) if on_loopback(url) else None
    engine = Engine("postgresql", server_url=url, port=port)
    try:
        yield engine
    finally:
        engine.drop_databases()
        if started is not None:
            subprocess.run([str(PG_LOCAL), "stop", str(started)], capture_output=True, timeout=120)


def on_loopback(url: str) -> bool:
    """Whether a database URL names a server on this machine over TCP: ``localhost`` or a loopback address
    (a socket URL has no port to find its server by)."""
    host = urllib.parse.urlsplit(url).hostname
    if host is None:  # a socket URL, or no URL
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost
        return False


def postgres_master(port: int | None) -> int | None:
    """The process id of the PostgreSQL server listening on ``port``, or None when it can't be seen."""
    if port is None:
        return None
    try:
        listeners = [c.pid for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid]
    except psutil.AccessDenied:  # not root: the server's processes can't be seen
        return None
    return listeners[0] if listeners else None


def process_tree_cpu(pid: int | None) -> dict[int, float]:
    """CPU seconds so far of process ``pid`` and each of its children (a server's backends), by process id."""
    used = {}
    if pid is None:
        return used
    try:
        master = psutil.Process(pid)
        for process in [master, *master.children()]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:  # a backend that ended meanwhile
                continue
            used[process.pid] = times.user + times.system
    except psutil.NoSuchProcess:
        pass
    return used


def postgres_cpu(port: int | None) -> dict[int, float]:
    """CPU seconds so far of every process of the PostgreSQL server listening on ``port``."""
    return process_tree_cpu(postgres_master(port))


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots (a process new since ``before`` counts from zero)."""
    return sum(max(0.0, value - before.get(pid, 0.0)) for pid, value in after.items())

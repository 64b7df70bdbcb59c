"""One server in a child process: started on a free loopback port, awaited, stopped within a bound.
Several of them (:class:`Nodes`) serve one site from one database, as app servers behind a proxy do.

The load test, the HTTP benchmarks and the tests that need a real server
(browser journeys, the crash test, the wheel test) all start it here. The
server is always a separate process, started through the `gate` entry point
(or another command, such as the benchmark's bare app): nothing here
imports the Flask app, so this module sits in the loadtest layer with
rules, conf, storage and services below it. Everything listens on
127.0.0.1 only, and every wait has a deadline.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from gate.storage.engine import is_url

LOOPBACK = "127.0.0.1"
#: Seconds a server gets to answer its ready path, and to shut down gracefully before SIGKILL.
START_TIMEOUT, STOP_GRACE = 30.0, 15.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def gate_command() -> list[str]:
    """The `gate` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("gate")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from gate.cli import main; main()"]


def site_env(**settings: str) -> dict[str, str]:
    """This process's environment without any GATE_* variable, plus ``settings``.

    A child site is then configured by what its caller says and nothing a
    developer happens to have exported in the shell.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATE_")}
    env.update(settings)
    return env


def database_env(target: str | Path) -> dict[str, str]:
    """The setting that points a child site at ``target``: GATE_DATABASE_URL for a URL, else GATE_DATABASE."""
    return {"GATE_DATABASE_URL": str(target)} if is_url(target) else {"GATE_DATABASE": str(target)}


class ServerProcess:
    """A server child process on loopback, its output in a log file, in a process group of its own.

    Its own group lets :meth:`kill` reach the master and its workers at once
    (a power cut, for the crash test) and lets :meth:`stop` leave no worker
    behind when the master hangs.
    """

    def __init__(self, command: Sequence[str], env: Mapping[str, str], log_path: Path, port: int,
                 *, ready: str = "/api/health", cwd: Path | None = None) -> None:
        self.command, self.env, self.cwd = list(command), dict(env), cwd
        self.log_path, self.port, self.ready = Path(log_path), port, ready
        self.url = f"http://{LOOPBACK}:{port}"
        self.process: subprocess.Popen | None = None
        self._log = None

    @classmethod
    def gate_serve(cls, env: Mapping[str, str], log_path: Path, *, workers: int = 1,
                   options: Sequence[str] = (), port: int | None = None,
                   gate: Sequence[str] | None = None, cwd: Path | None = None) -> "ServerProcess":
        """`gate serve` with ``workers`` gunicorn workers on ``port`` or a free one (not started yet)."""
        port = port or free_port()
        command = [*(gate or gate_command()), "serve", "--bind", f"{LOOPBACK}:{port}",
                   "--workers", str(workers), *options]
        return cls(command, env, log_path, port, cwd=cwd)

    def start(self, timeout: float = START_TIMEOUT) -> "ServerProcess":
        """Start the server and wait until its ready path answers 200 (or raise with its log)."""
        if self.running:  # a second child would hold the port and outlive every stop()
            raise RuntimeError(f"the server at {self.url} is already running")
        self._close_log()
        self._log = open(self.log_path, "ab")  # appended: a restart keeps the first run's lines
        self.process = subprocess.Popen(self.command, env=self.env, cwd=self.cwd, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_until_up(timeout)
        return self

    def _wait_until_up(self, timeout: float) -> None:
        """Poll the ready path until it answers 200, the process exits or the time is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(self.url + self.ready, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.url} did not come up ({' '.join(self.command[-6:])}):\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        """Whether the server process is still alive."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, size: int = 3000) -> str:
        """The end of the server's log."""
        return self.log_path.read_text(errors="replace")[-size:] if self.log_path.exists() else ""

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM (gunicorn's graceful shutdown), then SIGKILL to the whole group after ``grace`` s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
        self._close_log()

    def kill(self) -> None:
        """kill -9 the master and every worker at once, as a power cut would, and reap the master."""
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._close_log()

    def _signal_group(self, signum: int) -> None:
        """Signal the server's process group, only while its leader is unreaped (its id not reusable)."""
        if self.process.returncode is None:
            try:
                os.killpg(self.process.pid, signum)
            except ProcessLookupError:
                pass

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Nodes:
    """``count`` `gate serve` nodes of one site: one database, one secret key, one public origin.

    Each node listens on its own loopback port, as app servers behind a
    proxy do; ``env`` must carry what they share (the database, the secret
    key, GATE_BASE_URL). They start one after the other (the first runs
    any pending migration) and stop together.
    """

    def __init__(self, env: Mapping[str, str], directory: Path, count: int = 2, *, workers: int = 1,
                 options: Sequence[str] = (), ports: Sequence[int] | None = None) -> None:
        ports = list(ports or [free_port() for _ in range(count)])
        if count < 1 or len(ports) != count:
            raise ValueError(f"{count} node(s) need as many ports, got {len(ports)}")
        self.servers = [ServerProcess.gate_serve(env, Path(directory) / f"node{n}.log", workers=workers,
                                                 options=options, port=port)
                        for n, port in enumerate(ports, start=1)]

    @property
    def urls(self) -> list[str]:
        """Each node's origin, http://127.0.0.1:PORT."""
        return [server.url for server in self.servers]

    def start(self, timeout: float = START_TIMEOUT) -> "Nodes":
        """Start every node and wait for each; if one fails, stop the others and raise."""
        try:
            for server in self.servers:
                server.start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node (each within its bound)."""
        for server in self.servers:
            server.stop()

    def __enter__(self) -> "Nodes":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

"""Unlock throughput with 1, 2 and 4 server processes, on SQLite and on PostgreSQL.

Run with `python -m benchmarks.scaling [--quick]` from the checkout (`make bench` runs it). For
each engine, one site is seeded (`gate db seed`, the default ``wpr`` preset: three articles a
month for a registered reader) and two hundred distinct readers sign up on it over HTTP (not timed).
For each process count, a fresh copy of that site (its readers' sessions still valid, their
meters empty) is served by one `gate serve` with that many **gunicorn workers** (4 threads
each, each worker capped near its share of the connections, as the HTTP benchmark does); then
a load generator in its own process sends every reader's unlocks of
limit + 1 different articles over 32 keep-alive connections, readers interleaved, and counts
the answers. Every reader must be granted exactly its limit and refused the one past it: the
grants are counted in the answers and in the database, and must both equal readers x limit.

Throughput is reported as a ratio to the single-process figure of the same engine in the same
run, never as a wall-clock limit. Where the time goes is measured with psutil: CPU seconds of
the gunicorn workers, of the load generator, and of the PostgreSQL server's processes, per
unlock request; their sum over the wall time and the cores says how busy the machine was.

PostgreSQL comes from GATE_TEST_DATABASE_URL or GATE_DATABASE_URL (each run creates and drops
its own databases on that server); without either, a throwaway cluster is started with
tools/pg-local when the PostgreSQL server binaries are installed, and stopped at the end;
otherwise the PostgreSQL rows say why they were skipped. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import psutil

from benchmarks.bench import arguments, percentile
from benchmarks.engines import Engine, postgres_cpu, postgres_engine, spent
from benchmarks.httpbench import USER_AGENT, Browser, _entry_point, in_threads, run_builtin
from gate.loadtest.server import ServerProcess, free_port, gate_command, site_env

PROCESSES = (1, 2, 4)
READERS = 200
THREADS = 4
CONNECTIONS = 32
PRESET = "wpr"  # the default preset: three articles a month for a registered reader
SETUP_THREADS = 8
ROUNDS = 2  # each process count is measured this many times, in alternating order


# --- the site -------------------------------------------------------------------------


def gate_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    """Run a `gate` command against the site in ``env``."""
    return subprocess.run([*gate_command(), *args], env=env, capture_output=True, text=True, timeout=300)


def prepare(env: dict) -> str | None:
    """Create the site database and seed the demo articles; returns why not (the command's own words), or None."""
    args = ("db", "seed", "--no-schedule")  # seeding migrates first
    done = gate_cli(env, *args)
    if done.returncode:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        return f"skipped: `gate {' '.join(args)}` failed: {lines[-1]}"
    return None


def worker_connections(connections: int, workers: int) -> int:
    """Each worker's share of the connections plus a thread's worth (see httpbench.worker_connections)."""
    return -(-connections // workers) + THREADS


def sign_up(url: str, email: str) -> dict:
    """A new reader signed up over HTTP: its cookie and CSRF token, settled on the front page."""
    browser = Browser(url)
    browser.get("/signup")
    status = browser.post("/signup", {"csrf_token": browser.token, "email": email})
    if status != 200:
        raise RuntimeError(f"signup of {email} answered {status}")
    browser.settle("/")
    return {"cookie": browser.cookie, "csrf": browser.token}


def sign_up_all(url: str, emails: list[str]) -> list[dict]:
    """Sign every reader up, a few at a time."""
    found: list[dict | None] = [None] * len(emails)
    failures: list[BaseException] = []
    cursor = iter(range(len(emails)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None or failures:
                return
            try:
                found[index] = sign_up(url, emails[index])
            except Exception as error:  # reported once all threads stop
                failures.append(error)

    in_threads(work, SETUP_THREADS)
    if failures:
        raise failures[0]
    return found


def metered_slugs(url: str, count: int) -> list[str]:
    """``count`` published metered articles."""
    with Browser(url).opener.open(f"{url}/api/articles?limit=500", timeout=10) as answer:
        items = json.loads(answer.read())["articles"]
    slugs = [item["slug"] for item in items if item["access_class"] == "metered"]
    if len(slugs) < count:
        raise RuntimeError(f"the benchmark needs {count} metered articles, the site has {len(slugs)}")
    return slugs[:count]


def reader_limit(url: str, session: dict) -> int:
    """A registered reader's limit under the site's preset, as the API reports it."""
    browser = Browser(url)
    request = urllib.request.Request(f"{url}/api/meter", headers={"Cookie": session["cookie"]})
    with browser.opener.open(request, timeout=10) as answer:
        meter = json.loads(answer.read())
    if meter["tier"] != "registered" or not isinstance(meter["limit"], int):
        raise RuntimeError(f"the benchmark reader is not metered: {meter}")
    return meter["limit"]


def granted_in_database(env: dict) -> int:
    """Rows in the meter (readers' unlocks), counted in the database itself."""
    from gate.storage.db import open_database

    db = open_database(env.get("GATE_DATABASE_URL") or env["GATE_DATABASE"])
    try:
        return db.scalar("select count(*) from unlocks where meter_key like 'reader:%'")
    finally:
        db.close()


# --- the load -------------------------------------------------------------------------


def generate_unlocks(spec: dict) -> dict:
    """Send every task (cookie, CSRF token, path) once over spec['connections'] keep-alive connections."""
    import http.client

    parts = urllib.parse.urlsplit(spec["url"])
    tasks = iter(spec["tasks"])
    lock = threading.Lock()
    counts = {"granted": 0, "refused": 0, "other": 0, "errors": 0}
    latencies: list[float] = []

    def loop() -> None:
        conn, mine, tally = None, [], dict.fromkeys(counts, 0)
        while True:
            with lock:
                task = next(tasks, None)
            if task is None:
                break
            cookie, csrf, path = task
            headers = {"Cookie": cookie, "X-CSRFToken": csrf, "User-Agent": spec["user_agent"],
                       "Content-Length": "0"}
            start = time.perf_counter()
            try:
                conn = conn or http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                conn.request("POST", path, body=b"", headers=headers)
                answer = conn.getresponse()
                body = answer.read()
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                tally["errors"] += 1
                continue
            mine.append(time.perf_counter() - start)
            if answer.status == 200 and json.loads(body).get("spent"):
                tally["granted"] += 1
            elif answer.status == 403:
                tally["refused"] += 1
            else:
                tally["other"] += 1
        if conn is not None:
            conn.close()
        with lock:
            latencies.extend(mine)
            for key, value in tally.items():
                counts[key] += value

    cpu_before = time.process_time()
    elapsed = in_threads(loop, spec["connections"])
    ordered = sorted(latencies)
    return {"requests": len(spec["tasks"]), "seconds": elapsed, **counts,
            "p50_ms": percentile(ordered, 0.5) * 1000 if ordered else 0.0,
            "p99_ms": percentile(ordered, 0.99) * 1000 if ordered else 0.0,
            "client_cpu_s": time.process_time() - cpu_before}


def generator_main() -> None:
    """Entry point of the generator's process: a JSON spec file in, a JSON result out."""
    print(json.dumps(generate_unlocks(json.loads(Path(sys.argv[1]).read_text()))))


def run_generator(spec: dict, directory: Path) -> dict:
    """The generator in its own process, never in a process being measured."""
    spec_file = directory / "unlocks.json"
    spec_file.write_text(json.dumps(spec))
    done = subprocess.run([*_entry_point("generator_main", "benchmarks.scaling"), str(spec_file)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"the unlock generator failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker_times(server: ServerProcess) -> dict[int, float]:
    """CPU seconds so far of each gunicorn worker of ``server``, by process id."""
    times = {}
    for worker in psutil.Process(server.process.pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):  # a worker restarting: its time is gone with it
            used = worker.cpu_times()
            times[worker.pid] = used.user + used.system
    return times


def wait_for_workers(server: ServerProcess, count: int, timeout: float = 60.0) -> None:
    """Wait until all ``count`` workers have booted (the server answers as soon as one has)."""
    deadline = time.monotonic() + timeout
    while len(worker_times(server)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.url}: {count} workers did not all start:\n{server.log_tail()}")
        time.sleep(0.1)


def host_busy(before, after) -> float:
    """The share of the machine's CPU time anyone (this run or another tenant) used between two samples."""
    total = sum(after) - sum(before)
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (before.idle + getattr(before, "iowait", 0.0))
    return (total - idle) / total if total > 0 else 0.0


# --- the benchmark -------------------------------------------------------------------


def serve(site: dict, directory: Path, label: str, processes: int) -> ServerProcess:
    """`gate serve` on ``site`` (its database and secret) with ``processes`` workers (not started yet)."""
    port = free_port()
    env = dict(site, GATE_RATE_LIMITS="off", GATE_PRESET=PRESET, GATE_BASE_URL=f"http://127.0.0.1:{port}")
    return ServerProcess.gate_serve(env, directory / f"{label}.log", workers=processes, port=port,
                                    options=("--threads", str(THREADS), "--worker-connections",
                                             str(worker_connections(CONNECTIONS, processes))))


def seeded_site(engine: Engine, directory: Path, readers: int) -> tuple[dict, list[dict]] | str:
    """The site every configuration copies: the articles, and the readers signed up once (their sessions).

    The copies keep the secret key and the readers' rows, so the sessions are
    valid on each; their meters are empty (signing up spends nothing). Returns
    why not (the `gate` command's words) when gate can't seed this engine.
    """
    label = f"{engine.name[:2]}base"
    site = site_env(**engine.database(directory, label), GATE_SECRET_KEY=secrets.token_hex(32))
    why_not = prepare(site)
    if why_not:
        return why_not
    with serve(site, directory, label, 2) as server:
        sessions = sign_up_all(server.url, [f"scale-{n:03d}@bench.example" for n in range(readers)])
    return site, sessions


def measure(engine: Engine, processes: int, directory: Path, seeded: dict, sessions: list[dict],
            label: str = "") -> dict:
    """One engine, one process count: a copy of the seeded site, every reader's unlocks sent once."""
    label = f"{engine.name[:2]}{processes}{label}"
    began, readers = time.perf_counter(), len(sessions)
    env = site_env(**engine.database(directory, label, seeded), GATE_SECRET_KEY=seeded["GATE_SECRET_KEY"])
    with serve(env, directory, label, processes) as server:
        wait_for_workers(server, processes)
        limit = reader_limit(server.url, sessions[0])
        slugs = metered_slugs(server.url, limit + 1)
        # every worker opens its connections before the clock starts: a second of meter reads (an article's
        # JSON would not do: under an automatic meter, reading an article spends it)
        run_builtin(f"{server.url}/api/meter", "GET",
                    {"Cookie": sessions[0]["cookie"], "User-Agent": USER_AGENT}, 1.0, CONNECTIONS)
        setup = time.perf_counter() - began
        tasks = [[session["cookie"], session["csrf"], f"/api/articles/{slug}/unlock"]
                 for slug in slugs for session in sessions]  # readers interleaved, limit + 1 each
        workers_before, pg_before, host_before = worker_times(server), postgres_cpu(engine.port), psutil.cpu_times()
        result = run_generator({"url": server.url, "tasks": tasks, "connections": CONNECTIONS,
                                "user_agent": USER_AGENT}, directory)
        workers_after, pg_after, host_after = worker_times(server), postgres_cpu(engine.port), psutil.cpu_times()
    in_database = granted_in_database(server.env)
    server_cpu = spent(workers_before, workers_after)
    database_cpu = spent(pg_before, pg_after) if engine.port else None
    requests, seconds = result["requests"], result["seconds"]
    busy = server_cpu + (database_cpu or 0.0) + result["client_cpu_s"]
    return {
        "processes": processes, "readers": readers, "limit": limit,
        "expected_grants": readers * limit, "granted": result["granted"], "granted_in_db": in_database,
        "grants_ok": result["granted"] == in_database == readers * limit
        and result["refused"] == readers and result["other"] == result["errors"] == 0,
        "refused": result["refused"], "other": result["other"], "errors": result["errors"],
        "requests": requests, "seconds": round(seconds, 3), "rps": round(requests / seconds, 1),
        "p50_ms": round(result["p50_ms"], 2), "p99_ms": round(result["p99_ms"], 2),
        "server_cpu_ms_per_request": round(server_cpu / requests * 1000, 3),
        "database_cpu_ms_per_request": (round(database_cpu / requests * 1000, 3)
                                        if database_cpu is not None else None),
        "client_cpu_ms_per_request": round(result["client_cpu_s"] / requests * 1000, 3),
        "machine_busy": round(busy / (seconds * (os.cpu_count() or 1)), 3),
        "host_busy": round(host_busy(host_before, host_after), 3),
        "setup_s": round(setup, 1),
        "worker_cpu_s": [round(spent({pid: workers_before.get(pid, 0.0)}, {pid: used}), 2)
                         for pid, used in workers_after.items()],
    }


def combine(runs: list[dict]) -> dict:
    """One row from a process count's rounds: counts added up, rates and CPU shares their medians."""
    row = {key: runs[0][key] for key in ("processes", "readers", "limit")}
    for key in ("expected_grants", "granted", "granted_in_db", "refused", "other", "errors", "requests"):
        row[key] = sum(run[key] for run in runs)
    row["grants_ok"] = all(run["grants_ok"] for run in runs)
    for key in ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_request", "database_cpu_ms_per_request",
                "client_cpu_ms_per_request", "machine_busy", "host_busy"):
        values = [run[key] for run in runs]
        row[key] = None if None in values else round(statistics.median(values), 3)
    row["round_rps"] = [run["rps"] for run in runs]
    row["runs"] = runs
    return row


def measure_engine(engine: Engine, processes: tuple[int, ...], directory: Path, readers: int,
                   rounds: int) -> list[dict]:
    """Every process count of one engine, ``rounds`` times in alternating order (1 2 4, 4 2 1, ...).

    The alternation spreads a slow drift of the machine (another tenant
    starting up) over every process count rather than the last ones.
    """
    seeded = seeded_site(engine, directory, readers)
    if not isinstance(seeded, tuple):
        return [{"processes": n, "skipped": seeded} for n in processes]
    runs: dict[int, list[dict]] = {n: [] for n in processes}
    for number in range(rounds):
        for n in (processes if number % 2 == 0 else processes[::-1]):
            runs[n].append(measure(engine, n, directory, *seeded, label=f"r{number}"))
    rows = [combine(runs[n]) for n in processes]
    for row in rows:
        row["ratio"] = round(row["rps"] / rows[0]["rps"], 3)
    return rows


def run(quick: bool = False, processes: tuple[int, ...] = PROCESSES, readers: int | None = None,
        start_postgres: bool = True, rounds: int | None = None) -> dict:
    """Every engine at every process count; ratios to each engine's single-process figure."""
    readers = readers or (20 if quick else READERS)
    rounds = rounds or (1 if quick else ROUNDS)
    engines = []
    with tempfile.TemporaryDirectory(prefix="gate-scaling-") as tmp:
        directory = Path(tmp)
        with postgres_engine(directory, start_postgres) as postgres:
            for engine in (Engine("sqlite"), postgres):
                rows = ([{"processes": n, "skipped": engine.skipped} for n in processes] if engine.skipped
                        else measure_engine(engine, processes, directory, readers, rounds))
                engines.append({"engine": engine.name, "rows": rows})
    return {"when": datetime.now(timezone.utc).isoformat(), "quick": quick, "readers": readers, "rounds": rounds,
            "preset": PRESET, "shape": "one `gate serve`, N gunicorn gthread workers",
            "threads": THREADS, "connections": CONNECTIONS, "cpus": os.cpu_count(),
            "cpu_model": cpu_model(), "load_average": [round(x, 1) for x in os.getloadavg()],
            "engines": engines}


def cpu_model() -> str:
    """The processor's name, from /proc/cpuinfo where there is one."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def format_table(document: dict) -> str:
    """One line per engine and process count: throughput, its ratio, grants, CPU per request."""
    lines = [f"{'engine':<11} {'procs':>5} {'unlock rps':>10} {'ratio':>6} {'grants':>11} "
             f"{'p50/p99 ms':>13} {'CPU ms/req: gate':>16} {'db':>6} {'client':>6} {'ours':>5} {'host':>5}"]
    for engine in document["engines"]:
        for row in engine["rows"]:
            if "skipped" in row:
                lines.append(f"{engine['engine']:<11} {row['processes']:>5} {row['skipped']}")
                continue
            grants = f"{row['granted']}/{row['expected_grants']}" + ("" if row["grants_ok"] else " !")
            database = row["database_cpu_ms_per_request"]
            lines.append(
                f"{engine['engine']:<11} {row['processes']:>5} {row['rps']:>10.0f} {row['ratio']:>6.2f} "
                f"{grants:>11} {row['p50_ms']:>6.1f}/{row['p99_ms']:<6.1f} "
                f"{row['server_cpu_ms_per_request']:>16.2f} "
                f"{'-' if database is None else f'{database:.2f}':>6} "
                f"{row['client_cpu_ms_per_request']:>6.2f} {row['machine_busy']:>5.2f} {row['host_busy']:>5.2f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    """Run the scaling benchmark, print a table and write bench-results/scaling.json."""
    parser = arguments(__doc__, "scaling.json", "20 readers (a smoke test)")
    parser.add_argument("--processes", default=",".join(map(str, PROCESSES)),
                        help="comma-separated process counts (the first is the ratios' base)")
    parser.add_argument("--readers", type=int, default=None, help=f"distinct readers (default {READERS})")
    parser.add_argument("--rounds", type=int, default=None, help=f"rounds per process count (default {ROUNDS})")
    parser.add_argument("--no-pg-local", action="store_true",
                        help="never start tools/pg-local (PostgreSQL only from the environment)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = tuple(int(part) for part in args.processes.split(","))
    document = run(quick=args.quick, processes=counts, readers=args.readers,
                   start_postgres=not args.no_pg_local, rounds=args.rounds)
    print(f"unlock throughput, {document['readers']} readers, limit + 1 unlocks each, {CONNECTIONS} "
          f"connections, median of {document['rounds']} round(s); "
          f"{document['shape']} x {THREADS} threads; {document['cpus']} cores "
          f"({document['cpu_model']})")
    print(format_table(document))
    bad = [(engine["engine"], row["processes"]) for engine in document["engines"]
           for row in engine["rows"] if "grants_ok" in row and not row["grants_ok"]]
    (out / "scaling.json").write_text(json.dumps(document, indent=2))
    print(f"written to {out / 'scaling.json'}")
    if bad:
        raise SystemExit(f"grants differ from readers x limit (or an unlock failed) for {bad}")


if __name__ == "__main__":
    main()

"""`gate serve` shapes: workers x threads on 1 and 2 cores, measured to choose the defaults.

Run with `python -m benchmarks.serving [--quick] [--markdown]` from the checkout (a full run takes
about 20 minutes, so `make bench` does not run it). For each engine (SQLite, and
PostgreSQL when a server is at hand, found as the other benchmarks find one) one site is seeded
as the HTTP benchmark seeds it, with a reader and a subscriber whose sessions are set up once.
Then, for every core count, every shape (gunicorn gthread workers x threads) and every load
(keep-alive connections), a fresh `gate serve` pinned with `taskset` to that many cores (the
master's affinity is inherited by its workers) serves the site, each worker capped near its share
of the connections plus its threads (see docs/benchmarks.md: uncapped keep-alive connections pile
onto one worker). The load is a round-robin of real reading: the article page as an anonymous
visitor, a registered reader and a subscriber, and the unlock API, from wrk when installed
(otherwise the built-in generator runs the four requests in turn).

Each run reports requests per second, p50/p99 latency, requests per worker CPU-second, and its
ratio to the best shape of the same engine, cores and load. From those ratios the benchmark
derives a per-core rule (workers = k x cores or cores + 1, threads = t): the rule whose shapes
come closest to the best everywhere. `gate serve`'s defaults follow it (docs/deployment.md).
A --quick run is a smoke test on a small grid, not a measurement.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.bench import arguments
from benchmarks.engines import postgres_engine
from benchmarks.httpbench import (
    READER,
    SUBSCRIBER,
    USER_AGENT,
    prepare_site,
    run_builtin,
    run_wrk,
    sessions,
    worker_cpu,
    wrk_version,
)
from gate.loadtest.server import ServerProcess, free_port, gate_command, site_env

WORKERS = (1, 2, 3, 4)
#: 1 thread was swept too, once: best in 2 groups of 8 (SQLite, 16 connections), 0.56-0.81 of the best
#: elsewhere; dropped to keep a full run near 20 minutes.
THREADS = (2, 4, 8)
CORES = (1, 2)
CONNECTIONS = (16, 64)
QUICK = {"workers": (1, 2), "threads": (2, 4), "connections": (16,)}
#: The candidate per-core rules: a name and workers as a function of cores.
RULES = {"cores": lambda cores: cores, "2 x cores": lambda cores: 2 * cores,
         "cores + 1": lambda cores: cores + 1}

# A round-robin of the four requests of real reading; each wrk thread builds them once.
WRK_MIX = r"""
local mix, next_one = {}, 0
init = function(args)
%s
end
request = function()
  next_one = next_one %% #mix + 1
  return mix[next_one]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {"requests": %%d, "duration_us": %%d, "non2xx": %%d, "errors": %%d, ' ..
    '"p50_us": %%d, "p99_us": %%d}\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def reading_mix(cookies: dict, page: str, unlocked: str) -> list[dict]:
    """The four requests of the mix: path, method, headers, and a marker the answer must contain."""
    def headers(session: str, csrf: bool = False) -> dict:
        found = {"Cookie": cookies[session]["cookie"], "User-Agent": USER_AGENT}
        return found | ({"X-CSRFToken": cookies[session]["csrf"]} if csrf else {})

    return [
        {"name": "anonymous page", "method": "GET", "path": f"/articles/{page}",
         "headers": headers("anonymous"), "expect": 'data-offer="register"'},
        {"name": "registered page", "method": "GET", "path": f"/articles/{page}",
         "headers": headers("registered"), "expect": 'data-offer="unlock"'},
        {"name": "subscriber page", "method": "GET", "path": f"/articles/{page}",
         "headers": headers("subscriber"), "expect": 'data-access="full"'},
        {"name": "unlock API", "method": "POST", "path": f"/api/articles/{unlocked}/unlock",
         "headers": headers("registered", csrf=True), "expect": '"already_unlocked"'},
    ]


def wrk_script(mix: list[dict]) -> str:
    """The wrk Lua script replaying ``mix`` round-robin (long strings: cookies need no escaping)."""
    lines = []
    for number, item in enumerate(mix, start=1):
        fields = ", ".join(f'["{key}"] = [==[{value}]==]' for key, value in item["headers"].items())
        body = '""' if item["method"] == "POST" else "nil"
        lines.append(f'  mix[{number}] = wrk.format("{item["method"]}", [==[{item["path"]}]==], '
                     f"{{{fields}}}, {body})")
    return WRK_MIX % "\n".join(lines)


def check_mix(url: str, mix: list[dict]) -> None:
    """Each request once: 200, the expected answer, and no new cookie (the load replays this one)."""
    for item in mix:
        request = urllib.request.Request(url + item["path"], headers=item["headers"], method=item["method"],
                                         data=b"" if item["method"] == "POST" else None)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status, body, cookie = answer.status, answer.read(), answer.headers.get_all("Set-Cookie")
        except urllib.error.HTTPError as error:
            status, body, cookie = error.code, error.read(), None
        if status != 200 or item["expect"].encode() not in body or cookie:
            raise RuntimeError(f"{item['name']}: answered {status}{' with a new cookie' if cookie else ''}:"
                               f"\n{body[:300]!r}")


def builtin_mix(url: str, mix: list[dict], seconds: float, connections: int) -> dict:
    """Without wrk: the four requests in turn, a quarter of the time each, summed."""
    runs = [run_builtin(url + item["path"], item["method"], item["headers"], max(1.0, seconds / len(mix)),
                        connections) for item in mix]
    elapsed = sum(run["seconds"] for run in runs)
    return {"requests": sum(run["requests"] for run in runs), "seconds": elapsed,
            "rps": sum(run["requests"] for run in runs) / elapsed,
            "p50_ms": statistics.median(run["p50_ms"] for run in runs),
            "p99_ms": max(run["p99_ms"] for run in runs),
            "non2xx": sum(run["non2xx"] for run in runs), "errors": sum(run["errors"] for run in runs)}


# --- one shape ----------------------------------------------------------------------


def cap(connections: int, workers: int, threads: int) -> int:
    """Each worker's connection cap: its share of the connections plus its threads (as httpbench's)."""
    return -(-connections // workers) + threads


def pinned(cores: int) -> list[str]:
    """`gate` under taskset on the first ``cores`` cores (the workers inherit the affinity)."""
    return ["taskset", "-c", f"0-{cores - 1}", *gate_command()]


def start(site: dict, directory: Path, cores: int, workers: int, threads: int, per_worker: int) -> ServerProcess:
    """`gate serve` on ``site`` in this shape, once every worker has booted."""
    port = free_port()
    env = dict(site, GATE_BASE_URL=f"http://127.0.0.1:{port}")
    server = ServerProcess.gate_serve(env, directory / f"c{cores}w{workers}t{threads}.log", workers=workers,
                                      port=port, gate=pinned(cores),
                                      options=("--threads", str(threads), "--worker-connections", str(per_worker)))
    server.start()
    deadline = time.monotonic() + 60
    while len(worker_cpu(server)) < workers:
        if time.monotonic() > deadline:
            stop(server)
            raise RuntimeError(f"{workers} workers did not all start:\n{server.log_tail()}")
        time.sleep(0.1)
    return server


def stop(server: ServerProcess) -> None:
    """Stop at once: SIGQUIT is gunicorn's quick shutdown (a graceful one waits out keep-alive)."""
    if server.running:
        server.process.send_signal(signal.SIGQUIT)
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    server.stop()


def elsewhere(cores: int) -> set[int]:
    """The cores a server pinned to the first ``cores`` leaves free, or all of them if none."""
    every = set(range(os.cpu_count() or 1))
    return every - set(range(cores)) or every


def measure_shape(site: dict, directory: Path, load, shape: dict, seconds: float) -> dict:
    """One shape under one load: a warm-up second, then a timed run with the workers' CPU time.

    The load generator (a child of this process) runs on the cores the server leaves free.
    """
    per_worker = shape.get("worker_connections") or cap(shape["connections"], shape["workers"], shape["threads"])
    server = start(site, directory, shape["cores"], shape["workers"], shape["threads"], per_worker)
    everywhere = os.sched_getaffinity(0)
    os.sched_setaffinity(0, elsewhere(shape["cores"]))
    try:
        load(server.url, shape["connections"], 1)
        before = worker_cpu(server)
        run = load(server.url, shape["connections"], seconds)
        spent = [max(0.0, after - start) for after, start in zip(worker_cpu(server), before)]
    finally:
        os.sched_setaffinity(0, everywhere)
        stop(server)
    return {**shape, "worker_connections": per_worker, "fixed_cap": bool(shape.get("worker_connections")),
            "rps": run["rps"], "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"],
            "requests": run["requests"], "non2xx": run["non2xx"], "errors": run["errors"],
            "per_cpu_s": run["requests"] / sum(spent) if sum(spent) > 0 else 0.0,
            "balanced": len(spent) < 2 or min(spent) >= 0.5 * max(spent)}


def combined(runs: list[dict]) -> dict:
    """One shape's rounds as one row: medians of the figures, counts summed, balanced only if every round was."""
    row = {key: runs[0][key] for key in ("cores", "connections", "workers", "threads", "worker_connections",
                                         "fixed_cap")}
    for key in ("rps", "p50_ms", "p99_ms", "per_cpu_s"):
        row[key] = round(statistics.median(run[key] for run in runs), 2 if key.endswith("_ms") else 1)
    row.update(requests=sum(run["requests"] for run in runs), non2xx=sum(run["non2xx"] for run in runs),
               errors=sum(run["errors"] for run in runs), balanced=all(run["balanced"] for run in runs),
               round_rps=[round(run["rps"], 1) for run in runs])
    return row


# --- the sweep ----------------------------------------------------------------------


def seeded(directory: Path, database_url: str | None, label: str) -> tuple[dict, dict]:
    """A seeded site's environment and its three sessions (set up once, valid on every restart)."""
    base = directory / label
    base.mkdir()
    site = prepare_site(base, database_url)
    env = site_env(**({"GATE_DATABASE_URL": database_url} if database_url else
                      {"GATE_DATABASE": str(site["database"])}),
                   GATE_SECRET_KEY=secrets.token_hex(32), GATE_RATE_LIMITS="off")
    server = start(env, base, 1, 2, 4, cap(16, 2, 4))
    try:
        cookies = sessions(server.url, site["page"], site["unlocked"])
        check_mix(server.url, reading_mix(cookies, site["page"], site["unlocked"]))
    finally:
        stop(server)
    return env, {"cookies": cookies, "page": site["page"], "unlocked": site["unlocked"]}


def loader(directory: Path, mix: list[dict], use_wrk: bool):
    """A load function (url, connections, seconds) -> run, replaying the mix."""
    if not use_wrk:
        return lambda url, connections, seconds: builtin_mix(url, mix, seconds, connections)
    script = directory / f"mix-{secrets.token_hex(4)}.lua"
    script.write_text(wrk_script(mix))
    # run_wrk's own method and headers are unused: the script's request() builds each request.
    return lambda url, connections, seconds: run_wrk(url, "GET", {}, seconds, connections, script)


def shapes(grid: dict) -> list[dict]:
    """Every (cores, connections, workers, threads, fixed cap) of the grid, cores outermost.

    Without ``worker_connections`` in the grid each worker is capped at its share plus its threads.
    """
    return [{"cores": cores, "connections": connections, "workers": workers, "threads": threads,
             "worker_connections": fixed}
            for cores in grid["cores"] for connections in grid["connections"]
            for workers in grid["workers"] for threads in grid["threads"]
            for fixed in grid.get("worker_connections") or (None,)]


def sweep_engine(name: str, directory: Path, database_url: str | None, grid: dict, seconds: float,
                 use_wrk: bool, rounds: int) -> list[dict]:
    """Every shape of the grid on one engine, ``rounds`` passes in alternating order (drift hits all alike)."""
    env, site = seeded(directory, database_url, name)
    mix = reading_mix(site["cookies"], site["page"], site["unlocked"])
    load = loader(directory, mix, use_wrk)
    grid_shapes = shapes(grid)
    runs: list[list[dict]] = [[] for _ in grid_shapes]
    for number in range(rounds):
        order = range(len(grid_shapes)) if number % 2 == 0 else reversed(range(len(grid_shapes)))
        for index in order:
            runs[index].append(measure_shape(env, directory, load, grid_shapes[index], seconds))
    return [{"engine": name, **combined(shape_runs)} for shape_runs in runs]


def with_ratios(runs: list[dict]) -> list[dict]:
    """Each run's ratio to the best rps of its engine, cores and connections."""
    def group(run: dict) -> tuple:
        return run["engine"], run["cores"], run["connections"]

    best: dict[tuple, float] = {}
    for run in runs:
        best[group(run)] = max(best.get(group(run), 0.0), run["rps"])
    return [dict(run, ratio=round(run["rps"] / best[group(run)], 3) if best[group(run)] else 0.0)
            for run in runs]


def derive_rule(runs: list[dict]) -> dict | None:
    """The per-core rule (workers from cores, one thread count) whose shapes come closest to the best.

    A rule's score is the geometric mean of its shapes' ratios to the best over every engine,
    core count and load measured; a rule some group lacks a shape for is not a candidate.
    """
    groups: dict[tuple, dict[tuple, float]] = {}
    for run in runs:
        groups.setdefault((run["engine"], run["cores"], run["connections"]), {})[
            (run["workers"], run["threads"])] = run["ratio"]
    threads = sorted({run["threads"] for run in runs})
    scored = []
    for rule, workers in RULES.items():
        for count in threads:
            ratios = [group.get((workers(key[1]), count)) for key, group in groups.items()]
            if ratios and None not in ratios:  # a failed run (ratio 0) counts as a hundredth of the best
                score = statistics.geometric_mean([max(ratio, 0.01) for ratio in ratios])
                scored.append({"workers": rule, "threads": count, "score": round(score, 3),
                               "worst": round(min(ratios), 3)})
    return max(scored, key=lambda rule: rule["score"]) if scored else None


def run(grid: dict, seconds: float, generator: str = "auto", pg_local: bool = True, rounds: int = 1) -> dict:
    """Sweep the grid on SQLite and on PostgreSQL (or say why not); returns the results document."""
    version = wrk_version() if generator in ("auto", "wrk") else None
    if generator == "wrk" and version is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk), use --generator builtin")
    if max(grid["cores"]) > (os.cpu_count() or 1):
        raise RuntimeError(f"--cores {max(grid['cores'])} on a machine with {os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="gate-serving-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        runs = sweep_engine("sqlite", directory, None, grid, seconds, bool(version), rounds)
        postgres = stack.enter_context(postgres_engine(directory, pg_local))
        postgresql = postgres.skipped or "measured"
        if not postgres.skipped:
            url = postgres.database(directory, "serving")["GATE_DATABASE_URL"]
            runs += sweep_engine("postgresql", directory, url, grid, seconds, bool(version), rounds)
    runs = with_ratios(runs)
    return {"when": datetime.now(timezone.utc).isoformat(), "grid": {k: list(v) for k, v in grid.items()},
            "seconds_per_run": seconds, "rounds": rounds, "cpus": os.cpu_count(),
            "load_average": [round(x, 1) for x in os.getloadavg()],
            "generator": version or "builtin (the four requests in turn)",
            "mix": ["anonymous page", "registered page", "subscriber page", "unlock API"],
            "accounts": [READER[0], SUBSCRIBER[0]], "postgresql": postgresql, "runs": runs,
            "rule": derive_rule(runs)}


# --- the report ---------------------------------------------------------------------


COLUMNS = ("engine", "cores", "conns", "workers x threads", "rps", "ratio to best", "p50 / p99 ms",
           "req / worker CPU-s")


def cells(run: dict) -> list[str]:
    """One run's cells, in COLUMNS order; an unbalanced run (a worker under half the busiest) is flagged."""
    best = " **best**" if run["ratio"] == 1 else ""
    flags = ("" if run["balanced"] else " (a worker idled)") + (
        f" ({run['errors'] + run['non2xx']} failed)" if run["errors"] + run["non2xx"] else "")
    fixed = f" (cap {run['worker_connections']})" if run.get("fixed_cap") else ""
    return [run["engine"], str(run["cores"]), str(run["connections"]), f"{run['workers']} x {run['threads']}{fixed}",
            f"{run['rps']:.0f}{flags}", f"{run['ratio']:.2f}{best}", f"{run['p50_ms']:.1f} / {run['p99_ms']:.1f}",
            f"{run['per_cpu_s']:.0f}"]


def format_table(document: dict, markdown: bool = False) -> str:
    """One line per run, then the derived rule (and PostgreSQL's skip line if it was skipped)."""
    rows = [cells(run) for run in document["runs"]]
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        widths = [max(len(text) for text in column) for column in zip(COLUMNS, *rows)]
        lines = ["  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip()
                 for row in (COLUMNS, *rows)]
    if document["postgresql"] != "measured":
        lines.append(f"\nPostgreSQL: {document['postgresql']}")
    rule = document["rule"]
    if rule:
        lines.append(f"\nRule: workers = {rule['workers']}, threads = {rule['threads']} "
                     f"(geometric mean of its ratios to the best {rule['score']:.2f}, worst {rule['worst']:.2f})")
    return "\n".join(lines)


def parse_counts(text: str) -> tuple[int, ...]:
    """A comma-separated list of positive counts, e.g. "1,2,4"."""
    counts = tuple(int(part) for part in text.split(",") if part.strip())
    if not counts or min(counts) < 1:
        raise ValueError(f"expected positive counts separated by commas, got {text!r}")
    return counts


def main(argv=None) -> None:
    """Sweep `gate serve`'s shapes, print a table and write bench-results/serving.json."""
    parser = arguments(__doc__, "serving.json", f"a small grid, 1 s runs (a smoke test): {QUICK}")
    for name, default in (("workers", WORKERS), ("threads", THREADS), ("cores", CORES),
                          ("connections", CONNECTIONS)):
        parser.add_argument(f"--{name}", type=parse_counts, default=None,
                            help=f"comma-separated {name} (default {','.join(map(str, default))})")
    parser.add_argument("--worker-connections", type=parse_counts, default=None,
                        help="fixed per-worker caps to compare (default: each worker's share plus its threads)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="passes over the grid, alternating order; figures are medians (default 2, quick 1)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per run (default 2, quick 1)")
    parser.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto",
                        help="load generator (auto: wrk if installed)")
    parser.add_argument("--no-pg-local", action="store_true",
                        help="never start tools/pg-local (PostgreSQL only from the environment)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    defaults = {"workers": WORKERS, "threads": THREADS, "cores": CORES, "connections": CONNECTIONS}
    if args.quick:
        defaults.update(QUICK)
    grid = {name: getattr(args, name) or default for name, default in defaults.items()}
    if args.worker_connections:
        grid["worker_connections"] = args.worker_connections
    seconds = args.seconds or (1 if args.quick else 2)
    rounds = args.rounds or (1 if args.quick else 2)
    document = run(grid, seconds, args.generator, pg_local=not args.no_pg_local, rounds=rounds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"`gate serve` shapes, reading mix ({', '.join(document['mix'])}) round-robin; "
          f"load: {document['generator']}; median of {rounds} run(s) of {seconds:g} s; "
          f"{document['cpus']} cores here")
    print(format_table(document, args.markdown))
    (out / "serving.json").write_text(json.dumps(document, indent=2))
    print(f"written to {out / 'serving.json'}")


if __name__ == "__main__":
    main()

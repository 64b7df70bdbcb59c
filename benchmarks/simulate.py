"""Simulated visits per second on one process, the process pool and a 2-worker local Dask cluster.

Run with `make bench` (or `python -m benchmarks.simulate [--quick]` from the checkout). The same
run (same population, presets and seed) goes through each engine in rounds that rotate the order,
so a noisy neighbour on a shared machine slows every engine alike; each figure is the median of its
rounds, and the pool and the cluster are reported as ratios to one process in the same run. The
cluster is started once (its start-up is reported apart, as a long run pays it once); the pool
starts its processes in every run, as `gate simulate` does. Every engine must give the same JSON.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.bench import arguments
from gate.conf.resources import resource_dir
from gate.conf.settings import Config
from gate.simulate import cluster
from gate.simulate.population import load_population
from gate.simulate.report import to_json
from gate.simulate.runner import SimulatedBilling, catalogue, simulate

PRESETS = ("wpr", "metered")
WORKERS = 2


def runner(readers: int, days: int):
    """A function running the benchmark's simulation on an engine (keyword arguments of simulate)."""
    cfg = Config()
    population = load_population(resource_dir("config") / "population.toml")
    rules = {name: cfg.preset(name) for name in PRESETS}
    fixed = dict(readers=readers, days=days, seed=7, start=datetime(2026, 1, 1, 12, tzinfo=rules["wpr"].tz),
                 articles=catalogue(population.articles.count, cfg.publication.sections),
                 billing=SimulatedBilling.from_plans(cfg.plans))
    return lambda **engine: simulate(population, rules, **fixed, **engine)


def measure(readers: int, days: int, rounds: int) -> dict:
    """Every engine's visits/s over ``rounds`` rotating rounds, with the cluster's start-up time."""
    run = runner(readers, days)
    began = time.perf_counter()
    with cluster.connect(cluster.Scheduler(workers=WORKERS)) as local:
        startup = time.perf_counter() - began
        engines = {"one process": {}, f"process pool ({WORKERS})": {"workers": WORKERS},
                   f"local Dask cluster ({WORKERS})": {"cluster": local}}
        speeds, outputs = {name: [] for name in engines}, {}
        for number in range(rounds):
            names = list(engines)[number % len(engines):] + list(engines)[:number % len(engines)]
            for name in names:
                result = run(**engines[name])
                speeds[name].append(result.visits / result.elapsed_s)
                outputs[name] = to_json(result)
    if len(set(outputs.values())) != 1:
        raise SystemExit("the engines disagree: the same seed must give the same JSON everywhere")
    visits = json.loads(next(iter(outputs.values())))
    one = statistics.median(speeds["one process"])
    return {"readers": readers, "days": days, "presets": list(PRESETS), "rounds": rounds,
            "visits": sum(r["summary"]["visits"] for r in visits["results"]),
            "cluster_startup_s": round(startup, 2),
            "engines": [{"engine": name, "visits_per_s": round(statistics.median(values)),
                         "rounds": [round(v) for v in values],
                         "ratio": round(statistics.median(values) / one, 2)} for name, values in speeds.items()]}


def main(argv=None) -> None:
    """Measure, print the table and write bench-results/simulate.json."""
    args = arguments(__doc__, "simulate.json", "10,000 readers over 10 days, one round (a smoke run)").parse_args(argv)
    figures = measure(10_000, 10, 1) if args.quick else measure(40_000, 30, 3)
    print(f"gate simulate: {figures['readers']:,} readers x {figures['days']} days x {len(PRESETS)} presets "
          f"({figures['visits']:,} visits), median of {figures['rounds']} rotating round(s)")
    print(f"{'engine':<28} {'visits/s':>10} {'ratio':>7}")
    for row in figures["engines"]:
        print(f"{row['engine']:<28} {row['visits_per_s']:>10,} {row['ratio']:>6.2f}x")
    pool, dask = (row["visits_per_s"] for row in figures["engines"][1:])
    print(f"local cluster / pool: {dask / pool:.2f} (cluster start-up {figures['cluster_startup_s']} s, "
          "paid once per run, not in the figures)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures["when"] = datetime.now(timezone.utc).isoformat()
    (out / "simulate.json").write_text(json.dumps(figures, indent=2))
    print(f"written to {out / 'simulate.json'}")


if __name__ == "__main__":
    main()

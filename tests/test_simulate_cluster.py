"""`gate simulate --scheduler`: the readers' blocks on a Dask cluster give the one-process result, byte for byte."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from gate.cli.simulate import simulate as simulate_command
from gate.conf.resources import resource_dir
from gate.conf.settings import Config
from gate.loadtest.server import free_port
from gate.simulate import cluster
from gate.simulate.population import load_population
from gate.simulate.runner import SimulatedBilling, catalogue, simulate
from gate.simulate.shards import BLOCK_READERS, Tree, blocks, pairs

distributed = pytest.importorskip("distributed")  # the cluster extra, installed by `make test`

ROOT = Path(__file__).resolve().parents[1]
#: Three blocks, the last one short: enough to deal unevenly over two or three workers.
READERS = 2 * BLOCK_READERS + 300
ARGS = ["--preset", "wpr", "--preset", "metered", "--readers", READERS, "--days", 6, "--seed", 13, "--json"]
#: A Dask worker on a Python that cannot import gate, as on a machine where it was never installed.
WORKER_WITHOUT_GATE = """
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name == "gate" or name.startswith("gate."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
from distributed.cli.dask_worker import main
main()
"""


def library_run(**engine):
    """The ARGS run through the library, on the engine given (one process by default)."""
    cfg = Config()
    population = load_population(resource_dir("config") / "population.toml")
    rules = {name: cfg.preset(name) for name in ("wpr", "metered")}
    return simulate(population, rules, readers=READERS, days=6, seed=13,
                    start=datetime(2026, 1, 1, 12, tzinfo=rules["wpr"].tz),
                    articles=catalogue(population.articles.count, cfg.publication.sections),
                    billing=SimulatedBilling.from_plans(cfg.plans), **engine)


def invoke(*args):
    """Run `gate simulate` with these arguments."""
    return CliRunner().invoke(simulate_command, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def one_process():
    """The reference: the run's JSON from one process."""
    result = invoke(*ARGS)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def threads():
    """A Dask cluster of two workers inside this process (threads): quick to start, same scheduler."""
    with cluster.local_cluster(2, processes=False) as local, distributed.Client(local) as client:
        yield cluster.Cluster(client, "the test cluster")


@pytest.fixture
def scheduler_only():
    """A scheduler with no worker yet, inside this process; yields its tcp:// address."""
    with cluster.local_cluster(0, processes=False) as local:
        yield local.scheduler_address


def start_worker(address: str, code: str | None = None) -> subprocess.Popen:
    """A real `dask worker` process joining ``address`` (running ``code`` instead of the CLI if given)."""
    command = ["-c", code] if code else ["-m", "distributed.cli.dask_worker"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, *command, address, "--no-nanny", "--nthreads", "1",
                             "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen) -> None:
    """Stop a worker this test started (it holds nothing worth a graceful close)."""
    process.kill()
    process.wait()


# --- blocks: fixed by the population, added up along one tree ------------------------------


def test_blocks_are_fixed_by_the_readers_alone():
    assert [(b.number, b.first, b.size) for b in blocks(READERS)] == [
        (0, 0, BLOCK_READERS), (1, BLOCK_READERS, BLOCK_READERS), (2, 2 * BLOCK_READERS, 300)]
    assert [b.size for b in blocks(1)] == [1]
    assert blocks(READERS)[0].seed(7) == 7  # a one-block population draws exactly as before blocks
    assert blocks(READERS)[1].seed(7).spawn_key == (1,)


@pytest.mark.parametrize("leaves", [1, 2, 3, 5, 8, 11])
def test_the_tree_adds_up_the_same_whatever_order_blocks_finish_in(leaves):
    """Concatenation is not commutative: any change in the tree's shape or order would show."""
    def combine(left, right):
        return f"({left}+{right})"
    level = [str(n) for n in range(leaves)]
    while len(level) > 1:
        level = pairs(level, combine)
    for seed in range(5):
        order = list(range(leaves))
        random.Random(seed).shuffle(order)
        tree = Tree(leaves, combine)
        for number in order:
            tree.add(number, str(number))
        assert tree.result() == level[0]
        assert len(tree.nodes) == 1


def test_a_tree_missing_a_block_says_so():
    tree = Tree(3, lambda left, right: left + right)
    tree.add(0, "a")
    tree.add(1, "b")
    with pytest.raises(RuntimeError, match="not every block is in"):
        tree.result()


def test_a_trace_numbers_readers_across_the_whole_population():
    steps = []
    library_run(trace=steps.append)
    seen = {step.reader // BLOCK_READERS for step in steps}
    assert seen == {0, 1, 2} and max(step.reader for step in steps) < READERS


# --- on a cluster --------------------------------------------------------------------------


def test_a_cluster_of_threads_matches_one_process(threads):
    shown = []
    reference, clustered = library_run(), library_run(cluster=threads, progress=shown.append)
    assert clustered.workers == 2
    assert clustered.as_dict() == reference.as_dict()
    assert sum(shown) == 6 * 2  # every preset-day, reported as blocks finish


@pytest.mark.slow
def test_a_local_cluster_of_two_processes_gives_the_same_json(one_process):
    result = invoke(*ARGS, "--scheduler", "local:2")
    assert result.exit_code == 0, result.output
    assert result.stdout == one_process
    assert "(2 Dask workers on a local cluster)" in result.stderr


@pytest.mark.slow
def test_a_remote_worker_gives_the_same_json(one_process, scheduler_only):
    worker = start_worker(scheduler_only)
    try:
        result = invoke(*ARGS, "--scheduler", scheduler_only)
    finally:
        stop(worker)
    assert result.exit_code == 0, result.output
    assert result.stdout == one_process
    assert f"(1 Dask worker on {scheduler_only})" in result.stderr


# --- clear errors --------------------------------------------------------------------------


def test_an_unreachable_scheduler_is_a_clear_error(monkeypatch):
    port = free_port()  # a loopback port nothing listens on once closed
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 0.5)
    result = invoke("--readers", 50, "--days", 2, "--scheduler", f"tcp://127.0.0.1:{port}")
    assert result.exit_code == 1
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port} within 0.5 s" in result.output
    assert "check that `dask scheduler` runs there" in result.output
    assert "Simulated" not in result.output


@pytest.mark.slow
def test_workers_without_gate_are_told_to_install_it(scheduler_only):
    worker = start_worker(scheduler_only, WORKER_WITHOUT_GATE)
    try:
        result = invoke("--readers", 50, "--days", 2, "--scheduler", scheduler_only)
    finally:
        stop(worker)
    assert result.exit_code == 1
    assert f"the workers of {scheduler_only} cannot import gate" in result.output
    assert "install gate 0.1.0 on the workers" in result.output


def test_workers_on_another_version_of_gate_are_refused(threads, monkeypatch):
    monkeypatch.setattr(cluster, "_gate_version", lambda: "0.0.9")
    with pytest.raises(cluster.ClusterError) as caught:
        threads.check_workers(timeout=5)
    assert "runs another gate" in str(caught.value) and "has 0.0.9" in str(caught.value)
    assert "install the same version on the scheduler and every worker" in str(caught.value)


def test_a_scheduler_without_workers_is_a_clear_error(scheduler_only):
    with pytest.raises(cluster.ClusterError, match="no worker joined the scheduler at .* within 0.5 s"):
        with cluster.connect(cluster.parse_scheduler(scheduler_only), timeout=0.5):
            pass


# --- the option ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, address, workers", [
    ("local", None, os.cpu_count()),
    ("local:3", None, 3),
    ("local:64", None, 64),
    ("tcp://10.0.0.5:8786", "tcp://10.0.0.5:8786", 0),
    ("tcp://sim-scheduler.internal:8786", "tcp://sim-scheduler.internal:8786", 0),
    ("tcp://[::1]:8786", "tcp://[::1]:8786", 0),
])
def test_scheduler_addresses_are_parsed(text, address, workers):
    assert cluster.parse_scheduler(text) == cluster.Scheduler(address, workers)


@pytest.mark.parametrize("args, message", [
    (["--scheduler", "local:0"], "local:N takes 1 to 64 workers, got 0"),
    (["--scheduler", "local:65"], "local:N takes 1 to 64 workers, got 65"),
    (["--scheduler", "local:two"], "not a scheduler: 'local:two'"),
    (["--scheduler", "tcp://10.0.0.5"], "not a scheduler: 'tcp://10.0.0.5' (use tcp://HOST:PORT, local or local:N)"),
    (["--scheduler", "tcp://10.0.0.5:0"], "not a scheduler"),
    (["--scheduler", "tcp://10.0.0.5:70000"], "not a scheduler"),
    (["--scheduler", "http://10.0.0.5:8786"], "not a scheduler"),
    (["--scheduler", "10.0.0.5:8786"], "not a scheduler"),
    (["--scheduler", ""], "not a scheduler"),
    (["--scheduler", "local", "--workers", "2"], "with --scheduler the cluster's workers play the readers"),
    (["--scheduler", "local", "--offer", "FLASH10"], "a code with a cap is one count over all readers"),
])
def test_bad_scheduler_options_are_refused(args, message):
    result = invoke("--readers", 50, "--days", 2, *args)
    assert result.exit_code == 2
    assert message in result.output

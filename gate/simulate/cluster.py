"""`gate simulate --scheduler`: the readers' blocks as tasks on a Dask cluster.

Dask's distributed scheduler does the placing, retrying and moving of data;
gate only says what to run. Each block of readers
(:mod:`gate.simulate.shards`) is one task on a worker, which keeps memory
flat as the days go by exactly as one process does; the blocks' outcomes are
added up on the cluster along the same tree as every other engine uses, so
only the final outcome (a few numbers per preset and day) comes back.

``dask.distributed`` is imported only here, and only when a run asks for a
scheduler: it is the ``cluster`` extra (``pip install 'gate[cluster]'``).
"""

from __future__ import annotations

import os
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from gate.conf.version import __version__
from gate.simulate.runner import PresetOutcome, SimulationPlan, add_up
from gate.simulate.shards import blocks, pairs

#: How long to wait for a scheduler to answer, and for a first worker to join it, in seconds.
CONNECT_TIMEOUT = 10.0
#: The most workers `local:N` starts on this machine.
MAX_LOCAL_WORKERS = 64
ADDRESS = re.compile(r"tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})")
LOCAL = re.compile(r"local(?::(?P<workers>[0-9]{1,3}))?")
#: How a worker says it has no gate (client.run wraps it in a bare Exception with this text).
NO_GATE = re.compile(r"No module named '?gate\b")


class ClusterError(RuntimeError):
    """The cluster cannot run the simulation: unreachable, empty, or its workers lack gate."""


@dataclass(frozen=True)
class Scheduler:
    """Where blocks run: a running cluster's scheduler, or a LocalCluster of ``workers`` processes."""

    address: str | None = None
    workers: int = 0

    def __str__(self) -> str:
        return self.address or "a local cluster"


def parse_scheduler(text: str) -> Scheduler:
    """``tcp://HOST:PORT``, ``local`` (one worker per core) or ``local:N``; anything else is refused."""
    local = LOCAL.fullmatch(text)
    if local:
        workers = int(local["workers"]) if local["workers"] else (os.cpu_count() or 1)
        if not 1 <= workers <= MAX_LOCAL_WORKERS:
            raise ValueError(f"local:N takes 1 to {MAX_LOCAL_WORKERS} workers, got {workers}")
        return Scheduler(workers=workers)
    address = ADDRESS.fullmatch(text)
    if not address or not 1 <= int(address["port"]) <= 65535:
        raise ValueError(f"not a scheduler: {text!r} (use tcp://HOST:PORT, local or local:N)")
    return Scheduler(address=text)


class Cluster:
    """A client connected to a cluster with gate on its workers: plays a plan's blocks there."""

    def __init__(self, client, where: str) -> None:
        self.client, self.where = client, where

    @property
    def workers(self) -> int:
        """Workers connected to the scheduler now."""
        return len(self.client.scheduler_info()["workers"])

    def run(self, plan: SimulationPlan, progress: Callable[[int], None] | None) -> list[PresetOutcome]:
        """Every block as a task, added up by a tree of tasks; only the root comes back."""
        from dask.distributed import as_completed

        run = f"gate-{uuid.uuid4().hex[:8]}"
        [shared] = self.client.scatter([plan], broadcast=True, hash=False)
        level = [self.client.submit(SimulationPlan.play, shared, block, key=f"{run}-block-{block.number}")
                 for block in blocks(plan.readers)]
        finished, nodes = as_completed(level), iter(range(len(level)))
        while len(level) > 1:
            level = pairs(level, lambda left, right: self.client.submit(
                add_up, left, right, key=f"{run}-sum-{next(nodes)}"))
        [root] = level
        for block in finished:  # a finished block is 1/blocks of every preset-day
            if block.status == "error":
                self._raise(block.exception())
            if progress:
                progress(plan.days * len(plan.presets))
        try:
            return root.result()
        except Exception as error:  # the error a task raised on a worker, raised again here
            self._raise(error)

    def _raise(self, error: BaseException):
        """A task's failure as a ClusterError saying what to fix."""
        if NO_GATE.search(str(error)):
            raise ClusterError(f"the workers of {self.where} cannot import gate ({error}): "
                               f"install gate {__version__} on the workers") from None
        raise ClusterError(f"a simulation task failed on {self.where}: {type(error).__name__}: {error}") from None

    def check_workers(self, timeout: float) -> None:
        """At least one worker, and gate at the client's version on every one."""
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise ClusterError(f"no worker joined the scheduler at {self.where} within {timeout:g} s: "
                               f"start some with `dask worker {self.where} --nthreads 1`") from None
        try:
            scheduler = self.client.run_on_scheduler(_gate_version)
        except Exception as error:  # the scheduler unpickles the task graph, so it needs gate too
            raise ClusterError(f"the scheduler at {self.where} cannot import gate ({error}): install gate "
                               f"{__version__} where `dask scheduler` runs, as on the workers") from None
        try:
            versions = self.client.run(_gate_version)
        except Exception as error:  # the workers could not even unpickle a function of gate's
            self._raise(error)
        versions["scheduler"] = scheduler
        other = {worker: version for worker, version in versions.items() if version != __version__}
        if other:
            listed = ", ".join(f"{worker} has {version}" for worker, version in sorted(other.items()))
            raise ClusterError(f"the cluster at {self.where} runs another gate ({listed}); this is gate "
                               f"{__version__}: install the same version on the scheduler and every worker")


def _gate_version() -> str:
    """gate's version on the worker that runs this (it fails to unpickle where gate is missing)."""
    return __version__


def local_cluster(workers: int, processes: bool = True):
    """A LocalCluster on loopback of ``workers`` single-threaded workers, without a dashboard.

    The scheduler's HTTP server (health checks) takes a free port, not 8787,
    so two runs on one machine never meet.
    """
    from dask.distributed import LocalCluster

    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes, protocol="tcp://", host="127.0.0.1",
                        scheduler_port=0, dashboard_address=None,
                        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})


@contextmanager
def connect(scheduler: Scheduler, timeout: float | None = None) -> Iterator[Cluster]:
    """A checked cluster for one run: a LocalCluster started (and closed after) or a remote one joined."""
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    try:
        from dask.distributed import Client
    except ImportError:
        raise ClusterError("--scheduler needs Dask's distributed scheduler: pip install 'gate[cluster]'") from None
    if scheduler.address is None:
        with local_cluster(scheduler.workers) as local, Client(local) as client:
            cluster = Cluster(client, str(scheduler))
            cluster.check_workers(timeout)
            yield cluster
        return
    try:
        client = Client(scheduler.address, timeout=timeout)
    except OSError as error:
        raise ClusterError(f"cannot reach the Dask scheduler at {scheduler.address} within {timeout:g} s "
                           f"({error}): check that `dask scheduler` runs there, that the host and port "
                           "are right and that no firewall is in the way") from None
    with client:
        cluster = Cluster(client, scheduler.address)
        cluster.check_workers(timeout)
        yield cluster

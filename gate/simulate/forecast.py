"""Forecasts for the console: the running preset against another one, on a seeded population, in the background.

A forecast is ``gate simulate`` on two presets (the running one first), with the
command's defaults for what a console user does not choose (the population file
of the config folder, the monthly plan, the first day). Its job runs in a process
of its own, spawned (a fresh interpreter, so a web worker never forks its threads,
locks or database pool), and writes its state, progress and result to
``<instance>/forecasts/<id>.json``: any process or node that shares the instance
folder can poll it. At most :data:`AT_ONCE` run at once per instance folder.

The id is a hash of everything that decides the result: both presets' rules as
JSON (not only their names, so an edited preset gives a new forecast), the
population file, the plans, the readers, days and seed, and gate's version. An
identical request therefore finds the finished (or running) job instead of
starting another. Only the newest :data:`KEEP` job files are kept.

NumPy and the runner are imported only in the job's process.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime
from datetime import time as wall_time
from functools import cached_property
from pathlib import Path

from gate.conf.settings import Config
from gate.conf.version import __version__
from gate.rules.paywall import Rules
from gate.simulate import MAX_DAYS

#: The folder of the instance that holds the job files.
FOLDER = "forecasts"
#: A small population by default, so a forecast is on the page within seconds.
DEFAULT_READERS, DEFAULT_DAYS, DEFAULT_SEED = 20_000, 60, 42
#: The largest population a console user may ask for (about 3 minutes on one core for 60 days).
MAX_READERS = 1_000_000
#: Seeds are NumPy's: any whole number from 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1
#: Forecasts running at once per instance folder: each takes one core while it runs.
AT_ONCE = 2
#: Job files kept (the newest); older ones are removed when a forecast starts.
KEEP = 50
#: A queued job whose process has not taken its lock by then never started (spawning takes a second or two).
START_GRACE_S = 60.0
#: Progress is written at most this often (seconds), so a big run does not spend its time writing files.
WRITE_EVERY_S = 0.25
#: ``gate simulate``'s default first day and visit time: a forecast can be run again on the command line.
FIRST_DAY, VISIT_TIME = date(2026, 1, 1), wall_time(12, 0)
#: What a job id looks like: the first 16 hex digits of its key.
JOB_ID = re.compile(r"[0-9a-f]{16}")
#: A job's states: waiting for a slot, simulating, finished with a result, or stopped with an error.
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
#: What a job whose process ended before it finished reports.
DIED = "The forecast stopped before it finished (its process ended). Start it again."


class ForecastInputError(ValueError):
    """A refused forecast request: each field's problem, to show beside the field."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = dict(errors)


class ForecastBusy(RuntimeError):
    """As many forecasts as may run at once are running in this instance."""


@dataclass(frozen=True)
class ForecastRequest:
    """What the console asks for: a preset to forecast against another (the running one), and the population."""

    preset: str
    against: str
    readers: int = DEFAULT_READERS
    days: int = DEFAULT_DAYS
    seed: int = DEFAULT_SEED


def _whole(text: str | None, low: int, high: int, default: int) -> int:
    """A whole number from a form or JSON, from ``low`` to ``high``; blank means ``default``."""
    cleaned = (text or "").strip().replace(",", "").replace("_", "")  # "20,000" is how people write it
    if not cleaned:
        return default
    # ASCII digits only: str.isdigit() also passes "²" (which int() refuses) and "１２" (which it reads).
    if not (cleaned.isascii() and cleaned.isdigit()) or len(cleaned) > 12:
        raise ValueError(f"must be a whole number from {low:,} to {high:,}, not {(text or '').strip()[:20]!r}")
    value = int(cleaned)
    if not low <= value <= high:
        raise ValueError(f"must be from {low:,} to {high:,} (not {value:,})")
    return value


def _preset_name(text: str | None, known: list[str], missing: str) -> str:
    """A preset's name, refused with the known ones when unknown."""
    name = (text or "").strip()
    if not name:
        raise ValueError(missing)
    if name not in known:
        raise ValueError(f"no preset named {name[:60]!r} (have: {', '.join(known)})")
    return name


def parse(values: Mapping[str, str | None], presets: Iterable[str], running: str) -> ForecastRequest:
    """A forecast request from a form or JSON, every value checked; all problems are raised together."""
    known, errors, parsed = sorted(presets), {}, {}
    checks = {
        "preset": lambda text: _preset_name(text, known, "choose a preset to forecast"),
        "against": lambda text: _preset_name(text or running, known, "choose a preset to forecast against"),
        "readers": lambda text: _whole(text, 1, MAX_READERS, DEFAULT_READERS),
        "days": lambda text: _whole(text, 1, MAX_DAYS, DEFAULT_DAYS),
        "seed": lambda text: _whole(text, 0, MAX_SEED, DEFAULT_SEED),
    }
    for name, check in checks.items():
        try:
            parsed[name] = check(values.get(name))
        except ValueError as error:
            errors[name] = str(error)
    if not errors and parsed["preset"] == parsed["against"]:
        errors["preset"] = f"{parsed['preset']!r} is the preset it would be compared with: choose another one"
    if errors:
        raise ForecastInputError(errors)
    return ForecastRequest(**parsed)


@dataclass(frozen=True)
class ForecastJob:
    """Everything a forecast's process needs (picklable), and the key that names its result."""

    request: ForecastRequest
    #: (name, rules) of the preset forecast against (the running one), then of the preset forecast.
    presets: tuple[tuple[str, Rules], ...]
    population: Path
    population_sha256: str
    plans: tuple
    sections: tuple[str, ...]

    @classmethod
    def build(cls, cfg: Config, request: ForecastRequest) -> "ForecastJob":
        """The job for ``request`` on this site's configuration: its presets' rules, population and plans."""
        population = cfg.dir / "population.toml"
        return cls(request, ((request.against, cfg.preset(request.against)), (request.preset, cfg.preset(request.preset))),
                   population, hashlib.sha256(population.read_bytes()).hexdigest(), tuple(cfg.plans),
                   tuple(cfg.publication.sections))

    @cached_property
    def key(self) -> str:
        """The SHA-256 of everything that decides the result, the rules as JSON (an edit changes it)."""
        request = self.request
        decisive = {
            "version": __version__, "readers": request.readers, "days": request.days, "seed": request.seed,
            "first_day": FIRST_DAY.isoformat(), "population_sha256": self.population_sha256,
            "presets": [[name, json.loads(rules.model_dump_json())] for name, rules in self.presets],
            "plans": [plan.model_dump(mode="json") for plan in self.plans], "sections": list(self.sections),
        }
        return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()

    @property
    def id(self) -> str:
        """The job's id: its key, shortened to what a URL needs."""
        return self.key[:16]


def queued(job: ForecastJob, at: float) -> dict:
    """A new job's file: nothing done yet."""
    return {"id": job.id, "key": job.key, "state": QUEUED, "progress": 0.0, "request": asdict(job.request),
            "queued_at": at, "started_at": None, "finished_at": None, "elapsed_s": None,
            "error": None, "result": None}


def describe(state: dict) -> str:
    """A job's state in words, as the page's status line and the JSON's ``message`` say it."""
    request = state["request"]
    if state["state"] == QUEUED:
        return f"Waiting to start: at most {AT_ONCE} forecasts run at once."
    if state["state"] == RUNNING:
        return (f"Simulating {request['readers']:,} readers over {request['days']} days: "
                f"{state['progress'] * 100:.0f}% done.")
    if state["state"] == DONE:
        return f"Done: {request['preset']} against {request['against']}, in {state['elapsed_s']:.1f} s."
    return f"The forecast failed: {state['error']}"


@contextmanager
def _locked(path: Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on ``path`` (created if missing) while inside; yields whether it was taken.

    A lock dies with its process, so a runner that crashes never leaves its job "running".
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def _mtime(path: Path) -> float:
    """When a file was last written (0 if another process just removed it)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


class ForecastFolder:
    """``<instance>/forecasts``: one JSON file per job, a lock file held by its running process, AT_ONCE slots."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def file(self, job_id: str) -> Path:
        """A job's JSON file."""
        return self.path / f"{job_id}.json"

    def lock(self, job_id: str) -> Path:
        """The file a job's process holds a lock on while it waits and runs."""
        return self.path / f"{job_id}.lock"

    def read(self, job_id: str) -> dict | None:
        """A job's file as written last, or None if there is none (files are replaced whole, never torn)."""
        if not JOB_ID.fullmatch(job_id):
            return None
        try:
            return json.loads(self.file(job_id).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write(self, job_id: str, state: dict) -> dict:
        """Replace a job's file in one step: a reader sees the old state or the new one."""
        self.path.mkdir(parents=True, exist_ok=True)
        partial = self.path / f".{job_id}.{secrets.token_hex(6)}.tmp"  # one per writer, threads too
        partial.write_text(json.dumps(state))
        os.replace(partial, self.file(job_id))
        return state

    def held(self, job_id: str) -> bool:
        """Whether a process holds the job's lock: it is waiting for a slot or running."""
        if not self.lock(job_id).exists():
            return False
        with _locked(self.lock(job_id), wait=False) as taken:
            return not taken

    def status(self, job_id: str) -> dict | None:
        """A job's state; a queued or running job whose process is gone is reported failed."""
        state = self.read(job_id)
        if state is None or state["state"] not in (QUEUED, RUNNING) or self.held(job_id):
            return state
        if state["state"] == QUEUED and time.time() - state["queued_at"] < START_GRACE_S:
            return state  # its process is still starting
        return {**state, "state": FAILED, "error": DIED}

    def active(self) -> list[str]:
        """The jobs queued or running in this instance now: their process holds the lock, or is starting."""
        held = {path.stem for path in self.path.glob("*.lock") if self.held(path.stem)}
        starting = {path.stem for path in self.path.glob("*.json")
                    if path.stem not in held and time.time() - _mtime(path) < START_GRACE_S
                    and (self.status(path.stem) or {}).get("state") == QUEUED}
        return sorted(held | starting)

    def prune(self, keep: int = KEEP) -> list[str]:
        """Remove all but the newest ``keep`` jobs' files; a job whose process holds its lock stays."""
        jobs = sorted((path for path in self.path.glob("*.json") if JOB_ID.fullmatch(path.stem)),
                      key=_mtime, reverse=True)
        removed = []
        for path in jobs[keep:]:
            if not self.held(path.stem):
                path.unlink(missing_ok=True)
                self.lock(path.stem).unlink(missing_ok=True)
                removed.append(path.stem)
        for partial in self.path.glob(".*.tmp"):  # left by a process killed while writing
            if time.time() - _mtime(partial) > START_GRACE_S:
                partial.unlink(missing_ok=True)
        return removed

    @contextmanager
    def slot(self, poll_s: float = 0.5) -> Iterator[int]:
        """One of the AT_ONCE slots of this instance, waited for: the hard cap on forecasts running at once."""
        while True:
            for number in range(AT_ONCE):
                with _locked(self.path / f"slot-{number}.lock", wait=False) as taken:
                    if taken:
                        yield number
                        return
            time.sleep(poll_s)


def start(folder: Path | str, job: ForecastJob, launch=None) -> tuple[dict, bool]:
    """The job's state, and whether it was launched now: an identical job done or under way is reused.

    A failed job (or one whose process died) is started again. Refuses with
    :class:`ForecastBusy` when AT_ONCE jobs are already under way here.
    """
    jobs = ForecastFolder(folder)
    current = jobs.status(job.id)
    if current is not None and current["key"] == job.key and current["state"] != FAILED:
        return current, False
    under_way = jobs.active()
    if len(under_way) >= AT_ONCE:
        raise ForecastBusy(f"{len(under_way)} forecasts are running here (at most {AT_ONCE} at once): "
                           "try again when one has finished")
    state = jobs.write(job.id, queued(job, time.time()))
    (launch or spawn)(jobs.path, job)
    jobs.prune()
    return state, True


def spawn(folder: Path, job: ForecastJob) -> None:
    """Run the job in a spawned process: a fresh interpreter, which copies no thread, lock or pool of ours."""
    multiprocessing.active_children()  # reaps this process's finished forecasts
    context = multiprocessing.get_context("spawn")
    # Daemonic: if the web worker that started it exits, the job ends too, and reports it on the next poll.
    context.Process(target=run, args=(str(folder), job), name=f"gate-forecast-{job.id}", daemon=True).start()


class _Progress:
    """Scenario-days done, written to the job's file at most every WRITE_EVERY_S seconds."""

    def __init__(self, jobs: ForecastFolder, state: dict, total: int) -> None:
        self.jobs, self.state, self.total, self.done, self.written = jobs, state, total, 0, time.monotonic()

    def __call__(self, units: int) -> None:
        """Count ``units`` more scenario-days; write when it is time."""
        self.done += units
        if time.monotonic() - self.written >= WRITE_EVERY_S and self.done < self.total:
            self.state["progress"] = round(self.done / self.total, 4)
            self.jobs.write(self.state["id"], self.state)
            self.written = time.monotonic()


def run(folder: str, job: ForecastJob) -> None:
    """A forecast's process: hold the job's lock, wait for a slot, simulate, then write the result or the error."""
    jobs = ForecastFolder(folder)
    with _locked(jobs.lock(job.id)):
        state = jobs.read(job.id)
        if state is None or state["key"] != job.key or state["state"] == DONE:
            return  # another process finished it meanwhile, or it was pruned
        with jobs.slot():
            began = time.time()
            state.update(state=RUNNING, started_at=began, progress=0.0)
            jobs.write(job.id, state)
            try:
                result = simulate_job(job, _Progress(jobs, state, job.request.days * len(job.presets)))
            except Exception as error:  # noqa: BLE001 - the page must say why, whatever it was
                state.update(state=FAILED, error=str(error) or type(error).__name__)
            else:
                state.update(state=DONE, progress=1.0, result=result.as_dict())
            state.update(finished_at=time.time(), elapsed_s=round(time.time() - began, 3))
            jobs.write(job.id, state)


def simulate_job(job: ForecastJob, progress=None):
    """The job's simulation, as ``gate simulate --preset AGAINST --preset PRESET`` with its defaults runs it."""
    from gate.simulate.population import load_population
    from gate.simulate.runner import SimulatedBilling, catalogue
    from gate.simulate.runner import simulate as run_simulation

    population = load_population(job.population)
    presets = dict(job.presets)
    tz = next(iter(presets.values())).tz
    return run_simulation(
        population, presets, readers=job.request.readers, days=job.request.days, seed=job.request.seed,
        start=datetime.combine(FIRST_DAY, VISIT_TIME, tzinfo=tz),
        articles=catalogue(population.articles.count, job.sections),
        billing=SimulatedBilling.from_plans(list(job.plans)), population_path=job.population,
        progress=progress, workers=1)

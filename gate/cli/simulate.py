"""`gate simulate`: a thin click layer over the population simulator."""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from datetime import date, datetime, time, timedelta
from pathlib import Path

import click

from gate.conf.settings import Config, ConfigError
from gate.simulate import MAX_DAYS

#: Runs smaller than this (readers x days) stay in one process: starting workers costs more.
PARALLEL_FROM = 500_000
#: The time of day every simulated visit happens, in the site's time zone.
VISIT_TIME = time(12, 0)
#: The most scenarios (presets x plans x offers) one run compares.
MAX_SCENARIOS = 16
#: What --offer takes for "no code": the plan's own price.
NO_OFFER = "none"


def _saved_presets_dir() -> str | None:
    """Where the site keeps the presets saved in the rule studio, so a forecast's command line runs here too."""
    from flask.cli import ScriptInfo

    info = click.get_current_context().find_object(ScriptInfo)
    return info.load_app().config["PRESETS_DIR"] if info else None


def _config(config_dir: str | None) -> Config:
    """The site's validated configuration (saved presets included), or a clean error naming the broken file."""
    try:
        return Config(Path(config_dir) if config_dir else None, saved_dir=_saved_presets_dir())
    except ConfigError as error:
        raise click.ClickException(f"configuration error:\n{error}") from None


def _presets(cfg: Config, names: tuple[str, ...]) -> dict:
    """The named presets (the site's default when none is named), refused if unknown or repeated."""
    names = names or (cfg.publication.default_preset,)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise click.BadParameter(f"{repeated[0]!r} is given more than once", param_hint="'--preset'")
    try:
        return {name: cfg.preset(name) for name in names}
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="'--preset'") from None


def _start(text: str) -> date:
    """The first simulated day, from --start."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"not a date: {text!r} (use YYYY-MM-DD)", param_hint="'--start'") from None


def _outputs(csv_dir: str | None, plot_file: str | None) -> None:
    """Refuse output paths that cannot be written before simulating anything."""
    if csv_dir and Path(csv_dir).exists() and not Path(csv_dir).is_dir():
        raise click.BadParameter(f"{csv_dir} exists and is not a folder", param_hint="'--csv'")
    if plot_file and not Path(plot_file).resolve().parent.is_dir():
        raise click.BadParameter(f"no folder {Path(plot_file).parent} to write {plot_file} in",
                                 param_hint="'--plot'")


def _plan_ids(cfg: Config, asked: tuple[str, ...]) -> list[str]:
    """The plans to sell at, refused if unknown or repeated."""
    known = [plan.id for plan in cfg.plans]
    for plan_id in asked:
        if plan_id not in known:
            raise click.BadParameter(f"no plan named {plan_id!r} (have: {', '.join(known)})", param_hint="'--plan'")
        if asked.count(plan_id) > 1:
            raise click.BadParameter(f"{plan_id!r} is given more than once", param_hint="'--plan'")
    return list(asked)


def _offer_terms(cfg: Config, asked: tuple[str, ...]) -> list:
    """The codes to compare (None for --offer none), from config/site.toml, refused if unknown or repeated."""
    from gate.rules.offers import normalize_code
    from gate.services.offers import from_config

    configured = {normalize_code(offer.code): offer for offer in cfg.offers}
    codes = [normalize_code(text) for text in asked]
    chosen = []
    for text, code in zip(asked, codes):
        if codes.count(code) > 1:
            raise click.BadParameter(f"{code} is given more than once (codes are case-insensitive)",
                                     param_hint="'--offer'")
        if code == NO_OFFER.upper():
            chosen.append(None)
        elif code in configured:
            chosen.append(from_config(configured[code], cfg.publication.tz))
        else:
            have = ", ".join([NO_OFFER, *configured])
            raise click.BadParameter(f"no offer {text!r} in site.toml (have: {have})", param_hint="'--offer'")
    return chosen


def _usable(offer, plans: list[str], first: datetime, days: int) -> None:
    """Refuse a code that applies to none of the plans, or whose dates miss the run entirely."""
    if offer is None:
        return
    if not any(offer.applies_to(plan_id) for plan_id in plans):
        raise click.BadParameter(f"{offer.code} doesn't apply to plan {plans[0]!r} (it applies to: "
                                 f"{', '.join(offer.plans)})" if len(plans) == 1 else
                                 f"{offer.code} applies to none of the plans {', '.join(plans)} (it applies "
                                 f"to: {', '.join(offer.plans)})", param_hint="'--offer'")
    if offer.ends_at is not None and offer.ends_at <= first:
        raise click.BadParameter(f"{offer.code} ended on {offer.ends_at.date()}, before the run starts",
                                 param_hint="'--offer'")
    if offer.starts_at is not None and offer.starts_at >= first + timedelta(days=days):
        raise click.BadParameter(f"{offer.code} starts on {offer.starts_at.date()}, after the run ends",
                                 param_hint="'--offer'")


def _billings(cfg: Config, plan_ids: tuple[str, ...], codes: tuple[str, ...], first: datetime, days: int,
              presets: int) -> list:
    """The prices to compare: every plan asked with every code asked that applies to it.

    Nothing asked: an empty list, and the run sells the monthly plan as before.
    """
    from gate.simulate.runner import SimulatedBilling

    if not plan_ids and not codes:
        return []
    plans = _plan_ids(cfg, plan_ids) or [SimulatedBilling.from_plans(cfg.plans).plan]
    terms = _offer_terms(cfg, codes) if codes else [None]
    for offer in terms:
        _usable(offer, plans, first, days)
    billings = [SimulatedBilling.from_plans(cfg.plans, plan_id, offer) for plan_id in plans for offer in terms
                if offer is None or offer.applies_to(plan_id)]
    if presets * len(billings) > MAX_SCENARIOS:
        raise click.UsageError(f"{presets} preset(s) x {len(billings)} price(s) is more than {MAX_SCENARIOS} "
                               "scenarios: compare fewer at once")
    return billings


def _workers(asked: int, readers: int, days: int, scheduler) -> int:
    """0 means: one process per core for big runs, one for small ones (a cluster has its own workers)."""
    if asked and scheduler:
        raise click.BadParameter("--workers splits over processes here; with --scheduler the cluster's "
                                 "workers play the readers", param_hint="'--workers'")
    if asked:
        return asked
    return min(os.cpu_count() or 1, 8) if readers * days >= PARALLEL_FROM else 1


class SchedulerAddress(click.ParamType):
    """--scheduler: tcp://HOST:PORT of a Dask scheduler, local or local:N."""

    name = "address"

    def convert(self, value, param, ctx):
        """The parsed scheduler, or a usage error saying what is accepted."""
        from gate.simulate.cluster import Scheduler, parse_scheduler

        if isinstance(value, Scheduler):
            return value
        try:
            return parse_scheduler(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


def _cluster(scheduler):
    """The Dask cluster a run asked for, connected and checked, or no cluster."""
    if scheduler is None:
        return nullcontext()
    from gate.simulate.cluster import connect

    return connect(scheduler)


@click.command("simulate")
@click.option("--preset", "preset_names", multiple=True, metavar="NAME",
              help="A preset to run; repeat to compare several (default: the site's default preset).")
@click.option("--readers", type=click.IntRange(min=1, max=10_000_000), default=10_000, show_default=True,
              help="People in the population.")
@click.option("--days", type=click.IntRange(1, MAX_DAYS), default=90, show_default=True,
              help="Days to simulate.")
@click.option("--seed", type=int, default=42, show_default=True,
              help="Random seed: the same seed gives the same result.")
@click.option("--start", "start_text", default="2026-01-01", show_default=True, metavar="DATE",
              help="First simulated day (YYYY-MM-DD, in the site's time zone).")
@click.option("--plan", "plan_ids", multiple=True, metavar="ID",
              help="A plan to sell at (its intro price too); repeat to compare (default: the monthly plan).")
@click.option("--offer", "offer_codes", multiple=True, metavar="CODE",
              help="A promo code from site.toml, or 'none' for the plan's own price; repeat to compare.")
@click.option("--population", "population_file", type=click.Path(dir_okay=False), default=None,
              help="Population file (default: population.toml in the config folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON instead of the table.")
@click.option("--csv", "csv_dir", type=click.Path(file_okay=False), default=None,
              help="Write daily-PRESET.csv and summary.csv into this folder.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None,
              help="Write the daily funnel of each preset to this SVG file.")
@click.option("--workers", type=click.IntRange(0, 64), default=0, show_default=True,
              help="Processes to split the readers over (0: one per core for big runs).")
@click.option("--scheduler", type=SchedulerAddress(), default=None, metavar="ADDRESS",
              help="Play the readers on a Dask cluster: its scheduler's tcp://HOST:PORT, or local[:N] "
                   "to start N worker processes here (needs gate[cluster]).")
@click.option("--config-dir", type=click.Path(file_okay=False, exists=True), default=None, hidden=True)
def simulate(preset_names, readers, days, seed, start_text, plan_ids, offer_codes, population_file, as_json,
             csv_dir, plot_file, workers, scheduler, config_dir):
    """Run a population of readers through paywall presets and prices, and compare their funnels."""
    from gate.simulate.population import load_population  # NumPy is loaded only when simulating
    from gate.simulate.runner import SimulatedBilling, catalogue
    from gate.simulate.runner import simulate as run_simulation

    cfg = _config(config_dir)
    presets = _presets(cfg, tuple(preset_names))
    first_day = _start(start_text)
    tz = next(iter(presets.values())).tz
    start = datetime.combine(first_day, VISIT_TIME, tzinfo=tz)
    billings = _billings(cfg, plan_ids, offer_codes, start, days, len(presets))
    _outputs(csv_dir, plot_file)
    path = Path(population_file) if population_file else cfg.dir / "population.toml"
    try:
        population = load_population(path)
    except ConfigError as error:
        raise click.ClickException(f"population file error:\n{error}") from None
    workers = _workers(workers, readers, days, scheduler)
    if scheduler and any(billing.offer is not None and billing.offer.cap is not None for billing in billings):
        raise click.BadParameter("a code with a cap is one count over all readers, so it runs in one process",
                                 param_hint="'--scheduler'")
    scenarios = len(presets) * max(1, len(billings))
    try:
        with _cluster(scheduler) as cluster, click.progressbar(
                length=days * scenarios, label="Simulating", file=sys.stderr) as bar:
            result = run_simulation(
                population, presets, readers=readers, days=days, seed=seed, start=start,
                articles=catalogue(population.articles.count, cfg.publication.sections),
                billing=SimulatedBilling.from_plans(cfg.plans), population_path=path,
                progress=bar.update, workers=workers, billings=billings, cluster=cluster)
    except RuntimeError as error:  # a worker process or the cluster failed
        raise click.ClickException(str(error)) from None
    engine = (f"{result.workers} Dask worker{'s' if result.workers > 1 else ''} on {scheduler}" if scheduler
              else f"{result.workers} process{'es' if result.workers > 1 else ''}")
    _report(result, as_json, csv_dir, plot_file, engine)


def _report(result, as_json: bool, csv_dir: str | None, plot_file: str | None, engine: str) -> None:
    """The table (or JSON) on stdout; files as asked; the speed on stderr."""
    from gate.simulate import report

    click.echo(report.to_json(result) if as_json else report.table(result))
    if csv_dir:
        for written in report.write_csv(result, Path(csv_dir)):
            click.echo(f"Wrote {written}", err=True)
    if plot_file:
        click.echo(f"Wrote {report.write_plot(result, Path(plot_file))}", err=True)
    elapsed = max(result.elapsed_s, 1e-9)
    click.echo(f"Simulated {result.visits:,} visits ({result.views:,} article views) over "
               f"{len(result.outcomes)} scenario(s) in {elapsed:.1f} s: {result.visits / elapsed:,.0f} "
               f"visits/s ({engine}).", err=True)

"""A simulation's result as a comparison table, JSON, CSV files and an SVG chart."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from markupsafe import escape

from gate.services.charts import lines
from gate.simulate.runner import DAILY_FIELDS, SimulationResult

#: The comparison table: (summary key, label, format).
ROWS = (
    ("active_readers", "readers who came", "count"),
    ("visitors", "visitors (cookies and accounts)", "count"),
    ("visits", "visits", "count"),
    ("article_views", "article views", "count"),
    ("gate_impressions", "gate impressions", "count"),
    ("registrations", "registrations", "count"),
    ("unlocks", "unlocks (meter spends)", "count"),
    ("subscriptions", "subscriptions", "count"),
    ("churned", "churned", "count"),
    ("subscribers_end", "subscribers at the end", "count"),
    ("revenue_cents", "revenue", "money"),
    ("mrr_cents_end", "MRR at the end", "money"),
    ("redemptions", "codes redeemed", "count"),
    ("discounts_cents", "discounts given (off the list price)", "money"),
    ("subscribers_discounted_end", "still discounted at the end", "count"),
    ("discounted_share_end", "still discounted (share of subscribers)", "rate"),
    ("step_ups", "step-ups (price rose at renewal)", "count"),
    ("churned_at_step_up", "churned at a step-up", "count"),
    ("step_up_churn_rate", "churn at a step-up (per step-up)", "rate"),
    ("first_month_cohort", "subscribed in the first 30 days", "count"),
    ("first_month_cohort_retained", "of those, still subscribed at the end", "rate"),
    ("referral_reads", "side-door reads (search, social, newsletter)", "count"),
    ("side_door_readers", "readers who came in by a side door", "count"),
    ("side_door_registered", "of those, registrations after", "count"),
    ("side_door_subscribed", "of those, subscriptions after", "count"),
    ("gift_reads", "gift-link reads", "count"),
    ("gift_readers", "readers who read a gift", "count"),
    ("gift_registered", "of those, registrations after", "count"),
    ("gift_subscribed", "of those, subscriptions after", "count"),
    ("impression_rate", "impression rate (gates per view)", "rate"),
    ("wall_reach", "wall reach (readers gated)", "rate"),
    ("meter_reach", "meter reach (meter ran out)", "rate"),
    ("registration_rate", "registration rate (per reader)", "rate"),
    ("conversion_rate", "conversion rate (per reader)", "rate"),
    ("churn_rate", "churn (per renewal due)", "rate"),
    ("revenue_per_reader_cents", "revenue per reader", "money"),
)
#: The chart's panels per scenario: volumes, the rarer steps of the funnel, and the
#: subscribers, with those still discounted and the first month's subscribers followed
#: on (the retention cliff is where that cohort falls, when its intro price ends).
PANELS = (
    ("traffic", ["views", "gate_impressions", "unlocks"]),
    ("conversions", ["registrations", "subscriptions", "churned", "churned_at_step_up"]),
    ("subscribers", ["subscribers", "discounted", "first_month_cohort"]),
)


#: The console forecast's table: the headline rows of ROWS (the price experiments' rows say nothing there).
FORECAST_KEYS = ("active_readers", "visits", "article_views", "gate_impressions", "registrations", "unlocks",
                 "subscriptions", "churned", "subscribers_end", "revenue_cents", "mrr_cents_end",
                 "referral_reads", "impression_rate", "wall_reach", "meter_reach", "registration_rate",
                 "conversion_rate", "churn_rate", "revenue_per_reader_cents")
#: The forecast's daily funnel: one chart per step, both presets' lines on one scale.
FORECAST_PANELS = (
    ("gate_impressions", "Gate impressions a day"),
    ("registrations", "Registrations a day"),
    ("subscriptions", "Subscriptions a day"),
    ("subscribers", "Subscribers"),
)


def _cell(value, kind: str, currency: str) -> str:
    """One value of the table: a count, an amount of money or a percentage."""
    if kind == "count":
        return f"{value:,}"
    if kind == "money":
        return f"{currency} {value / 100:,.2f}"
    return f"{value * 100:.2f}%"


def heading(result: SimulationResult) -> str:
    """One line naming everything needed to run it again."""
    meta = result.meta
    return (f"gate {meta['version']} · seed {meta['seed']} · {meta['readers']:,} readers · "
            f"{meta['days']} days from {meta['first_day']} · population {meta['population'] or '(given)'}")


def table(result: SimulationResult) -> str:
    """The scenarios side by side: counts, money and the rates between them, then each one's price."""
    currency = result.billing.currency
    names = [outcome.name for outcome in result.outcomes]
    summaries = [result.summary(name) for name in names]
    label_width = max(len(label) for _, label, _ in ROWS)
    cells = [[_cell(summary[key], kind, currency) for summary in summaries] for key, _, kind in ROWS]
    widths = [max(len(name), *(len(row[i]) for row in cells)) for i, name in enumerate(names)]
    lines_out = [heading(result), "",
                 " " * label_width + "".join(f"  {name:>{width}}" for name, width in zip(names, widths))]
    for (_, label, _), row in zip(ROWS, cells):
        lines_out.append(f"{label:<{label_width}}" +
                         "".join(f"  {cell:>{width}}" for cell, width in zip(row, widths)))
    lines_out.append("")
    for outcome in result.outcomes:
        lines_out.append(f"{outcome.name}: {outcome.billing.plan} plan, {outcome.billing.describe()}")
    for outcome in result.outcomes:
        if outcome.experiments_ignored:
            lines_out.append(f"\n{outcome.preset}: experiments not applied, every reader gets the "
                             f"preset's base rules ({', '.join(outcome.experiments_ignored)})")
    return "\n".join(lines_out)


def to_json(result: SimulationResult) -> str:
    """The full result, with what produced it (seed, presets, population, version)."""
    return json.dumps(result.as_dict(), indent=2)


def _csv(rows: list[dict], fields: list[str]) -> str:
    """Rows as CSV text, header first."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_csv(result: SimulationResult, directory: Path) -> list[Path]:
    """daily-SCENARIO.csv for each scenario (named after its preset when nothing else varies) and summary.csv."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for outcome in result.outcomes:
        path = directory / f"daily-{outcome.name}.csv"
        path.write_text(_csv(outcome.daily, list(DAILY_FIELDS)))
        written.append(path)
    meta = result.meta
    run = {"seed": meta["seed"], "population_size": meta["readers"], "days": meta["days"],
           "first_day": meta["first_day"], "population_file": meta["population"] or "",
           "version": meta["version"]}
    rows = [{"preset": outcome.preset, "scenario": outcome.name, "plan": outcome.billing.plan,
             "offer": outcome.billing.offer.code if outcome.billing.offer else "",
             **result.summary(outcome.name), **run}
            for outcome in result.outcomes]
    path = directory / "summary.csv"
    path.write_text(_csv(rows, list(rows[0])))
    written.append(path)
    return written


def plot(result: SimulationResult) -> str:
    """One SVG: for each scenario, its daily traffic, conversions and subscribers (the cliff shows there)."""
    width, panel_h, title_h = 720, 260, 26
    parts, y = [], 0
    for outcome in result.outcomes:
        for name, series in PANELS:
            title = f"{outcome.name}: daily {name}"
            chart = str(lines(outcome.daily, series, title=title))
            placed = chart.replace("<svg ", f'<svg x="0" y="{y + title_h}" width="{width}" '
                                   f'height="{panel_h}" ', 1)
            parts.append(f'<text x="8" y="{y + 18}" class="chart__heading">{escape(title)}</text>{placed}')
            y += title_h + panel_h
    style = ("<style>.chart__tick{font:11px sans-serif;fill:#555}"
             ".chart__axis{stroke:#999}.chart__heading{font:bold 14px sans-serif;fill:#222}</style>")
    label = escape(heading(result))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {y}" width="{width}" '
            f'height="{y}" role="img" aria-label="{label}"><title>{label}</title>{style}'
            + "".join(parts) + "</svg>\n")


def write_plot(result: SimulationResult, path: Path) -> Path:
    """Write the SVG chart to ``path``."""
    path = Path(path)
    path.write_text(plot(result))
    return path


def _difference(base, other, kind: str, currency: str) -> str:
    """How far ``other`` is from ``base``: percentage points for a rate, else signed, with the change in %."""
    if other == base:
        return "no change"
    if kind == "rate":
        return f"{(other - base) * 100:+.2f} pp"
    change = f" ({(other - base) / base * 100:+.1f}%)" if base else ""
    if kind == "money":
        return f"{'+' if other >= base else '−'}{currency} {abs(other - base) / 100:,.2f}{change}"
    return f"{other - base:+,}{change}"


def compare(result: dict, base: str, other: str) -> list[dict]:
    """The forecast's table from a result's JSON: each headline figure of ``base`` and ``other``, and the change."""
    summaries = {item["scenario"]: item["summary"] for item in result["results"]}
    currency = result["plan"]["currency"]
    rows = []
    for key, label, kind in ROWS:
        if key in FORECAST_KEYS:
            first, second = summaries[base][key], summaries[other][key]
            rows.append({"key": key, "label": label, "kind": kind, "base": first, "other": second,
                         "base_text": _cell(first, kind, currency), "other_text": _cell(second, kind, currency),
                         "difference": _difference(first, second, kind, currency)})
    return rows


def compared_daily(result: dict, names: list[str]):
    """The forecast's daily funnel from a result's JSON: (title, SVG) per step, one line per preset."""
    daily = {item["scenario"]: item["daily"] for item in result["results"]}
    charts = []
    for field, title in FORECAST_PANELS:
        rows = [{"day": row["day"], **{name: daily[name][index][field] for name in names}}
                for index, row in enumerate(daily[names[0]])]
        charts.append((title, lines(rows, names, f"{title}: {' and '.join(names)}")))
    return charts

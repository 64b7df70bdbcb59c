"""Offers in `gate simulate`: intro prices and codes priced by the billing rules, elasticity and the cliff."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

from gate.cli.simulate import simulate as simulate_command
from gate.conf.settings import Config
from gate.rules.billing import add_months
from gate.services.offers import from_config
from gate.simulate import report
from gate.simulate import runner as sim
from gate.simulate.population import Population, PriceResponse
from gate.simulate.runner import SimulatedBilling, catalogue
from gate.simulate.shards import BLOCK_READERS

#: Frequent readers at a hard wall who answer a lower first price strongly and leave at the step-up.
EAGER = {"articles": {"count": 20}, "segments": {"eager": {
    "share": 1.0, "visits": {"mean": 5.0, "per": "week", "distribution": "poisson"}, "articles_per_visit": 1.5,
    "registers": 0.0, "unlocks": 0.0, "subscribes_when_exhausted": 0.004, "subscribes_otherwise": 0.004,
    "cookie_loss": 0.0, "churn": 0.05, "price": {"conversion_elasticity": 3.0, "step_up_churn": 0.7}}}}


@pytest.fixture(scope="module")
def cfg():
    """The shipped configuration, loaded once for the module."""
    return Config()


@pytest.fixture(scope="module")
def eager():
    """The EAGER population, validated like a population file."""
    return Population.model_validate(EAGER)


def offer(cfg, code):
    """A code of config/site.toml as terms."""
    return from_config(next(o for o in cfg.offers if o.code == code), cfg.publication.tz)


def billing(cfg, plan=None, code=None):
    """What subscribers are charged: a plan of site.toml, with one of its codes."""
    return SimulatedBilling.from_plans(cfg.plans, plan, offer(cfg, code) if code else None)


def run(cfg, population, billings, readers=400, days=75, seed=3, trace=None, workers=1, preset="hard"):
    """The simulator as a library, comparing prices on one preset."""
    rules = {preset: cfg.preset(preset)}
    start = datetime(2026, 1, 1, 12, tzinfo=rules[preset].tz)
    return sim.simulate(population, rules, readers=readers, days=days, seed=seed, start=start,
                        articles=catalogue(population.articles.count, cfg.publication.sections),
                        billing=SimulatedBilling.from_plans(cfg.plans), trace=trace, workers=workers,
                        billings=billings)


def invoke(*args):
    """Run `gate simulate` with these arguments."""
    return CliRunner().invoke(simulate_command, [str(arg) for arg in args])


# --- the population's price response ----------------------------------------------------


@pytest.mark.parametrize("first, list_cents, elasticity, lift", [
    (1200, 1200, 2.5, 1.0),      # the list price: no lift
    (600, 1200, 2.0, 2.0),       # half price, elasticity 2: twice as likely
    (0, 1200, 3.0, 4.0),         # free: 1 + elasticity
    (100, 1200, 0.0, 1.0),       # an indifferent segment
])
def test_lift_is_linear_in_the_share_taken_off(first, list_cents, elasticity, lift):
    assert PriceResponse(conversion_elasticity=elasticity).lift(first, list_cents) == pytest.approx(lift)


@pytest.mark.parametrize("old, new, cliff", [(0, 1200, 0.6), (600, 1200, 0.3), (1200, 1200, 0.0), (1200, 600, 0.0)])
def test_the_cliff_scales_with_the_step(old, new, cliff):
    assert PriceResponse(step_up_churn=0.6).cliff(old, new) == pytest.approx(cliff)


# --- offers in the run ---------------------------------------------------------------------


def test_an_intro_price_converts_more_by_day_30_and_loses_more_at_the_step_up(cfg, eager):
    result = run(cfg, eager, [billing(cfg, "monthly"), billing(cfg, "intro-monthly")])
    plain, intro = (result.summary(name) for name in ("hard@monthly", "hard@intro-monthly"))
    by_day_30 = {o.name: sum(row["subscriptions"] for row in o.daily[:30]) for o in result.outcomes}
    assert by_day_30["hard@intro-monthly"] > 1.5 * by_day_30["hard@monthly"] > 0
    assert plain["step_ups"] == plain["churned_at_step_up"] == 0
    assert intro["step_ups"] > 0 and intro["step_up_churn_rate"] > 0.4
    assert intro["churn_rate"] > 2 * plain["churn_rate"]
    # the cliff: everyone is on the intro price for a month, then subscribers fall at the step-ups
    daily = {o.name: o.daily for o in result.outcomes}
    intro_days, plain_days = daily["hard@intro-monthly"], daily["hard@monthly"]
    assert intro_days[29]["discounted"] == intro_days[29]["subscribers"] > 0
    assert intro_days[40]["subscribers"] < intro_days[30]["subscribers"]
    assert plain_days[40]["subscribers"] > plain_days[30]["subscribers"]
    assert plain["subscribers_discounted_end"] == 0 < intro["subscribers_discounted_end"]
    # the first month's subscribers, followed on: the intro cohort falls when its price steps up
    assert intro_days[29]["first_month_cohort"] > 1.2 * intro_days[45]["first_month_cohort"]
    assert intro["first_month_cohort_retained"] < plain["first_month_cohort_retained"]


def _expected_revenue(steps, sold: SimulatedBilling, days: int) -> int:
    """Each subscription's charges priced by PlanTerms.price, on its monthly cycle, until it churns or the run ends.

    The code goes to a reader's first subscription (WELCOME50 and FREEMONTH are for new
    subscribers only) while its cap lasts.
    """
    start = datetime(2026, 1, 1, 12)
    total, redeemed, paid_before, open_since = 0, 0, set(), {}

    def charged(reader, end):
        first, discount = open_since.pop(reader)
        anchor = start + timedelta(days=first)
        charge_days = (days_between(start, add_months(anchor, k)) for k in range(0, 1000))
        count = next(k for k, day in enumerate(charge_days) if day >= end)
        return sum(sold.terms.price(discount, index)[0] for index in range(count))

    for step in steps:
        if step.kind == "subscribe":
            cap = sold.offer.cap if sold.offer else None
            gets = sold.offer is not None and step.reader not in paid_before and (cap is None or redeemed < cap)
            redeemed += gets
            paid_before.add(step.reader)
            open_since[step.reader] = (step.day, sold.discount if gets else None)
        elif step.kind == "churn":
            total += charged(step.reader, step.day)
    return total + sum(charged(reader, days) for reader in list(open_since))


def days_between(start: datetime, moment: datetime) -> int:
    """Whole calendar days from the first simulated day to a moment."""
    return (moment.date() - start.date()).days


@pytest.mark.parametrize("plan, code", [("intro-monthly", None), ("monthly", "WELCOME50"), ("monthly", "FREEMONTH")])
def test_revenue_is_the_sum_of_the_charges_the_billing_rules_price(cfg, eager, plan, code):
    sold = billing(cfg, plan, code)
    steps = []
    result = run(cfg, eager, [sold], readers=150, days=100, seed=8, trace=steps.append)
    summary = result.summary(f"hard@{sold.label}")
    assert summary["churned"] > 0 and summary["renewals"] > 0
    assert summary["revenue_cents"] == sum(row["revenue_cents"] for row in result.outcomes[0].daily)
    assert summary["revenue_cents"] == _expected_revenue(steps, sold, 100)
    first_timers = len({step.reader for step in steps if step.kind == "subscribe"})
    assert summary["redemptions"] == (0 if code is None else first_timers)


def test_a_capped_code_is_redeemed_at_most_cap_times_and_in_one_process(cfg, eager):
    flash = billing(cfg, "monthly", "FLASH10")
    result = run(cfg, eager, [flash], readers=2 * BLOCK_READERS + 100, days=8, workers=2)
    summary = result.summary("hard@monthly+FLASH10")
    assert result.workers == 1
    assert summary["subscriptions"] > 30 and summary["redemptions"] == 10  # one count over every block


@pytest.mark.slow
def test_scenarios_split_over_processes_give_the_same_result(cfg, eager):
    prices = [billing(cfg, "monthly"), billing(cfg, "intro-monthly")]
    one = run(cfg, eager, prices, readers=BLOCK_READERS + 200, days=8)  # two blocks
    two = run(cfg, eager, prices, readers=BLOCK_READERS + 200, days=8, workers=2)
    assert two.workers == 2 and one.as_dict() == two.as_dict()


# --- the command ------------------------------------------------------------------------------


def test_same_options_same_json_with_plans_and_offers():
    args = ["--preset", "metered", "--plan", "monthly", "--plan", "intro-monthly", "--offer", "none",
            "--offer", "welcome50", "--readers", 600, "--days", 12, "--json"]
    first, again = invoke(*args), invoke(*args)
    assert first.exit_code == 0, first.output
    assert first.stdout == again.stdout
    data = json.loads(first.stdout)
    # WELCOME50 is for the monthly plan only, so intro-monthly is run without it
    assert [r["scenario"] for r in data["results"]] == [
        "metered@monthly", "metered@monthly+WELCOME50", "metered@intro-monthly"]
    assert data["results"][1]["plan"]["terms"] == "$6 a month for your first 3 months, then $12 a month"
    assert {"discounted", "step_ups", "churned_at_step_up"} <= set(data["results"][0]["daily"][0])


def test_table_and_chart_show_the_prices_and_the_discounted(tmp_path):
    svg = tmp_path / "cliff.svg"
    result = invoke("--preset", "hard", "--plan", "intro-monthly", "--readers", 300, "--days", 5, "--plot", svg)
    assert result.exit_code == 0, result.output
    assert "hard@intro-monthly: intro-monthly plan, $1 for your first month, then $12 a month" in result.stdout
    for label in ("codes redeemed", "still discounted (share of subscribers)", "churn at a step-up"):
        assert label in result.stdout
    headings = [t.text for t in ET.parse(svg).getroot().iter("{http://www.w3.org/2000/svg}text")]
    assert "hard@intro-monthly: daily subscribers" in headings and "discounted" in headings


@pytest.mark.parametrize("args, message", [
    (["--plan", "weekly"], "no plan named 'weekly' (have: monthly, annual, intro-monthly)"),
    (["--plan", "monthly", "--plan", "monthly"], "'monthly' is given more than once"),
    (["--offer", "NOPE"], "no offer 'NOPE' in site.toml (have: none, WELCOME50"),
    (["--offer", "welcome50", "--offer", "WELCOME50"], "WELCOME50 is given more than once (codes are case-"),
    (["--offer", "ANNUAL20"], "ANNUAL20 doesn't apply to plan 'monthly' (it applies to: annual)"),
    (["--plan", "monthly", "--plan", "intro-monthly", "--offer", "ANNUAL20"],
     "ANNUAL20 applies to none of the plans monthly, intro-monthly"),
    (["--offer", "SPRING26", "--days", "30"], "SPRING26 starts on 2026-03-01, after the run ends"),
    (["--offer", "SPRING26", "--start", "2026-07-01"], "SPRING26 ended on 2026-06-01, before the run starts"),
    (["--preset", "hard", "--preset", "wpr", "--preset", "metered", "--preset", "freemium", "--plan", "monthly",
      "--plan", "annual", "--plan", "intro-monthly", "--offer", "none", "--offer", "FLASH10", "--offer",
      "WELCOME50"], "4 preset(s) x 5 price(s) is more than 16 scenarios"),
])
def test_bad_plans_and_offers_are_refused_and_nothing_is_written(tmp_path, args, message):
    out = tmp_path / "csv"
    result = invoke(*args, "--readers", 10, "--csv", out)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists() and "Simulated" not in result.output


def test_csv_names_each_scenario(tmp_path, cfg, eager):
    result = run(cfg, eager, [billing(cfg, "monthly"), billing(cfg, "monthly", "WELCOME50")], readers=50, days=3)
    written = {path.name for path in report.write_csv(result, tmp_path)}
    assert written == {"daily-hard@monthly.csv", "daily-hard@monthly+WELCOME50.csv", "summary.csv"}
    assert "scenario,plan,offer" in (tmp_path / "summary.csv").read_text().splitlines()[0]

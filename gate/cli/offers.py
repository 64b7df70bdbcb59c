"""`gate offers`: promo codes — add one, list them, disable one, show one with its redemptions and revenue."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import click
from flask.cli import with_appcontext

from gate.app import site
from gate.app.db import get_db
from gate.cli.base import refusing
from gate.cli.sitetime import now, tz
from gate.rules import offers as rules
from gate.services import offers

_DATE = click.DateTime(formats=["%Y-%m-%d"])


@click.group("offers")
def offers_group():
    """Promo codes: add, list, disable and show them."""


def _cents(amount: str | None) -> int | None:
    """A money amount as typed (5, 4.50) in cents, refused unless positive with at most two decimals."""
    if amount is None:
        return None
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise click.BadParameter(f"{amount!r} is not an amount (like 5 or 4.50)", param_hint="--amount-off") from None
    if not value.is_finite() or value <= 0 or value != value.quantize(Decimal("0.01")):
        raise click.BadParameter(f"{amount!r} must be above 0 with at most two decimals", param_hint="--amount-off")
    return int(value * 100)


#: The option (or argument) of `gate offers add` each field of :func:`gate.services.offers.build` comes from.
OPTIONS = {"code": "CODE", "name": "--name", "percent_off": "--percent-off", "amount_off_cents": "--amount-off",
           "free_periods": "--free-periods", "duration": "--duration", "periods": "--periods", "plans": "--plan",
           "starts": "--starts", "ends": "--ends", "cap": "--cap", "new_only": "--new-only"}


def _terms(**values):
    """The offer the options describe, built as the console builds one (checked like ``[[offers]]``)."""
    try:
        return offers.build(**values, tz=tz(), known_plans={plan.id for plan in site.config().plans}, source="cli")
    except offers.OfferInputError as error:
        raise click.ClickException(f"{OPTIONS.get(error.field, 'offer')}: {_in_options(error.message)}") from None


def _in_options(message: str) -> str:
    """A refusal worded by the CLI's options: 'give exactly one of --percent-off, --amount-off, …'."""
    for field in ("percent_off", "amount_off_cents", "free_periods"):
        message = message.replace(field, OPTIONS[field])
    return message


@offers_group.command("add")
@click.argument("code")
@click.option("--name", default=None, help="What readers see the offer called (default: the code).")
@click.option("--percent-off", type=int, default=None, help="Percent off each covered period (1–100).")
@click.option("--amount-off", default=None, help="Amount off each covered period, in the plan's currency (5 or 4.50).")
@click.option("--free-periods", type=int, default=None, help="This many whole periods free (a free offer's duration).")
@click.option("--duration", type=click.Choice(["once", "repeating", "forever"]), default="once", show_default=True,
              help="The first paid period, the first --periods, or every period.")
@click.option("--periods", type=int, default=None, help="Paid periods a repeating offer covers.")
@click.option("--plan", "plans", multiple=True, help="A plan id it applies to (repeat; none: every plan).")
@click.option("--starts", type=_DATE, default=None, help="First day it works (YYYY-MM-DD, site time zone).")
@click.option("--ends", type=_DATE, default=None, help="First day it no longer works (YYYY-MM-DD, exclusive).")
@click.option("--cap", type=int, default=None, help="At most this many redemptions.")
@click.option("--new-only", is_flag=True, help="Only for readers who never subscribed.")
@with_appcontext
@refusing
def offers_add(code, name, percent_off, amount_off, free_periods, duration, periods, plans, starts, ends, cap,
               new_only):
    """Add a promo code (exactly one of --percent-off, --amount-off, --free-periods)."""
    terms = _terms(code=code, name=name or code.upper(), percent_off=percent_off,
                   amount_off_cents=_cents(amount_off), free_periods=free_periods, duration=duration,
                   periods=periods, plans=plans, starts=starts.date() if starts else None,
                   ends=ends.date() if ends else None, cap=cap, new_only=new_only)
    offers.create(get_db(), site.config(), terms, now())
    click.echo(f"Added {terms.code}: {_discount(terms)}, {_duration(terms)}"
               f"{f', cap {terms.cap}' if terms.cap else ''}")


def _discount(offer) -> str:
    """The discount in words: 50% off, $5 off, 1 free period."""
    if offer.kind == "percent":
        return f"{offer.value}% off"
    if offer.kind == "amount":
        return f"{rules.money(offer.value)} off"
    return f"{offer.value} free period{'s' if offer.value != 1 else ''}"


def _duration(offer) -> str:
    """How long it lasts: once, 3 periods, forever."""
    covered = rules.covered_periods(offer)
    if covered is None:
        return "forever"
    return "once" if covered == 1 else f"{covered} periods"


def _window(offer) -> str:
    """The validity window as dates in the site's time zone (the end exclusive)."""
    def day(moment):
        return moment.astimezone(tz()).date().isoformat() if moment else "…"
    return "always" if not (offer.starts_at or offer.ends_at) else f"{day(offer.starts_at)} – {day(offer.ends_at)}"


@offers_group.command("list")
@with_appcontext
def offers_list():
    """List every code: discount, duration, window, cap, redemptions and status."""
    database, moment = get_db(), now()
    click.echo(f"{'code':<14} {'discount':<16} {'duration':<10} {'window':<25} {'cap':>5} {'redeemed':>8}  status")
    for offer in offers.all_offers(database, site.config(), moment):
        count = offers.redeemed(database, offer.code)
        click.echo(f"{offer.code:<14} {_discount(offer):<16} {_duration(offer):<10} {_window(offer):<25}"
                   f" {offer.cap if offer.cap else '—':>5} {count:>8}  {offers.status(offer, count, moment)}")


def _existing(code: str):
    """The offer a code names, or a clean refusal."""
    offer = offers.find(get_db(), site.config(), code, now())
    if offer is None:
        raise click.ClickException(f"there is no offer with the code {rules.normalize_code(code)}")
    return offer


@offers_group.command("disable")
@click.argument("code")
@with_appcontext
@refusing
def offers_disable(code):
    """Stop a code being redeemed (subscriptions already sold with it keep their price)."""
    offer = offers.set_enabled(get_db(), site.config(), _existing(code).code, False, now())
    click.echo(f"Disabled {offer.code} ({offers.redeemed(get_db(), offer.code)} redemptions kept)")


@offers_group.command("show")
@click.argument("code")
@with_appcontext
@refusing
def offers_show(code):
    """One code in full: its terms, its redemptions and the revenue charged with it."""
    database, offer = get_db(), _existing(code)
    count = offers.redeemed(database, offer.code)
    money = offers.revenue(database, offer.code)
    click.echo(f"{offer.code}: {offer.name} ({offers.status(offer, count, now())}, from {offer.source})")
    click.echo(f"  discount {_discount(offer)}, {_duration(offer)}; plans {', '.join(offer.plans) or 'all'};"
               f" window {_window(offer)}; cap {offer.cap or 'none'}{'; new subscribers only' if offer.new_only else ''}")
    click.echo(f"  redeemed {count}; {money['payments']} payments charged {rules.money(money['charged'])},"
               f" {rules.money(money['discounted'])} below list price")
    for row in offers.redemptions(database, offer.code):
        what = (f"subscription {row['subscription_id']}" if row["subscription_id"]
                else f"pass {row['pass_id']}" if row["pass_id"] else "")
        click.echo(f"  {row['at']}  {row['email']:<32} {what}")

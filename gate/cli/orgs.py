"""`gate orgs`: group licences — organisations, their seats and members, invitations."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from gate.app import site
from gate.app.db import get_db
from gate.cli.base import refusing
from gate.cli.sitetime import now, tz
from gate.rules.timeutil import parse_moment
from gate.services import accounts, orgs


@click.group("orgs")
def orgs_group():
    """Group licences: organisations whose members read everything."""


def _when(moment) -> str:
    """A moment in the site's zone, to the minute (or 'no end')."""
    return moment.astimezone(tz()).isoformat(timespec="minutes") if moment else "no end"


@orgs_group.command("add")
@click.argument("name")
@click.option("--seats", type=int, required=True, help="How many members the licence holds at once.")
@click.option("--slug", default=None, help="The org's URL slug (default: made from the name).")
@click.option("--domain", default=None, help="Email domain whose readers may join by a mailed link.")
@click.option("--ip", "ip_ranges", multiple=True, help="An IP range (CIDR) whose readers may join; repeatable.")
@click.option("--until", default=None, help="When the licence ends (ISO date or date-time, site time zone).")
@with_appcontext
@refusing
def orgs_add(name, seats, slug, domain, ip_ranges, until):
    """Add an organisation with a licence of --seats seats, running from now."""
    org = orgs.create(get_db(), name, seats, now(), slug=slug, domain=domain, ip_ranges=ip_ranges,
                      until=parse_moment(until, tz()) if until else None)
    click.echo(f"Added {org.name} ({org.slug}): {org.seats} seats until {_when(org.active_until)}")


@orgs_group.command("list")
@with_appcontext
def orgs_list():
    """List organisations with their seats used."""
    database = get_db()
    for org in orgs.all_orgs(database):
        click.echo(f"{org.slug:<28} {orgs.seats_used(database, org.id):>6} of {org.seats:<6} seats"
                   f"  until {_when(org.active_until)}  {org.name}")


@orgs_group.command("show")
@click.argument("slug")
@with_appcontext
@refusing
def orgs_show(slug):
    """Show one organisation: its licence, ways to join and seats used."""
    database = get_db()
    org = orgs.get(database, slug)
    readings = orgs.reading(database, org, now())
    share = orgs.core_share(readings)
    click.echo(f"{org.name} ({org.slug})\n"
               f"  seats: {len(readings)} of {org.seats} used\n"
               f"  runs: {_when(org.active_from)} until {_when(org.active_until)}"
               f"{' (' + org.refusal_at(now()) + ')' if org.refusal_at(now()) else ''}\n"
               f"  domain: {org.domain or '-'}\n  ip ranges: {', '.join(org.ip_ranges) or '-'}\n"
               f"  core readers ({orgs.CORE_READS}+ articles in {orgs.READING_DAYS} days): "
               f"{'-' if share is None else f'{share:.0%}'}")


@orgs_group.command("members")
@click.argument("slug")
@with_appcontext
@refusing
def orgs_members(slug):
    """List an organisation's members with the articles each read in the last 30 days."""
    database = get_db()
    for row in orgs.reading(database, orgs.get(database, slug), now()):
        click.echo(f"seat {row.member.seat:>4}  {row.email:<36} {row.member.via:<7} "
                   f"joined {_when(row.member.joined_at)}  read {row.reads}{' (core)' if row.core else ''}")


@orgs_group.command("invite")
@click.argument("slug")
@click.argument("email")
@with_appcontext
@refusing
def orgs_invite(slug, email):
    """Mail EMAIL a single-use link that joins the organisation."""
    database, moment, email = get_db(), now(), accounts.normalize_email(email)
    org = orgs.get(database, slug)
    jti = orgs.invite(database, slug, email, moment, by="cli")
    orgs.send_link(database, site.config(), current_app.secret_key, org, email, jti, "invite", moment)
    click.echo(f"Invitation to {org.name} sent to {email} (see `gate outbox`).")

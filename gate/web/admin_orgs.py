"""The console's group licences: every organisation, seats used, members' reading, core readers, invitations."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from gate.app.context import current
from gate.app.db import get_db
from gate.rules.timeutil import parse_moment
from gate.services import accounts, orgs
from gate.web.admin import _admins_only, _record
from gate.web.forms import ConfirmForm
from gate.web.orgs import send_link

bp = Blueprint("admin_orgs", __name__, url_prefix="/admin/orgs")
bp.before_request(_admins_only)


def _org(slug: str) -> orgs.Org:
    """The organisation at ``slug``, or 404."""
    org = orgs.by_slug(get_db(), slug)
    if org is None:
        abort(404, description=f"There is no organisation {slug!r}.")
    return org


def _new_org(form) -> orgs.Org:
    """Make an organisation from the add form, or OrgError/ValueError saying what is wrong."""
    seats = form.get("seats", "").strip()
    if not seats.isdigit():
        raise orgs.OrgError("Seats must be a whole number.")
    until = form.get("until", "").strip()
    return orgs.create(get_db(), form.get("name", ""), int(seats), current().now, domain=form.get("domain"),
                       ip_ranges=form.get("ip_ranges", "").replace(",", " ").split(),
                       until=parse_moment(until, current().rules.tz) if until else None)


@bp.route("", methods=["GET", "POST"])
def index():
    """Every organisation with its seats used; POST adds one."""
    if request.method == "POST" and ConfirmForm().validate_on_submit():
        try:
            org = _new_org(request.form)
        except ValueError as error:
            flash(str(error), "warning")
        else:
            _record("org_added", org.slug, seats=org.seats)
            flash(f"Added {org.name} with {org.seats} seats.", "success")
            return redirect(url_for("admin_orgs.org", slug=org.slug), code=303)
    db = get_db()
    rows = [(org, orgs.seats_used(db, org.id)) for org in orgs.all_orgs(db)]
    return render_template("admin/orgs.html", rows=rows, form=ConfirmForm(), now=current().now)


@bp.get("/<slug>")
def org(slug: str):
    """One organisation: seats used of total, members and their reading, the share of core readers."""
    found = _org(slug)
    readings = orgs.reading(get_db(), found, current().now)
    return render_template("admin/org.html", org=found, readings=readings, share=orgs.core_share(readings),
                           core=orgs.CORE_READS, days=orgs.READING_DAYS, form=ConfirmForm(),
                           closed=found.refusal_at(current().now))


@bp.post("/<slug>/invite")
def invite(slug: str):
    """Mail an invitation link to an address."""
    found = _org(slug)
    if ConfirmForm().validate_on_submit():
        try:
            email = accounts.normalize_email(request.form.get("email", ""))
            send_link(found, email, orgs.invite(get_db(), slug, email, current().now, by=current_user.email), "invite")
        except accounts.AccountError as error:
            flash(str(error), "warning")
        else:
            _record("org_invited", slug, email=email)
            flash(f"Invitation sent to {email}.", "success")
    return redirect(url_for("admin_orgs.org", slug=slug), code=303)

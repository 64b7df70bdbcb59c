"""Group licences for readers: an organisation's page, joining (domain link, IP range, invitation) and leaving."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from gate.app import ratelimit, site
from gate.app.context import current
from gate.app.db import get_db
from gate.app.ratelimit import limiter
from gate.services import orgs
from gate.web.auth import sign_in
from gate.web.forms import ConfirmForm

bp = Blueprint("orgs", __name__)


def _org(slug: str) -> orgs.Org:
    """The organisation at ``slug``, or 404."""
    org = orgs.by_slug(get_db(), slug)
    if org is None:
        abort(404, description=f"There is no organisation {slug!r}.")
    return org


def client_address() -> str | None:
    """The client's address: the socket's, or (only with GATE_PROXY_COUNT set) ProxyFix's from X-Forwarded-For."""
    return request.remote_addr


def send_link(org: orgs.Org, email: str, jti: str, via: str) -> None:
    """Mail a single-use join link (through the outbox); its URL is on the configured origin."""
    orgs.send_link(get_db(), site.config(), current_app.secret_key, org, email, jti, via, current().now)


@bp.get("/orgs/<slug>")
def page(slug: str):
    """An organisation's licence: who may join and how, and the reader's membership."""
    org, db = _org(slug), get_db()
    member = current_user.is_authenticated and any(
        o.id == org.id for o, _ in orgs.memberships(db, current_user.id))
    return render_template("orgs/org.html", org=org, used=orgs.seats_used(db, org.id), member=member,
                           in_range=org.covers_address(client_address()), form=ConfirmForm(),
                           closed=org.refusal_at(current().now), labels=orgs.REFUSAL_LABELS)


def _back(slug: str):
    return redirect(url_for("orgs.page", slug=slug), code=303)


def _posted() -> bool:
    """A POST with a valid CSRF token (CSRFProtect already refused bad ones)."""
    return ConfirmForm().validate_on_submit()


@bp.post("/orgs/<slug>/domain")
@login_required
@limiter.limit(ratelimit.MAGIC_LINK_IP)
def ask_domain(slug: str):
    """Mail the signed-in reader a link proving their address is on the org's domain."""
    org = _org(slug)
    if not _posted():
        return _back(slug)
    try:
        jti = orgs.ask_by_domain(get_db(), slug, current_user, current().now)
    except orgs.JoinRefused as refused:
        flash(str(refused), "warning")
        return _back(slug)
    send_link(org, current_user.email, jti, "domain")
    return render_template("orgs/sent.html", org=org, email=current_user.email)


@bp.post("/orgs/<slug>/ip")
@login_required
def join_ip(slug: str):
    """Join from an address in one of the org's IP ranges."""
    _org(slug)
    if _posted():
        _joined(lambda: orgs.join_by_address(get_db(), slug, current_user.id, client_address(), current().now))
    return _back(slug)


def _joined(action) -> bool:
    """Run a join, flashing what happened; whether it seated the reader."""
    try:
        action()
    except orgs.JoinRefused as refused:
        flash(str(refused), "warning")
        return False
    current().after_sign_in()  # the reader's licence changed: their viewer is worked out again
    flash("You joined the group licence: every article is open to you.", "success")
    return True


@bp.post("/orgs/<slug>/leave")
@login_required
def leave(slug: str):
    """Leave an organisation's licence, freeing the seat."""
    _org(slug)
    if _posted() and orgs.leave(get_db(), slug, current_user.id, current().now):
        flash("You left the group licence; your seat is free for a colleague.", "info")
    return redirect(url_for("account.account"), code=303)


@bp.route("/orgs/join/<token>", methods=["GET", "POST"])
def join_link(token: str):
    """GET shows a button (mail scanners prefetch links); the POST uses the link once and joins."""
    jti = orgs.link_id(current_app.secret_key, token)
    row = orgs.link(get_db(), jti) if jti else None
    if row is None or row["used_at"] is not None:
        return render_template("orgs/link_invalid.html"), 400
    org = _org(row["slug"])
    if request.method == "POST" and _posted():
        signed = current_user._get_current_object() if current_user.is_authenticated else None
        try:
            reader, _ = orgs.join_by_link(get_db(), row["jti"], signed, current().now)
        except orgs.JoinRefused as refused:
            flash(str(refused), "warning")
            return _back(org.slug)
        if signed is None:
            sign_in(reader, "org_link")
        current().after_sign_in()
        flash(f"You joined {org.name}'s group licence: every article is open to you.", "success")
        return redirect(url_for("reading.index"), code=303)
    response = current_app.make_response(render_template("orgs/join_confirm.html", org=org, form=ConfirmForm(),
                                                          email=row["email"]))
    response.headers["Referrer-Policy"] = "no-referrer"
    return response

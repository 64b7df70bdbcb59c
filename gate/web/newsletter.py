"""Newsletters on the web: the preference center, confirmation and one-click unsubscribe.

Composing and sending (issues, the confirmation email) live in
:mod:`gate.services.newsletter_mail`.
"""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from gate.app import site
from gate.app.context import current
from gate.app.db import get_db
from gate.rules import tokens
from gate.services import accounts, newsletter, newsletter_mail
from gate.web import csrf
from gate.web.forms import ConfirmForm

bp = Blueprint("newsletter", __name__)


# --- views ----------------------------------------------------------------------


@bp.route("/account/newsletters", methods=["GET", "POST"])
@login_required
def preferences():
    """The preference center: every list the reader can join, with on/off switches."""
    db, cfg, now = get_db(), site.config(), current().now
    form = ConfirmForm()
    if request.method == "POST" and form.validate_on_submit():
        _change(request.form.get("list", ""), request.form.get("action"), now)
        return redirect(url_for("newsletter.preferences"), code=303)
    mine = newsletter.enrollments(db, current_user.id)
    return render_template("newsletter/newsletters.html", lists=cfg.newsletters, mine=mine, form=form,
                           history=newsletter.consents(db, current_user.id))


def _change(list_id: str, action: str | None, now) -> None:
    """Switch one list on or off for the current reader, with a flash saying what happened."""
    db, cfg = get_db(), site.config()
    try:
        item = newsletter.get_list(cfg, list_id)
        if action == "on":
            status = newsletter.enroll(db, cfg, current_user.id, item.id, now, source=request.path,
                                       ip=request.remote_addr, method="preference_center",
                                       verified=current_user.email_verified_at is not None,
                                       has_access=current_user.is_subscriber)
            if status == "pending":
                newsletter_mail.send_confirmation(db, cfg, current_app.secret_key, current_user, [item.id], now)
                flash(f"Almost done: confirm {item.name} with the link we just emailed you.", "info")
            else:
                flash(f"You're subscribed to {item.name}.", "success")
        elif action == "off":
            newsletter.unsubscribe(db, cfg, current_user.id, item.id, now, method="preference_center",
                                   source=request.path, ip=request.remote_addr)
            flash(f"You're unsubscribed from {item.name}.", "success")
        else:
            flash("Choose on or off.", "warning")
    except newsletter.NewsletterError as error:
        flash(f"That can't be done: {error}.", "warning")


@bp.route("/newsletter/confirm/<token>", methods=["GET", "POST"])
def confirm(token: str):
    """GET shows a button (mail scanners prefetch links); only the POST confirms."""
    data = tokens.load(current_app.secret_key, "newsletter-confirm", token,
                       max_age=site.config().mail.confirm_days * 24 * 3600)
    if not isinstance(data, dict) or not isinstance(data.get("l"), list):
        return render_template("newsletter/newsletter_link_invalid.html"), 400
    cfg = site.config()
    names = [newsletter.get_list(cfg, l).name for l in data["l"] if _known(cfg, l)]
    form = ConfirmForm()
    if request.method == "POST" and form.validate_on_submit():
        done = newsletter.confirm(get_db(), data["r"], [l for l in data["l"] if _known(cfg, l)],
                                  current().now, ip=request.remote_addr)
        return render_template("newsletter/newsletter_confirmed.html", names=names, done=done)
    response = current_app.make_response(render_template("newsletter/newsletter_confirm.html", names=names, form=form))
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _known(cfg, list_id) -> bool:
    return any(item.id == list_id for item in cfg.newsletters)


@bp.route("/newsletter/unsubscribe/<token>", methods=["GET", "POST"])
@csrf.exempt  # RFC 8058: mail clients POST "List-Unsubscribe=One-Click" with no form token
def unsubscribe(token: str):
    """POST unsubscribes in one step, no login; GET asks first and links the preference center."""
    data = tokens.load(current_app.secret_key, "newsletter-unsubscribe", token)
    cfg = site.config()
    if not isinstance(data, dict) or not _known(cfg, data.get("l")):
        return render_template("newsletter/newsletter_link_invalid.html"), 400
    item = newsletter.get_list(cfg, data["l"])
    reader = accounts.by_id(get_db(), data["r"])
    if reader is None:
        return render_template("newsletter/newsletter_link_invalid.html"), 400
    if request.method == "POST":
        method = "one_click" if request.form.get("List-Unsubscribe") == "One-Click" else "unsubscribe_page"
        newsletter.unsubscribe(get_db(), cfg, reader.id, item.id, current().now, method=method,
                               source="email", ip=request.remote_addr)
        return render_template("newsletter/newsletter_unsubscribed.html", item=item, email=reader.email)
    return render_template("newsletter/newsletter_unsubscribe.html", item=item, email=reader.email, token=token)


@bp.app_template_global()
def consent_lesson() -> bool:
    """Whether the pre-ticked consent lesson is on (read once per request)."""
    return current().consent_lesson


@bp.app_template_global()
def consent_ticked(item) -> bool:
    """Whether this list's signup box is shown ticked on the running site."""
    return newsletter.ticked_by_default(item, consent_lesson())


def enroll_at_signup(reader: accounts.Reader, list_ids: list[str], source: str) -> None:
    """Enroll a new reader in the lists they ticked, and send the confirmation link.

    A box that was shown ticked is recorded as such (method ``signup_preticked``):
    the consent record then shows the consent was not an affirmative act.
    """
    db, cfg, now = get_db(), site.config(), current().now
    pending = []
    for list_id in list_ids:
        method = "signup_preticked" if consent_ticked(newsletter.get_list(cfg, list_id)) else "signup"
        status = newsletter.enroll(db, cfg, reader.id, list_id, now, source=source,
                                   ip=request.remote_addr, method=method, verified=False,
                                   has_access=False)
        if status == "pending":
            pending.append(list_id)
    if pending:
        newsletter_mail.send_confirmation(db, cfg, current_app.secret_key, reader, pending, now)


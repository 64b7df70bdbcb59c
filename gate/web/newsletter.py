"""Newsletters on the web: the preference center, confirmation and one-click unsubscribe.

Also the composer that renders an issue for one reader (used by the CLI and
the schedule), and the confirmation email sent after a signup.
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from gate.app import site
from gate.app.context import current
from gate.app.db import get_db
from gate.rules import tokens
from gate.services import accounts, content, desk, mail, newsletter, subscriptions
from gate.storage import events
from gate.web import csrf
from gate.web.forms import ConfirmForm

bp = Blueprint("newsletter", __name__)


def _unsubscribe_token(reader_id: int, list_id: str) -> str:
    return tokens.sign(current_app.secret_key, "newsletter-unsubscribe", {"r": reader_id, "l": list_id})


def send_confirmation(reader: accounts.Reader, list_ids: list[str], now) -> None:
    """Email the double opt-in link for the reader's pending lists."""
    db, cfg = get_db(), site.config()
    token = tokens.sign(current_app.secret_key, "newsletter-confirm", {"r": reader.id, "l": list_ids})
    link = site.absolute_url("newsletter.confirm", token=token)
    names = [newsletter.get_list(cfg, list_id).name for list_id in list_ids]
    mail.queue(db, to=reader.email, subject="Please confirm your newsletter subscription",
               text=render_template("email/confirm.txt", link=link, names=names),
               html=render_template("email/confirm.html", link=link, names=names),
               kind="newsletter_confirmation", sender=cfg.mail.sender, now=now, tz=cfg.publication.tz)
    events.record(db, "confirmation_sent", now, reader_id=reader.id, lists=list_ids)


def compose(item, issue: newsletter.Issue, reader: dict) -> newsletter.Message:
    """Render one issue for one reader: subscriber lists carry the opening, free lists never do."""
    token = _unsubscribe_token(reader["id"], item.id)
    unsubscribe = site.absolute_url("newsletter.unsubscribe", token=token)
    mailto = f"mailto:unsubscribe@meridian.example?subject={quote('unsubscribe ' + token)}"
    articles = [
        {"article": a, "url": site.absolute_url("reading.article", slug=a.slug),
         "opening_html": content.teaser_html(a, 1) if item.audience == "subscriber" else None,
         "opening_text": content.split_teaser(a.body_md, 1)[0] if item.audience == "subscriber" else None}
        for a in issue.articles
    ]
    context = {"list": item, "issue": issue, "articles": articles, "unsubscribe": unsubscribe,
               "preferences": site.absolute_url("newsletter.preferences"),
               "site_name": site.config().publication.name}
    headers = {
        "List-Id": f"{item.name} <{item.id}.lists.meridian.example>",
        "List-Unsubscribe": f"<{unsubscribe}>, <{mailto}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "X-Gate-List": item.id, "X-Gate-Issue": str(issue.number),
    }
    subject = f"{item.name} No. {issue.number}: {issue.articles[0].title}"
    return newsletter.Message(subject, render_template("email/newsletter.txt", **context),
                              render_template("email/newsletter.html", **context), headers)


def access_check(db, cfg, now):
    """A has_access(reader_id) callable for sending at ``now``."""
    def has_access(reader_id: int) -> bool:
        reader = accounts.by_id(db, reader_id)
        return reader is not None and subscriptions.has_access(db, cfg, reader, now)
    return has_access


def deliverer(db, cfg):
    """Hand each queued newsletter to SMTP when it is configured."""
    if not cfg.mail.smtp_host:
        return None
    return lambda message_id: mail.deliver(db, cfg.mail, message_id)


def run_due(now) -> list[dict]:
    """Send every scheduled issue whose time has passed (the clock moved)."""
    db, cfg = get_db(), site.config()
    desk.publish_through(db, cfg, now)  # past the scheduled pieces, the desk keeps publishing
    with current_app.test_request_context():
        return newsletter.run_schedule(db, cfg, now, compose, access_check(db, cfg, now),
                                       deliverer(db, cfg))


def send_next(list_id: str, now, dry_run: bool = False) -> dict | None:
    """Send the next issue of a list now; None when nothing was published since the last."""
    db, cfg = get_db(), site.config()
    item = newsletter.get_list(cfg, list_id)
    desk.publish_through(db, cfg, now)
    issue = newsletter.plan_issue(db, item, now)
    if issue is None:
        return None
    if dry_run:
        return {"list": item.id, "issue": issue.number, "articles": [a.title for a in issue.articles],
                "recipients": len(newsletter.recipients(db, item.id)), "dry_run": True}
    with current_app.test_request_context():
        return newsletter.send_issue(db, cfg, issue, compose, access_check(db, cfg, now), now,
                                     deliverer(db, cfg))


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
                send_confirmation(current_user, [item.id], now)
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


def consent_lesson() -> bool:
    """Whether the pre-ticked consent lesson is on (read once per request)."""
    return current().consent_lesson


def consent_ticked(item) -> bool:
    """Whether this list's signup box is shown ticked on the running site."""
    return newsletter.ticked_by_default(item, consent_lesson())


@bp.app_context_processor
def _consent_defaults():
    """Templates ask whether a signup box starts ticked, and whether the lesson is on."""
    return {"consent_ticked": consent_ticked, "consent_lesson": consent_lesson}


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
        send_confirmation(reader, pending, now)


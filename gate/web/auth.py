"""Signing up, logging in (password or magic link) and logging out."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from gate.app import ratelimit, site
from gate.app.context import ARRIVAL_KEY, GIFT_SESSION_KEY, current
from gate.app.db import get_db
from gate.app.ratelimit import limiter
from gate.rules import tokens
from gate.services import accounts, devices, mail
from gate.storage import events
from gate.web.forms import ConfirmForm, LoginForm, MagicLinkForm, list_field, signup_form
from gate.web.newsletter import consent_ticked, enroll_at_signup

bp = Blueprint("auth", __name__)
#: Session keys that survive signing in (an open checkout's idempotency keys, a demo preset preview).
#: And a side-door arrival, so a search arrival who registers at the gate reads on (Extended Access),
#: and the gift links this browser opened, so a gift reader who signs in keeps reading the gift.
CARRIED = ("checkout_keys", *site.PREVIEW_KEYS, ARRIVAL_KEY, GIFT_SESSION_KEY)


def safe_next(target: str | None, default: str = "/") -> str:
    """A local path to return to; anything that could leave the site becomes ``default``.

    Browsers treat ``//host``, ``/\\host`` and ``\\\\host`` as other sites, so
    only a single leading slash followed by a non-slash is accepted.
    """
    if not target or "\\" in target or any(ord(ch) < 32 for ch in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target


def sign_in(reader: accounts.Reader, method: str, remember: bool = False) -> None:
    """Log a reader in on this device: the database records it (meter moved, session started, devices over
    the limit signed out) before the session changes."""
    db, now = get_db(), current().now
    limit = devices.limit_for(db, site.config(), current().rules, reader, now)
    signed = devices.sign_in(db, reader, session.get("visitor"), method, now,
                             user_agent=request.headers.get("User-Agent", ""), limit=limit)
    carried = {key: session[key] for key in CARRIED if key in session}
    session.clear()  # a fresh session on every sign-in
    session.update(carried)
    login_user(signed.reader, remember=remember)
    current().after_sign_in()
    for device in signed.ended:
        when = device.last_seen_at.astimezone(current().rules.tz)
        flash(f"To stay within {limit} signed-in device{'s' if limit != 1 else ''}, we signed you out of "
              f"{device.user_agent} last seen {when:%-d %b %Y at %H:%M}.", "info")


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(ratelimit.SIGNUP, methods=["POST"])
@ratelimit.sign_in_mail
def signup():
    """Create an account with an email (password optional) and return to the article."""
    offered = site.config().signup_lists
    form = signup_form(offered, consent_ticked)()
    form.next.data = safe_next(request.args.get("next") if request.method == "GET" else form.next.data)
    if request.method == "GET":
        form.email.data = request.args.get("email", "")
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("auth/signup.html", form=form, offered=offered,
                               list_field=list_field), status
    next_path = safe_next(form.next.data)
    reader = _new_reader(form, [item.id for item in offered if form[list_field(item.id)].data], next_path)
    if reader is None or _proof_first():
        # A known address (or any address, where the meter needs a proven one) gets this same
        # answer, so the form can't be used to learn who has an account; the owner gets a link.
        flash("Check your email: we sent a link to continue.", "info")
        return redirect(next_path, code=303)
    sign_in(reader, "signup")
    flash("Welcome to The Meridian. Your free articles are ready.", "success")
    return redirect(next_path, code=303)


def _proof_first() -> bool:
    """Whether this preset opens the registered meter only for proven addresses.

    Then a new signup is answered, like a known address, with a mailed link and no
    sign-in; otherwise a new reader is signed in at once (and signup necessarily
    tells a new address from a known one: the trade-off docs/security.md describes).
    """
    return current().rules.tiers.registered.require_verified


def _new_reader(form, chosen: list[str], next_path: str) -> accounts.Reader | None:
    """The account a signup created, or None (and a sign-in link mailed) if the address has one."""
    made = accounts.sign_up(get_db(), form.email.data, form.password.data or None, current().now,
                            visitor_id=session.get("visitor"), source=next_path, newsletters=chosen,
                            preset=current().rules.name)
    if not made.created:
        if made.reader is not None:
            send_magic_link(made.reader, next_path, reason="signup_existing")
        return None
    enroll_at_signup(made.reader, chosen, source=next_path)
    if _proof_first():
        send_magic_link(made.reader, next_path, reason="signup_new")
    return made.reader


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(ratelimit.LOGIN, methods=["POST"])
def login():
    """Log in with a password; the page also offers a one-time link."""
    form = LoginForm()
    link_form = MagicLinkForm(formdata=None)
    form.next.data = safe_next(request.args.get("next") if request.method == "GET" else form.next.data)
    if form.validate_on_submit():
        reader = accounts.authenticate(get_db(), form.email.data, form.password.data)
        if reader:
            sign_in(reader, "password", remember=bool(form.remember.data))
            flash("You are logged in.", "success")
            return redirect(safe_next(form.next.data), code=303)
        form.password.errors.append("That email and password don't match an account.")
    link_form.email.data = form.email.data
    link_form.next.data = form.next.data
    status = 400 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form, link_form=link_form), status


@bp.post("/login/magic")
@limiter.limit(ratelimit.MAGIC_LINK_IP)
@ratelimit.sign_in_mail
def request_magic_link():
    """Email a single-use sign-in link; the answer is the same for unknown addresses."""
    form = MagicLinkForm()
    if not form.validate_on_submit():
        return render_template("auth/login.html", form=LoginForm(formdata=None), link_form=form), 400
    reader = accounts.by_email(get_db(), form.email.data)
    if reader:
        send_magic_link(reader, safe_next(form.next.data), reason="requested")
    return render_template("auth/magic_sent.html", email=form.email.data)


def send_magic_link(reader: accounts.Reader, next_path: str, reason: str) -> None:
    """Email a single-use, 15-minute sign-in link (through the outbox)."""
    db, now = get_db(), current().now
    jti = accounts.issue_login_token(db, reader.id, now)
    token = tokens.sign(current_app.secret_key, "magic-login", {"r": reader.id, "j": jti, "n": next_path})
    link = site.absolute_url("auth.magic_link", token=token)  # never the request's Host
    mail.queue(db, to=reader.email, subject="Your sign-in link for The Meridian",
               text=render_template("email/magic_link.txt", link=link, reason=reason),
               html=None, kind="magic_link", sender="The Meridian <accounts@meridian.example>", now=now,
               tz=site.config().publication.tz)
    events.record(db, "magic_link_sent", now, reader_id=reader.id, reason=reason)


def _magic_payload(token: str):
    """The reader and next-path of a valid link, else None."""
    data = tokens.load(current_app.secret_key, "magic-login", token)
    if not isinstance(data, dict) or not {"r", "j", "n"} <= data.keys():
        return None
    return data


@bp.route("/login/magic/<token>", methods=["GET", "POST"])
def magic_link(token: str):
    """GET shows a button (mail scanners prefetch links); only the POST signs in."""
    data = _magic_payload(token)
    form = ConfirmForm()
    if data is None:
        return render_template("auth/magic_invalid.html"), 400
    if request.method == "POST" and form.validate_on_submit():
        db = get_db()
        reader = accounts.by_id(db, data["r"])
        if reader is None or not accounts.consume_login_token(db, data["j"], reader.id, current().now):
            return render_template("auth/magic_invalid.html"), 400
        sign_in(reader, "magic_link")
        flash("You are logged in.", "success")
        return redirect(safe_next(data["n"]), code=303)
    response = current_app.make_response(render_template("auth/magic_confirm.html", form=form))
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    """POST ends this device's session (the account page signs out the others); GET asks first."""
    form = ConfirmForm()
    if request.method == "POST" and form.validate_on_submit():
        admin = current().instructor
        accounts.sign_out(get_db(), current_user.id if current_user.is_authenticated else None, current().now,
                          instructor_id=admin.id if admin is not None else None,
                          token=current_user.session_token if current_user.is_authenticated else None)
        logout_user()
        session.clear()
        flash("You are logged out.", "info")
        return redirect(url_for("reading.index"), code=303)
    return render_template("auth/logout.html", form=form)

"""Subscribing: the plans, and a checkout that behaves like a payment provider's test mode."""

from __future__ import annotations

import secrets

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user

from gate import accounts, billing, events, site, subscriptions
from gate.db import get_db
from gate.web.forms import CheckoutForm

bp = Blueprint("subscribe", __name__)
_KEYS = "checkout_keys"


@bp.get("/subscribe")
def plans():
    """The plans and what a subscription gives."""
    cfg = site.config().site
    return render_template("subscribe.html", plans=cfg.plans, newsletters=cfg.newsletters)


def _plan(plan_id: str):
    for plan in site.config().site.plans:
        if plan.id == plan_id:
            return plan
    abort(404, description=f"There is no plan called {plan_id!r}.")


def _fresh_key(form: CheckoutForm) -> None:
    """A new idempotency key for this rendering of the form, remembered in the session."""
    key = secrets.token_urlsafe(18)
    session[_KEYS] = [*session.get(_KEYS, [])[-9:], key]
    form.idempotency_key.data = key


def _render(form, plan, status=200):
    included = [item for item in site.config().site.newsletters if item.audience == "subscriber"]
    return render_template("checkout.html", form=form, plan=plan, included=included,
                           test_cards=billing.TEST_CARDS), status


def _replayed(key: str):
    """The reader a repeated submission of this form belongs to, if this browser sent it first."""
    row = get_db().execute("select reader_id from checkouts where idempotency_key = ?", [key]).fetchone()
    if row and key in session.get(_KEYS, []):
        return accounts.by_id(get_db(), row[0])
    return None


@bp.route("/subscribe/<plan_id>", methods=["GET", "POST"])
def checkout(plan_id: str):
    """Show the checkout form; on POST validate, charge the test card and subscribe."""
    plan = _plan(plan_id)
    db, now = get_db(), site.now()
    if current_user.is_authenticated and current_user.is_subscriber and request.method == "GET":
        flash("You already have full access: manage your subscription here.", "info")
        return redirect(url_for("account.account"))
    form = CheckoutForm()
    if request.method == "GET":
        _fresh_key(form)
        return _render(form, plan)
    if not form.validate_on_submit():
        return _render(form, plan, 400)
    key = form.idempotency_key.data or ""
    if not current_user.is_authenticated and (owner := _replayed(key)):
        login_user(owner)  # the same browser submitted this form twice: show its result
    card = form.check_card(now)
    reader = current_user if current_user.is_authenticated else None
    if reader is None:
        reader = _new_account(form, now)
    if card is None or reader is None or key not in session.get(_KEYS, []):
        if key not in session.get(_KEYS, []):
            form.card_number.errors.append("This form has expired. Please enter your card again.")
        _fresh_key(form)
        return _render(form, plan, 400)
    try:
        sub, decline, replay = subscriptions.checkout(
            db, site.config(), reader.id, plan.id, card, form.card_number.data, key, now,
            ip=request.remote_addr)
    except subscriptions.CheckoutError as error:
        flash(str(error), "warning")
        return redirect(url_for("account.account"), code=303)
    if decline:
        form.card_number.errors.append(billing.DECLINE_MESSAGES.get(decline, "Your card was declined."))
        _fresh_key(form)
        return _render(form, plan, 402)
    if not replay:  # the receipt was mailed with the subscription (gate.notices)
        flash(f"Welcome, subscriber. Your {plan.name.lower()} subscription is "
              f"{'in its free trial' if sub.status == 'trialing' else 'active'}.", "success")
    return redirect(url_for("account.account"), code=303)


def _new_account(form: CheckoutForm, now):
    """Create and sign in the account of an anonymous visitor who is subscribing."""
    db = get_db()
    try:
        email = accounts.normalize_email(form.email.data or "")
    except accounts.AccountError as error:
        form.email.errors.append(str(error))
        return None
    if accounts.by_email(db, email):
        form.email.errors.append("That email already has an account: log in first, then subscribe.")
        return None
    if form.card_number.errors or form.expiry.errors or form.cvc.errors:
        return None  # don't create an account for a checkout that can't go ahead
    reader = accounts.create(db, email, form.password.data or None, now)
    events.record(db, "signup", now, reader_id=reader.id, visitor_id=session.get("visitor"),
                  source=request.path, preset=site.rules().name)
    from gate.web.auth import sign_in

    sign_in(reader, "checkout")
    return subscriptions.refresh(db, site.config(), reader, now)

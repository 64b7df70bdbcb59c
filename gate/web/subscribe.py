"""Subscribing: the plans, and a checkout that behaves like a payment provider's test mode."""

from __future__ import annotations

import secrets

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user

from gate.app import ratelimit, site
from gate.app.context import current
from gate.app.db import get_db
from gate.app.ratelimit import limiter
from gate.rules import billing
from gate.services import accounts, subscriptions
from gate.web.auth import send_magic_link
from gate.web.forms import CheckoutForm

bp = Blueprint("subscribe", __name__)
_KEYS = "checkout_keys"


@bp.get("/subscribe")
def plans():
    """The plans and what a subscription gives."""
    cfg = site.config()
    return render_template("subscribe/subscribe.html", plans=cfg.plans, newsletters=cfg.newsletters)


def _plan(plan_id: str):
    for plan in site.config().plans:
        if plan.id == plan_id:
            return plan
    abort(404, description=f"There is no plan called {plan_id!r}.")


def _fresh_key(form: CheckoutForm) -> None:
    """A new idempotency key for this rendering of the form, remembered in the session."""
    key = secrets.token_urlsafe(18)
    session[_KEYS] = [*session.get(_KEYS, [])[-9:], key]
    form.idempotency_key.data = key


def _render(form, plan, status=200):
    included = [item for item in site.config().newsletters if item.audience == "subscriber"]
    return render_template("subscribe/checkout.html", form=form, plan=plan, included=included,
                           test_cards=billing.TEST_CARDS), status


def card_form_limits(view):
    """A card form's rate limits, per client and per address, counted once a submission reaches the card."""
    view = limiter.limit(ratelimit.CHECKOUT_EMAIL, methods=["POST"], key_func=ratelimit.email_key,
                         deduct_when=ratelimit.reached_the_card)(view)
    return limiter.limit(ratelimit.CHECKOUT, methods=["POST"], deduct_when=ratelimit.reached_the_card)(view)


@bp.route("/subscribe/<plan_id>", methods=["GET", "POST"])
@card_form_limits
def checkout(plan_id: str):
    """Show the checkout form; on POST validate, charge the test card and subscribe."""
    plan = _plan(plan_id)
    db, now = get_db(), current().now
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
    card = form.check_card(now)
    if not current_user.is_authenticated:
        return _guest_checkout(form, plan, card, key, now)
    if not _ready(form, card, key):
        return _render(form, plan, 400)
    try:
        sub, decline, replay = subscriptions.checkout(
            db, site.config(), current_user.id, plan.id, card, form.card_number.data, key, now,
            ip=request.remote_addr)
    except subscriptions.CheckoutError as error:
        flash(str(error), "warning")
        return redirect(url_for("account.account"), code=303)
    if decline:
        return _declined(form, plan, decline)
    if not replay:  # the receipt was mailed with the subscription (gate.services.notices)
        flash(f"Welcome, subscriber. Your {plan.name.lower()} subscription is "
              f"{'in its free trial' if sub.status == 'trialing' else 'active'}.", "success")
    return redirect(url_for("account.account"), code=303)


def _ready(form: CheckoutForm, card, key: str) -> bool:
    """Whether the card is valid and the form was rendered for this browser (else a fresh key)."""
    if card is not None and key in session.get(_KEYS, []):
        return True
    if key not in session.get(_KEYS, []):
        form.card_number.errors.append("This form has expired. Please enter your card again.")
    _fresh_key(form)
    return False


def _declined(form: CheckoutForm, plan, decline: str):
    """The form again, with the card's decline message and a fresh key."""
    declined_card(form, decline)
    return _render(form, plan, 402)


def declined_card(form: CheckoutForm, decline: str) -> None:
    """Put a declined card's message beside the card number, and a fresh key in the form (nothing was charged)."""
    form.card_number.errors.append(billing.DECLINE_MESSAGES.get(decline, "Your card was declined."))
    _fresh_key(form)


def guest_email(form: CheckoutForm, key: str, card) -> str | None:
    """An anonymous card form's address, normalised, when it and the card are ready; else None (errors on the form)."""
    try:
        email = accounts.normalize_email(form.email.data or "")
    except accounts.AccountError as error:
        form.email.errors.append(str(error))
        email = None
    return email if _ready(form, card, key) and email is not None else None


def _guest_checkout(form: CheckoutForm, plan, card, key: str, now):
    """An anonymous checkout: the same answer whether or not the address has an account.

    Nobody is signed in here: the account (new, or the owner's) is reached through a
    mailed link, which proves the address. A declined card creates nothing.
    """
    email = guest_email(form, key, card)
    if email is None:
        return _render(form, plan, 400)
    result = subscriptions.guest_checkout(
        get_db(), site.config(), email, form.password.data or None, plan.id, card,
        form.card_number.data, key, now, ip=request.remote_addr, visitor_id=session.get("visitor"),
        source=request.path, preset=current().rules.name)
    if result.outcome == "declined":
        return _declined(form, plan, result.decline)
    if result.outcome == "subscribed":
        send_magic_link(result.reader, url_for("account.account"), reason="checkout_new")
    elif result.outcome == "known":
        send_magic_link(result.reader, url_for("subscribe.checkout", plan_id=plan.id),
                        reason="checkout_existing")
    return render_template("subscribe/checkout_sent.html", email=email, plan=plan)


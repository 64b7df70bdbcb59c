"""Passes: a day or a week of full access, bought once on the gate's third option, never renewed."""

from __future__ import annotations

import secrets

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user
from wtforms import StringField
from wtforms.validators import Length, Optional

from gate.app import ratelimit, site
from gate.app.context import current
from gate.app.db import get_db
from gate.app.ratelimit import limiter
from gate.rules import billing
from gate.rules.offers import money
from gate.services import offers, passes
from gate.web.auth import safe_next, send_magic_link
from gate.web.forms import CheckoutForm
from gate.web.subscribe import _fresh_key, _ready, card_form_limits, declined_card, guest_email

bp = Blueprint("passes", __name__)


class PassForm(CheckoutForm):
    """A pass's card form: the checkout's fields, and a promo code for signed-in readers."""

    code = StringField("Promo code (optional)", validators=[Optional(), Length(max=32)])


def _item(kind: str):
    """The configured pass, or 404."""
    try:
        return passes.product(site.config(), kind)
    except passes.PassError as error:
        abort(404, description=str(error))


def _running_until():
    """When the signed-in reader's pass runs out, if it has not yet (a new one starts then)."""
    until = current_user.pass_until if current_user.is_authenticated else None
    return until if until is not None and current().now < until else None


def _render(form, item, status=200):
    return render_template("passes/pass.html", form=form, item=item, running_until=_running_until(),
                           next=safe_next(request.values.get("next"), ""),
                           test_cards=billing.TEST_CARDS), status


@bp.route("/pass/<kind>", methods=["GET", "POST"])
@card_form_limits
def buy(kind: str):
    """Show a pass's card form; on POST charge the test card and open every article until the pass ends."""
    item = _item(kind)
    if current_user.is_authenticated and current_user.is_subscriber:
        flash("You already have full access with your subscription.", "info")
        return redirect(url_for("account.account"), code=303)
    form = PassForm()
    if request.method == "GET":
        _fresh_key(form)
        return _render(form, item)
    if not form.validate_on_submit():
        return _render(form, item, 400)
    card, key, now = form.check_card(current().now), form.idempotency_key.data or "", current().now
    if not current_user.is_authenticated:
        return _guest(form, item, card, key, now)
    code = (form.code.data or "").strip() or None
    if not _ready(form, card, key) or not _code_ok(form, item, code, now):
        return _render(form, item, 400)
    try:
        bought = passes.buy(get_db(), site.config(), current_user.id, item.id, card, form.card_number.data, key, now,
                            code=code)
    except passes.PassError as error:
        flash(str(error), "warning")
        return redirect(url_for("account.account"), code=303)
    except offers.OfferError as error:  # the code ran out (or was disabled) since it was checked: nothing charged
        return _refused(form, item, error)
    if bought.decline:
        return _declined(form, item, bought.decline)
    if not bought.replayed:
        ends = bought.pass_.ends_at.astimezone(current().rules.tz)
        flash(f"Your {item.name.lower()} is on: every article is open until {ends:%A, %B %-d at %H:%M}.", "success")
    return redirect(safe_next(request.form.get("next"), url_for("account.account")), code=303)


def _code_ok(form, item, code: str | None, now) -> bool:
    """Whether the form's promo code (if any) may be used on this pass; else its error beside the field."""
    error = code and passes.check_code(get_db(), site.config(), item.id, code, current_user.id, now)
    if error:
        _refused(form, item, error)
    return not error


def _refused(form, item, error):
    """A refused code: its message beside the field and the form again with a fresh key (400)."""
    form.code.errors.append(str(error))
    _fresh_key(form)
    return _render(form, item, 400)


def _declined(form, item, decline: str):
    """The form again with the card's decline message and a fresh key: nothing was charged."""
    declined_card(form, decline)
    return _render(form, item, 402)


def _guest(form, item, card, key: str, now):
    """An anonymous buyer: the same answer whether or not the address has an account (guest-checkout rule)."""
    if form.code.data:
        form.code.errors.append("Log in first to use a promo code on a pass.")
    email = guest_email(form, key, card)
    if email is None or form.code.errors:
        return _render(form, item, 400)
    result = passes.guest_buy(get_db(), site.config(), email, form.password.data or None, item.id, card,
                              form.card_number.data, key, now, visitor_id=session.get("visitor"),
                              source=request.path, preset=current().rules.name)
    if result.outcome == "declined":
        return _declined(form, item, result.decline)
    back = safe_next(request.form.get("next"), url_for("account.account"))
    if result.outcome == "bought":
        send_magic_link(result.reader, back, reason="pass_new")
    elif result.outcome == "known":
        send_magic_link(result.reader, url_for("passes.buy", kind=item.id, next=back), reason="pass_existing")
    return render_template("passes/sent.html", email=email, item=item)


@bp.post("/api/passes/<kind>")
@limiter.limit(ratelimit.CHECKOUT, deduct_when=ratelimit.reached_the_card)
def api_buy(kind: str):
    """Buy a pass for the signed-in reader with card fields (JSON); answers with the pass."""
    item = _item(kind)
    if not current_user.is_authenticated:
        return jsonify(error="login_required", message="Sign in to buy a pass through the API."), 401
    if current_user.is_subscriber:
        return jsonify(error="already_subscribed", message="A subscription already opens every article."), 409
    fields = request.get_json(silent=True)
    if not isinstance(fields, dict) or not all(isinstance(fields.get(name, ""), str) for name in _API_FIELDS):
        return jsonify(error="bad_request", message=f"Send a JSON object with {', '.join(_API_FIELDS)}."), 400
    now = current().now
    card, errors = billing.validate_card(fields.get("card_number"), fields.get("expiry"), fields.get("cvc"), now)
    key = fields.get("idempotency_key") or secrets.token_urlsafe(18)
    if card is None or not 8 <= len(key) <= 64:
        errors = errors or {"idempotency_key": "Send 8 to 64 characters, or none."}
        return jsonify(error="invalid_card", message="Check the card fields.", fields=errors), 400
    try:
        bought = passes.buy(get_db(), site.config(), current_user.id, item.id, card, fields["card_number"], key, now,
                            code=fields.get("code") or None)
    except passes.PassError as error:
        return jsonify(error="idempotency_key_taken", message=str(error)), 409
    except offers.OfferError as error:
        return jsonify(error="code_refused", reason=error.refusal, message=str(error)), 422
    if bought.decline:
        return jsonify(error=bought.decline, message=billing.DECLINE_MESSAGES.get(bought.decline)), 402
    return jsonify({"pass": bought.pass_.as_dict(), "replayed": bought.replayed}), 200 if bought.replayed else 201


#: The JSON fields of ``POST /api/passes/<id>`` (``idempotency_key`` optional: a retry with it buys once;
#: ``code`` optional: a promo code whose offer names the pass).
_API_FIELDS = ("card_number", "expiry", "cvc", "idempotency_key", "code")


@bp.app_template_filter("pass_length")
def pass_length(hours: int) -> str:
    """How long a pass lasts, in words: "a day", "a week", "2 days", "36 hours"."""
    for unit, size in (("week", 168), ("day", 24)):
        if hours % size == 0:
            count = hours // size
            return f"a {unit}" if count == 1 else f"{count} {unit}s"
    return f"{hours} hours"


#: The gate's pass offer per list of passes a configuration read (kept with the list: its id is not reused while kept).
_offered: dict[int, tuple[list, dict | None]] = {}
#: Configurations whose offer is kept (one per site a process serves; tests make many).
KEEP_OFFERS = 64


@bp.app_template_global()
def gate_pass() -> dict | None:
    """The pass the gate offers as its third option (see :func:`gate_offer`): asked only where a gate shows.

    A site's passes are read with its configuration and never change after,
    so the offer is worked out once per configuration, not on every teaser.
    """
    on_sale = site.config().passes
    kept = _offered.get(id(on_sale))
    if kept is None or kept[0] is not on_sale:
        if len(_offered) >= KEEP_OFFERS:
            _offered.clear()
        kept = _offered[id(on_sale)] = (on_sale, gate_offer(on_sale))
    return kept[1]


def gate_offer(passes) -> dict | None:
    """The shortest pass on sale, as the gate words it (None without ``[[passes]]``)."""
    on_sale = sorted(passes, key=lambda item: item.hours)
    if not on_sale:
        return None
    item = on_sale[0]
    when = "today" if item.hours <= 24 else "this week" if item.hours <= 168 else "for now"
    return {"id": item.id, "line": f"Just {when}? A {item.name.lower()} for {money(item.price_cents, item.currency)}"}

"""The console's Offers page: every promo code, its funnel and redemptions, adding and disabling codes.

Part of the instructor console (admins only, like every /admin page); each change is
an ``admin_action`` event naming the admin, written in the change's transaction.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for

from gate.app import site
from gate.app.context import current
from gate.app.db import get_db
from gate.rules import offers as offer_rules
from gate.services import dashboard as stats
from gate.services import offers
from gate.web.admin import _admins_only, _audience, _csv, _posted, _range, _record
from gate.web.forms import ConfirmForm

bp = Blueprint("admin_offers", __name__, url_prefix="/admin")
bp.before_request(_admins_only)

#: The form's fields, in the order :func:`gate.services.offers.build` takes them.
FIELDS = ("code", "name", "percent_off", "amount_off_cents", "free_periods", "duration", "periods",
          "starts", "ends", "cap")
#: An offer's state now, in words (None: it can be redeemed).
STATUS_LABELS = {None: "Live", offer_rules.Refusal.DISABLED: "Disabled",
                 offer_rules.Refusal.NOT_STARTED: "Not started", offer_rules.Refusal.EXPIRED: "Expired",
                 offer_rules.Refusal.EXHAUSTED: "Fully redeemed"}


def status(offer: offer_rules.OfferTerms, redeemed: int, now) -> str:
    """Whether an offer can be redeemed now, in words (the refusal a checkout would meet, if any)."""
    refusal = offer_rules.refusal(offer, offer.plans[0] if offer.plans else "", now, redeemed, False, None)
    return STATUS_LABELS.get(refusal, "Live")


def discount_words(offer: offer_rules.OfferTerms, currency: str) -> str:
    """The discount and how long it lasts: '50% off, 3 periods', '$5 off, forever', '1 free period'."""
    if offer.kind == "free":
        return f"{offer.value} free period{'' if offer.value == 1 else 's'}"
    amount = f"{offer.value}% off" if offer.kind == "percent" else f"{offer_rules.money(offer.value, currency)} off"
    span = {"once": "first period", "forever": "forever"}.get(
        offer.duration, f"{offer.periods} period{'' if offer.periods == 1 else 's'}")
    return f"{amount}, {span}"


def _overview(span: stats.Range, audience: str) -> tuple[list[dict], dict]:
    """Every offer with its redemptions and status, and the funnel of every code seen in the range."""
    db, cfg, now = get_db(), site.config(), current().now
    counts = offers.redeemed_counts(db)
    currency = cfg.plans[0].currency
    rows = [{"offer": offer, "redeemed": counts.get(offer.code, 0), "status": status(offer, counts.get(offer.code, 0), now),
             "discount": discount_words(offer, currency)} for offer in offers.all_offers(db, cfg, now)]
    return rows, stats.offer_funnel(db, span, audience)


def _page(form: dict | None = None, errors: dict | None = None, code: int = 200):
    """The Offers page; a refused form comes back filled in, each error beside its field."""
    span, audience = _range(), _audience("people")
    rows, funnel = _overview(span, audience)
    known = {row["offer"].code for row in rows}
    return render_template(
        "admin/offers.html", rows=rows, funnel=funnel, unknown=sorted(set(funnel) - known), span=span,
        audience=audience, audiences=stats.AUDIENCES, steps=stats.OFFER_STEPS, step_labels=stats.OFFER_STEP_LABELS,
        refusals=offer_rules.REFUSAL_MESSAGES, values=form or {"duration": "once"}, errors=errors or {},
        plans=site.config().plans, form=ConfirmForm()), code


@bp.get("/offers")
def offers_page():
    """Every offer (configured and stored): terms, window, cap, redeemed, status, funnel; and a form to add one."""
    return _page()


@bp.post("/offers")
def add_offer():
    """Add a promo code from the form, checked as `gate offers add` and config/site.toml check it."""
    if not _posted():
        return redirect(url_for("admin_offers.offers_page"), code=303)
    db, cfg, now = get_db(), site.config(), current().now
    values = {field: request.form.get(field, "") for field in FIELDS}
    plans, new_only = request.form.getlist("plans"), request.form.get("new_only", "")
    try:
        terms = offers.build(**values, plans=plans, new_only=new_only, tz=cfg.publication.tz,
                             known_plans={plan.id for plan in cfg.plans}, source="console")
        with db.transaction():
            if offers.find(db, cfg, terms.code, now) is not None:  # a configured code is stored on first look
                raise offers.OfferInputError("code", f"there is already an offer with the code {terms.code}")
            offers.add(db, terms, now)
            _record("offer_added", terms.code, kind=terms.kind, value=terms.value, cap=terms.cap)
    except ValueError as error:
        field = getattr(error, "field", "code")
        message = getattr(error, "message", str(error))
        return _page({**values, "plans": plans, "new_only": new_only}, {field: message}, 400)
    flash(f"Offer {terms.code} added: {discount_words(terms, cfg.plans[0].currency)}.", "success")
    return redirect(url_for("admin_offers.offers_page", _anchor=f"offer-{terms.code}"), code=303)


@bp.post("/offers/<code>/enabled")
def set_enabled(code: str):
    """Disable a code (or enable it again); subscriptions already sold with it keep their price."""
    back = redirect(url_for("admin_offers.offers_page"), code=303)
    if not _posted():
        return back
    wanted = request.form.get("enabled")
    if wanted not in ("0", "1"):
        abort(400, description="enabled must be 0 or 1.")
    db, cfg, now = get_db(), site.config(), current().now
    try:
        with db.transaction():
            offer = offers.set_enabled(db, cfg, code, wanted == "1", now)
            _record("offer_enabled" if offer.enabled else "offer_disabled", offer.code)
    except ValueError as error:
        abort(404, description=str(error).capitalize() + ".")
    flash(f"Offer {offer.code} {'enabled' if offer.enabled else 'disabled'}.", "success")
    return back


@bp.get("/offers.csv")
def offers_export():
    """Each code's funnel over the range (viewed, applied, redeemed, refused by reason), as CSV."""
    span, audience = _range(), _audience("people")
    rows, funnel = _overview(span, audience)
    known = {row["offer"].code: row["status"] for row in rows}
    body = stats.offers_csv(funnel, known, [reason.value for reason in offer_rules.Refusal])
    return _csv(body, f"gate-offers-{span.first_day}-{span.last_day}.csv")


@bp.get("/offers.json")
def offers_json():
    """Every offer with its terms, status and redemptions, and each code's funnel over the range."""
    span, audience = _range(), _audience("people")
    rows, funnel = _overview(span, audience)
    return jsonify(start=span.first_day.isoformat(), end=span.last_day.isoformat(), include=audience,
                   offers=[_offer_json(row) for row in rows], funnel=funnel)


def _offer_json(row: dict) -> dict:
    """One offer's terms as JSON (times in ISO 8601)."""
    offer = row["offer"]
    return {"code": offer.code, "name": offer.name, "kind": offer.kind, "value": offer.value,
            "duration": offer.duration, "periods": offer.periods, "plans": list(offer.plans),
            "starts_at": offer.starts_at.isoformat() if offer.starts_at else None,
            "ends_at": offer.ends_at.isoformat() if offer.ends_at else None, "cap": offer.cap,
            "new_only": offer.new_only, "enabled": offer.enabled, "personal": offer.reader_id is not None,
            "source": offer.source, "redeemed": row["redeemed"], "status": row["status"]}


@bp.get("/offers/<code>/redemptions.csv")
def redemptions_export(code: str):
    """Every redemption of one code (who, when, what it bought), as CSV."""
    db, cfg = get_db(), site.config()
    offer = offers.find(db, cfg, code, current().now)
    if offer is None:
        abort(404, description=f"There is no offer with the code {offer_rules.normalize_code(code)[:32]}.")
    return _csv(stats.redemptions_csv(offers.redemptions(db, offer.code)), f"gate-{offer.code}-redemptions.csv")

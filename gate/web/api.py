"""The JSON API: the same decisions as the pages, for scripts and load tests."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask_login import current_user

from gate.app import ratelimit, site
from gate.app.context import current
from gate.app.db import get_db
from gate.app.ratelimit import limiter
from gate.rules import paywall
from gate.services import offers
from gate.services.gifts import GiftRefused
from gate.storage.db import ping
from gate.web import access
from gate.web.gifts import give, url_of

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/articles")
def articles():
    """Published articles, newest first (summaries only, never body text)."""
    limit = access.int_arg("limit", 50, 1, 500)
    offset = access.int_arg("offset", 0, 0, 10_000_000)
    section = request.args.get("section") or None
    items = access.latest(limit=limit, section=section, offset=offset)
    return jsonify(articles=[a.summary() for a in items], limit=limit, offset=offset)


@bp.get("/articles/<slug>")
def article(slug: str):
    """One article for this viewer: access, reason, offer, meter, and the body only if full."""
    shown = access.show(slug, explained=request.args.get("explain") in ("1", "true"))
    return jsonify(shown.payload())


@bp.post("/articles/<slug>/unlock")
@limiter.limit(ratelimit.UNLOCK, key_func=ratelimit.viewer_key)
def unlock(slug: str):
    """Spend one article of the meter on this one; answers with the new meter."""
    item = access.published(slug)
    decision, spent = access.unlock(item)
    status = 200 if decision.access == "full" else 403
    return jsonify({**access.shown(item, decision).payload(), "spent": spent}), status


@bp.post("/articles/<slug>/gift")
def gift(slug: str):
    """Gift this article (subscribers): the new link's URL and limits, and the gifts left this period."""
    try:
        link, left = give(slug)
    except GiftRefused as refused:
        return jsonify(error=refused.code, message=str(refused)), 403
    return jsonify(url=url_of(link), slug=link.slug, expires_at=link.expires_at.isoformat(),
                   devices=link.devices, gifts=left.as_dict()), 201


@bp.get("/meter")
def meter():
    """The viewer's meter: used, limit, remaining, resets_at and the period."""
    rules, viewer = current().rules, current().viewer
    data = paywall.meter_for(rules, viewer, current().now).as_dict()
    return jsonify(tier=viewer.tier, preset=rules.name, **data)


@bp.get("/offers/<code>")
def offer(code: str):
    """A promo code priced for ``?plan=`` (default: the first plan): 200 with ``usable`` and the refusal, 404 unknown."""
    cfg = site.config()
    plan_id = request.args.get("plan") or cfg.plans[0].id
    plan = next((plan for plan in cfg.plans if plan.id == plan_id), None)
    if plan is None:
        return jsonify(error=f"There is no plan called {plan_id!r}.", plans=[p.id for p in cfg.plans]), 400
    reader_id = current_user.id if current_user.is_authenticated else None
    quote = offers.quote(get_db(), cfg, code[:64], plan, reader_id, current().now)
    return jsonify(quote.as_dict()), 404 if quote.offer is None else 200


@bp.get("/health")
def health():
    """Liveness and the site's clock and preset."""
    ping(get_db())
    return jsonify(status="ok", now=current().now.isoformat(), preset=current().rules.name)

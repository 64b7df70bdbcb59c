"""The JSON API: the same decisions as the pages, for scripts and load tests."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask_login import current_user

from gate.app import ratelimit, site
from gate.app.context import current
from gate.app.db import get_db
from gate.app.ratelimit import limiter
from gate.conf.environment import boolean
from gate.conf.settings import ConfigError
from gate.rules import describe, paywall
from gate.services import offers, presets
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


# --- presets: read by anyone, changed by admins (the rule studio's operations) -----------------


@bp.get("/presets")
def preset_list():
    """Every preset: name, title, built-in or saved, and which one the site runs."""
    cfg = site.config()
    return jsonify(presets=[info.as_dict() for info in presets.catalogue(get_db(), cfg)],
                   skipped=dict(sorted(cfg.saved.problems.items())))


@bp.get("/presets/<name>")
def preset(name: str):
    """One preset: its rules as its file holds them, in words, and how it differs from the running one."""
    cfg = site.config()
    if name not in cfg.presets:
        return jsonify(error="not_found", message=f"There is no preset named {name[:40]!r}."), 404
    return jsonify(_preset_payload(cfg, name))


def _preset_payload(cfg, name: str) -> dict:
    """A preset as the API shows it."""
    info = next(info for info in presets.catalogue(get_db(), cfg) if info.name == name)
    rules, running = cfg.presets[name], cfg.presets[presets.active_name(get_db(), cfg)]
    return {**info.as_dict(), "rules": presets.editable(rules),
            "in_words": [{"rule": label, "words": words} for label, words in describe.summary(rules)],
            "differences_from_running": describe.differences(running, rules)}


def _admin_refusal():
    """None for an admin (or the admin underneath a demo persona); else the JSON refusal to send."""
    if current_user.is_authenticated and current_user.is_admin or current().act_as_instructor():
        return None
    if not current_user.is_authenticated:
        return jsonify(error="login_required", message="Sign in as an admin to change presets."), 401
    return jsonify(error="forbidden", message="Only admins change presets."), 403


@bp.route("/presets/<name>", methods=["POST", "PUT"])
def preset_save(name: str):
    """Admins: save JSON rules as a preset (POST: a new one; PUT: new or replaced); ``?use=1`` also runs it."""
    refused = _admin_refusal()
    if refused:
        return refused
    try:
        then_use = boolean(request.args.get("use") or "0")
    except ValueError as error:
        return jsonify(errors={"use": str(error)}), 400
    cfg, db = site.config(), get_db()
    existed = name in cfg.saved.rules
    try:
        presets.save(db, cfg, name, request.get_json(silent=True), current().now, current_user.email,
                     new=request.method == "POST", then_use=then_use)
    except presets.PresetInvalid as invalid:
        return jsonify(errors=invalid.errors), 400
    return jsonify(_preset_payload(cfg, name)), 200 if existed else 201


@bp.delete("/presets/<name>")
def preset_delete(name: str):
    """Admins: delete a saved preset that is not running (its rules stay in the event)."""
    refused = _admin_refusal()
    if refused:
        return refused
    try:
        presets.delete(get_db(), site.config(), name, current().now, current_user.email)
    except presets.PresetRefused as error:
        return jsonify(error="refused", message=str(error)), 409
    except ConfigError as error:
        return jsonify(error="not_found", message=str(error)), 404
    return jsonify(deleted=name)

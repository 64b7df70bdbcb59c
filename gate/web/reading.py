"""Reading: the front page, sections, articles, unlocking and the feed."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from gate.app import ratelimit, site
from gate.app.context import current
from gate.app.db import get_db
from gate.app.ratelimit import limiter
from gate.rules import paywall
from gate.services import content
from gate.services import search as archive
from gate.web import access
from gate.web.forms import SearchForm

bp = Blueprint("reading", __name__)


@bp.get("/")
def index():
    """The front page: the lead story, the latest analysis, and each section."""
    latest = access.latest(limit=13)
    by_section = {name: access.latest(limit=4, section=name) for name in site.config().publication.sections}
    return render_template("reading/index.html", lead=latest[0] if latest else None,
                           latest=latest[1:], by_section=by_section)


@bp.get("/sections/<name>")
def section(name: str):
    """All published articles in one section, newest first."""
    if name not in site.config().publication.sections:
        abort(404, description=f"There is no section called {name!r}.")
    page = access.int_arg("page", 1, 1, 100_000)
    articles = access.latest(limit=21, section=name, offset=(page - 1) * 20)
    return render_template("reading/section.html", name=name, articles=articles[:20],
                           page=page, has_more=len(articles) > 20)


@bp.get("/articles/<slug>")
def article(slug: str):
    """One article: the full text, or the teaser and the gate the rules choose."""
    shown = access.show(slug, explained=bool(current_app._get_current_object().config.get("DEMO")))
    item, decision = shown.article, shown.decision
    ld = content.json_ld(item, decision.access_class, site.config().publication.name,
                         site.canonical_url("reading.article", "slug", slug))
    return render_template("reading/article.html", article=item, decision=decision, teaser=shown.teaser,
                           gated=shown.gated, json_ld=ld, meter=decision.meter,
                           explain=shown.explain, porous=shown.porous, gate_copy=shown.gate_copy)


@bp.post("/articles/<slug>/unlock")
@limiter.limit(ratelimit.UNLOCK, key_func=ratelimit.viewer_key)
def unlock(slug: str):
    """Spend one of the reader's free articles on this one (choice mode)."""
    item = access.published(slug)
    decision, spent = access.unlock(item)
    if not spent and decision.reason == paywall.Reason.METER_EXHAUSTED:
        flash("You have used all your free articles for this period.", "warning")
    elif not spent and decision.access != "full":
        flash("This article can't be unlocked with free articles.", "warning")
    return redirect(url_for("reading.article", slug=slug), code=303)


def _xml_listing(template: str, limit: int, content_type: str):
    """The newest published articles through an XML template (titles and links, never text)."""
    xml = render_template(template, items=access.latest(limit=limit))
    return xml, 200, {"Content-Type": f"{content_type}; charset=utf-8"}


@bp.get("/sitemap.xml")
def sitemap():
    """Every published article's URL and date: never any text."""
    return _xml_listing("reading/sitemap.xml", 5000, "application/xml")


@bp.get("/articles/<slug>.json")
def article_json(slug: str):
    """The article as JSON: the same answer as /api/articles/<slug>."""
    from gate.web.api import article as api_article

    return api_article(slug)


@bp.get("/feed.xml")
def feed():
    """An RSS feed of titles and deks: never any body text."""
    return _xml_listing("reading/feed.xml", 30, "application/rss+xml")


@bp.get("/search")
def search():
    """Search the archive: full text for subscribers, titles and summaries for others."""
    form = SearchForm(request.args)
    page = access.int_arg("page", 1, 1, 100_000)
    query = (form.q.data or "").strip()[:200]
    full = current().viewer.tier == "subscriber"
    results = archive.search(get_db(), query, body=full, now=current().now, page=page) if query else None
    return render_template("reading/search.html", form=form, results=results, full=full)

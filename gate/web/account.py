"""The reader's account page: tier, meter and the articles unlocked this period."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from gate import paywall, site
from gate.content import Article
from gate.db import get_db

bp = Blueprint("account", __name__)


def _articles(slugs: list[str]) -> dict[str, Article]:
    """The articles a meter was spent on, by slug."""
    if not slugs:
        return {}
    marks = ",".join("?" * len(slugs))
    rows = get_db().query(f"select * from articles where slug in ({marks})", slugs)
    return {row["slug"]: Article.from_row(row) for row in rows}


@bp.get("/account")
@login_required
def account():
    """Show who the reader is, their meter and what it has been spent on."""
    rules, viewer, now = site.rules(), site.viewer(), site.now()
    articles = _articles(sorted({s.slug for s in viewer.spends}))
    history = [
        {"spend": s, "article": articles[s.slug],
         "readable": paywall.decide(rules, viewer, articles[s.slug], now).access == "full"}
        for s in reversed(viewer.spends) if s.slug in articles
    ]
    return render_template("account.html", reader=current_user,
                           meter=paywall.meter_for(rules, viewer, now), history=history)

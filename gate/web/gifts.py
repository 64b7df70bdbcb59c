"""Gift links: a subscriber gifts an article; whoever opens the link reads it in full, outside their meter.

Opening is two steps: the link's page (GET, which counts nothing, so a mail
scanner or a chat app's link preview never spends a device) and its *Read
the gift* button (POST), which counts this device on the link.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, session, url_for
from flask_login import current_user, login_required

from gate.app import site
from gate.app.context import GIFT_SESSION_KEY, current, with_gift_device
from gate.app.db import get_db
from gate.services import gifts
from gate.web import access
from gate.web.forms import ConfirmForm

bp = Blueprint("gifts", __name__)


def url_of(link: gifts.Link) -> str:
    """The link's absolute URL, on the site's configured origin."""
    return site.absolute_url("gifts.landing", token=gifts.token(current_app.secret_key, link.id))


def give(slug: str) -> tuple[gifts.Link, gifts.Allowance]:
    """Make a gift link of a published article for the signed-in subscriber (403 for anyone else)."""
    item = access.published(slug)
    if not current_user.is_authenticated or current().viewer.tier != "subscriber":
        abort(403, description="Gift links are for subscribers: subscribe to gift articles.")
    return gifts.make(get_db(), site.config(), current_user, item.slug, current().now)


@bp.post("/articles/<slug>/gift")
def make(slug: str):
    """Gift this article: a new link, and the gifts left this period."""
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("reading.article", slug=slug), code=303)
    try:
        link, left = give(slug)
    except gifts.GiftRefused as refused:
        flash(str(refused), "warning")
        return redirect(url_for("reading.article", slug=slug), code=303)
    flash(f"Your gift link is ready: {left.left} of {left.limit} gifts left this period.", "success")
    return redirect(url_for("gifts.mine", _anchor=f"gift-{link.id}"), code=303)


@bp.app_template_global()
def gifts_of(reader_id: int) -> list[gifts.Link]:
    """A reader's gift links, newest first: the console's reader page asks (read only when asked)."""
    return gifts.of_giver(get_db(), reader_id, limit=20)


@bp.get("/gifts")
@login_required
def mine():
    """The reader's gift links, newest first, with their URLs and how much each has been opened."""
    db, now = get_db(), current().now
    links = gifts.of_giver(db, current_user.id)
    return render_template("gifts/mine.html", links=[(link, url_of(link)) for link in links], now=now,
                           allowance=gifts.allowance(db, site.config(), current_user.id, now))


def _link_or_home(token: str) -> gifts.Link:
    """The link a token names; a tampered, foreign or unknown one is a clear note on the front page."""
    gift_id = gifts.link_id(current_app.secret_key, token)
    link = gifts.get(get_db(), gift_id) if gift_id else None
    if link is None:
        flash("That gift link is not valid: it may have been copied incompletely.", "warning")
        abort(redirect(url_for("reading.index"), code=303))
    return link


def _fallback(link: gifts.Link, status: str):
    """An expired or exhausted link: the normal gate for its article, with a note saying why."""
    if status == "expired":
        flash("This gift link has expired, so the article is back behind the usual gate.", "warning")
    else:
        flash(f"This gift link has been opened on its {link.devices} devices already, so the article is "
              "back behind the usual gate.", "warning")
    return redirect(url_for("reading.article", slug=link.slug), code=303)


@bp.get("/gift/<token>")
def landing(token: str):
    """A gift's page: who gave which article, and a button to read it (a device already counted goes straight in)."""
    link, now = _link_or_home(token), current().now
    if not link.live(now):
        return _fallback(link, "expired")
    if any(grant.link_id == link.id for grant in current().viewer.gifts):
        return redirect(url_for("reading.article", slug=link.slug), code=303)
    if link.opens_left == 0:
        return _fallback(link, "exhausted")
    item = access.published(link.slug)
    return render_template("gifts/landing.html", link=link, article=item, token=token, form=ConfirmForm())


@bp.post("/gift/<token>")
def read(token: str):
    """Count this device on the link, then read the article in full (or fall back to the gate)."""
    link = _link_or_home(token)
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("gifts.landing", token=token), code=303)
    state = current()
    if state.viewer.tier == "subscriber":  # reads everything already: no device slot spent
        return redirect(url_for("reading.article", slug=link.slug), code=303)
    if current_user.is_authenticated:
        device, who = current_user.meter_key, {"reader_id": current_user.id}
    else:
        visitor = state.visitor_id()
        device, who = f"visitor:{visitor}", {"visitor_id": visitor}
    opened = gifts.open_link(get_db(), link.id, device, state.now, **who)
    if not opened.reads:
        return _fallback(opened.link, opened.status)
    session[GIFT_SESSION_KEY] = with_gift_device(session.get(GIFT_SESSION_KEY), device)
    return redirect(url_for("reading.article", slug=link.slug), code=303)

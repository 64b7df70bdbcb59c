"""Reading and unlocking, shared by the HTML pages and the JSON API.

Both call these functions: an article reaches the page and the JSON through
:func:`show`, one decision per request (and one spend in auto mode) turned
into a :class:`Shown` that each renders, so a page and its API answer
always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import abort, current_app, request
from flask_login import current_user
from werkzeug.routing import IntegerConverter

from gate.app import site
from gate.app.context import account, current
from gate.app.db import get_db
from gate.rules import billing, paywall
from gate.rules.paywall import Decision, Rules
from gate.rules.timeutil import to_iso
from gate.services import content, subscriptions
from gate.services.content import Article
from gate.storage import eventlog, events, quota
from gate.storage.db import immediate


def published(slug: str) -> Article:
    """A published article by slug, or 404 (future articles do not exist yet)."""
    article = current().published(slug)
    if article is None:
        abort(404, description=f"There is no article at /articles/{slug}.")
    return article


def _who(state=None) -> dict:
    """The reader or visitor an event is about."""
    user = account()
    if user.is_authenticated:
        return {"reader_id": user.id}
    return {"visitor_id": (state or current()).visitor_id()}


def _spend(article: Article, how: str, first: Decision | None = None) -> tuple[Decision, bool]:
    """Spend one article of the viewer's meter on ``article`` (at most once), recording the unlock.

    ``first`` is this request's decision for the viewer, when it has been made already.
    """
    state, db = current(), get_db()
    store, rules, viewer, now = state.viewer_quota, state.rules, state.viewer, state.now  # read before any lock
    first = first or paywall.decide(rules, viewer, article, now)
    if not quota.spendable(first):
        return first, False  # nothing to spend: no write transaction
    with immediate(db):  # the spend and its event commit together: a crash between them leaves neither
        decision, spent = quota.unlock(store, rules, viewer, article, now, first)
        if spent and decision.reason == paywall.Reason.REFERRAL:  # a search read, on its own daily meter
            grant = decision.referral
            events.record(db, "referral_read", now, slug=article.slug, **_who(state), referral=grant.referral,
                          used=grant.used, allowance=grant.allowance, window=grant.window_key, via=how)
        elif spent:
            events.record(db, "unlock", now, slug=article.slug, **_who(state), used=decision.meter.used,
                          limit=decision.meter.limit, mode=decision.meter.mode, via=how)
    state.after_spend(spent)
    return decision, spent


def read(article: Article, traced: bool = False) -> tuple[Decision, Decision]:
    """Decide what the viewer sees, spend quota in auto mode, and record the view.

    Returns the decision before any spend and the one served (the same one
    unless this view spent): the explain drawer shows both, and asks for
    the first with its trace (``traced``).
    """
    state = current()
    rules, now, viewer = state.rules, state.now, state.viewer
    before = decision = paywall.decide(rules, viewer, article, now, traced)
    if request._get_current_object().method == "HEAD":  # headers only: not a read, so no spend and no events
        return before, decision
    if decision.spend:
        decision, _ = _spend(article, "view", before)
    seen = [("article_view", {"access": decision.access, "reason": decision.reason, "preset": rules.name})]
    if decision.access == "teaser":
        seen.append(("gate_impression", {"offer": decision.offer, "reason": decision.reason,
                                         "style": rules.gate.style}))
    viewed = events.pending(now, seen, slug=article.slug, **_who(state))
    config = current_app._get_current_object().config
    if config.get("EVENT_BUFFER"):  # gate serve: a background writer batches views, and writes their text
        eventlog.writer(str(config["DATABASE"])).add(*viewed)
    else:
        db = get_db()
        with immediate(db):  # one write transaction for the view and its impression
            events.record_rows(db, events.as_rows(viewed))
    state.keep_meter(decision.meter)
    return before, decision


def unlock(article: Article) -> tuple[Decision, bool]:
    """Spend one article of the viewer's meter on this article, at most once."""
    decision, spent = _spend(article, "unlock")
    if not spent and decision.reason != paywall.Reason.ALREADY_UNLOCKED:
        events.record(get_db(), "unlock_refused", current().now, slug=article.slug, **_who(),
                      reason=decision.reason)
    return decision, spent


@dataclass(frozen=True)
class Shown:
    """One article as this viewer may see it, from this request's one decision.

    The page and the JSON both render it, so what a teaser, full access and
    the bypass lab send is decided here and nowhere else.
    """

    article: Article
    decision: Decision
    rules: Rules
    explain: dict | None = None

    @property
    def porous(self) -> bool:
        """The bypass-lab preset (UNSAFE, for teaching) sends the gated text to a page anyway, hidden by script."""
        return self.decision.access == "teaser" and self.rules.porous

    @property
    def teaser(self) -> str:
        """The first paragraphs, which every viewer gets."""
        return content.teaser_html(self.article, self.rules.teaser_paragraphs)

    @property
    def gated(self) -> str | None:
        """The page's text after the teaser: with full access, or the bypass lab's hidden copy."""
        if self.decision.access == "full" or self.porous:
            return content.gated_html(self.article, self.rules.teaser_paragraphs)
        return None

    @property
    def gate_copy(self) -> paywall.GateCopyUse | None:
        """Which copy the gate shows (None with full access)."""
        return paywall.gate_copy(self.rules, self.decision)

    def payload(self) -> dict:
        """The JSON view: the whole body in one piece only with full access (never the bypass lab's copy)."""
        data = {**self.article.summary(), **self.decision.as_dict(), "teaser_html": self.teaser}
        if self.decision.access == "full":
            data["body_html"] = content.body_html(self.article)
        if self.explain is not None:
            data["explain"] = self.explain
            data["trace"] = self.explain["trace"]
        return data


def shown(article: Article, decision: Decision, explain: dict | None = None) -> Shown:
    """What ``decision`` lets this viewer see of ``article``, under the rules they read by."""
    return Shown(article, decision, current().rules, explain)


def show(slug: str, explained: bool = False) -> Shown:
    """An article as the page and the JSON serve it: published, decided once (spent in auto mode), read.

    ``explained`` adds the explain drawer's facts, from the same decisions.
    """
    article = published(slug)
    viewer_before = current().viewer_before
    before, decision = read(article, traced=explained)
    return shown(article, decision, explain(article, viewer_before, before, decision) if explained else None)


class RowId(IntegerConverter):
    """``<id:...>`` in a route: a row id, 1 to 2**63-1 (SQLite's INTEGER); past that, no such page."""

    def __init__(self, url_map) -> None:
        super().__init__(url_map, min=1, max=2**63 - 1)


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter, clamped to a sane range (garbage means the default)."""
    value = request.args.get(name, default, type=int)
    return min(max(default if value is None else value, low), high)


def latest(limit: int = 20, section: str | None = None, offset: int = 0) -> list[Article]:
    """Published articles by the site's clock, newest first."""
    return content.latest(get_db(), current().now, limit=limit, section=section, offset=offset)


def explain(article: Article, viewer_before, before: Decision, decision: Decision) -> dict:
    """The explain drawer's facts: the decisions', this viewer's experiment arms and subscription, and the gate's copy."""
    rules = current().rules
    data = paywall.explain(rules, viewer_before, article, current().now, after=decision, before=before)
    data["experiments"] = _arms()
    copy = paywall.gate_copy(rules, decision)
    reworded = [arm for arm in data["experiments"] if {"headline", "body"} & set(arm["changes"])]
    data["gate_copy"] = copy and (copy.source + "".join(
        f"; worded by arm {arm['arm']} of experiment {arm['id']}" for arm in reworded if copy.own))
    data["subscription"] = _subscription_facts()
    return data


def _arms() -> list[dict]:
    """Each running experiment's arm for this viewer, and what that arm changes."""
    chosen = current().variants
    arms = []
    for exp in current().base_rules.experiments:
        if exp.id in chosen:
            variant = exp.variant(chosen[exp.id])
            arms.append({"id": exp.id, "arm": variant.id, "control": variant is exp.variants[0],
                         "changes": variant.overrides()})
    return arms


def _subscription_facts() -> dict | None:
    """The signed-in reader's subscription, with the moment its status runs out (trial, renewal or grace end)."""
    if not current_user.is_authenticated:
        return None
    sub = subscriptions.current(get_db(), current_user.id)
    if sub is None:
        return None
    grace = billing.grace_ends(sub, subscriptions.policy(site.config()))
    until = grace if sub.status == "past_due" else sub.ended_at or sub.current_period_end
    return {"status": sub.status, "label": billing.status_label(sub.status),
            "cancel_at_period_end": sub.cancel_at_period_end,
            "since": to_iso(sub.past_due_since) if sub.past_due_since else None,
            "until": to_iso(until) if until else None}

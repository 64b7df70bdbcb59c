"""Newsletter mail: the confirmation email, each issue rendered for one reader, and sending.

:mod:`gate.services.newsletter` plans issues and records deliveries; this
module renders them (Jinja, as Flask would: HTML autoescaped, text not) and
signs their links. Links start at the configured public origin
(``cfg.origin``), never a request's host, so the web, the CLI and the clock
send the same mail. The caller passes the site's secret key for the tokens.
"""

from __future__ import annotations

from functools import lru_cache, partial
from urllib.parse import quote

import jinja2

from gate.conf.resources import resource_dir
from gate.rules import referral, tokens
from gate.services import accounts, content, desk, mail, newsletter, subscriptions
from gate.services.notices import origin
from gate.storage import events

#: The paths the links point to (the newsletter and reading blueprints' routes).
CONFIRM_PATH, UNSUBSCRIBE_PATH = "/newsletter/confirm/", "/newsletter/unsubscribe/"
PREFERENCES_PATH, ARTICLE_PATH = "/account/newsletters", "/articles/"


@lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    """The email templates with Flask's settings, so the mail is what render_template made."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(resource_dir("templates")),
                              autoescape=jinja2.select_autoescape(("html", "htm", "xml", "xhtml", "svg")))


def _render(name: str, **context) -> str:
    return _templates().get_template(name).render(context)


def _segment(value: str) -> str:
    """One path segment, quoted as Werkzeug's url_for quotes it."""
    return quote(value, safe="!$&'()*+,/:;=@")


def unsubscribe_token(secret: str, reader_id: int, list_id: str) -> str:
    """The signed one-click unsubscribe token of one reader and list (RFC 8058)."""
    return tokens.sign(secret, "newsletter-unsubscribe", {"r": reader_id, "l": list_id})


def send_confirmation(db, cfg, secret: str, reader, list_ids: list[str], now) -> None:
    """Email the double opt-in link for the reader's pending lists."""
    token = tokens.sign(secret, "newsletter-confirm", {"r": reader.id, "l": list_ids})
    link = origin(cfg) + CONFIRM_PATH + _segment(token)
    names = [newsletter.get_list(cfg, list_id).name for list_id in list_ids]
    mail.queue(db, to=reader.email, subject="Please confirm your newsletter subscription",
               text=_render("email/confirm.txt", link=link, names=names),
               html=_render("email/confirm.html", link=link, names=names),
               kind="newsletter_confirmation", sender=cfg.mail.sender, now=now, tz=cfg.publication.tz)
    events.record(db, "confirmation_sent", now, reader_id=reader.id, lists=list_ids)


def article_link(secret: str, base: str, slug: str, list_id: str) -> str:
    """An article's link in a newsletter, signed for that article and list (a preset's newsletter side door).

    The signature names the article, so the link cannot be edited to open another (docs/referral.md).
    """
    token = tokens.sign(secret, "newsletter-link", {"a": slug, "l": list_id})
    return f"{base}{ARTICLE_PATH}{_segment(slug)}?{referral.NEWSLETTER_PARAM}={quote(token)}"


def _article(item, article, base: str, secret: str) -> dict:
    """One article of an issue: subscriber lists carry its opening, free lists never do."""
    opening = item.audience == "subscriber"
    return {"article": article, "url": article_link(secret, base, article.slug, item.id),
            "opening_html": content.teaser_html(article, 1) if opening else None,
            "opening_text": content.split_teaser(article.body_md, 1)[0] if opening else None}


def compose(cfg, secret: str, item, issue: newsletter.Issue, reader: dict) -> newsletter.Message:
    """Render one issue for one reader, with the RFC 8058 one-click unsubscribe headers."""
    base = origin(cfg)
    token = unsubscribe_token(secret, reader["id"], item.id)
    unsubscribe = base + UNSUBSCRIBE_PATH + _segment(token)
    mailto = f"mailto:unsubscribe@meridian.example?subject={quote('unsubscribe ' + token)}"
    context = {"list": item, "issue": issue, "articles": [_article(item, a, base, secret) for a in issue.articles],
               "unsubscribe": unsubscribe, "preferences": base + PREFERENCES_PATH,
               "site_name": cfg.publication.name}
    headers = {
        "List-Id": f"{item.name} <{item.id}.lists.meridian.example>",
        "List-Unsubscribe": f"<{unsubscribe}>, <{mailto}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "X-Gate-List": item.id, "X-Gate-Issue": str(issue.number),
    }
    subject = f"{item.name} No. {issue.number}: {issue.articles[0].title}"
    return newsletter.Message(subject, _render("email/newsletter.txt", **context),
                              _render("email/newsletter.html", **context), headers)


def access_check(db, cfg, now):
    """A has_access(reader_id) callable for sending at ``now``."""
    def has_access(reader_id: int) -> bool:
        reader = accounts.by_id(db, reader_id)
        return reader is not None and subscriptions.has_access(db, cfg, reader, now)
    return has_access


def deliverer(db, cfg):
    """Hand each queued newsletter to SMTP when it is configured."""
    if not cfg.mail.smtp_host:
        return None
    return lambda message_id: mail.deliver(db, cfg.mail, message_id)


def run_due(db, cfg, secret: str, now) -> list[dict]:
    """Send every scheduled issue whose time has passed (the clock moved)."""
    desk.publish_through(db, cfg, now)  # past the scheduled pieces, the desk keeps publishing
    return newsletter.run_schedule(db, cfg, now, partial(compose, cfg, secret),
                                   access_check(db, cfg, now), deliverer(db, cfg))


def send_next(db, cfg, secret: str, list_id: str, now, dry_run: bool = False) -> dict | None:
    """Send the next issue of a list now; None when nothing was published since the last."""
    item = newsletter.get_list(cfg, list_id)
    desk.publish_through(db, cfg, now)
    if dry_run:
        issue = newsletter.plan_issue(db, item, now)
        return None if issue is None else {
            "list": item.id, "issue": issue.number, "articles": [a.title for a in issue.articles],
            "recipients": len(newsletter.recipients(db, item.id)), "dry_run": True}
    issue = newsletter.open_issue(db, item, now, now)  # planned and stored under the list's lock
    if issue is None:
        return None
    return newsletter.send_issue(db, cfg, issue, partial(compose, cfg, secret),
                                 access_check(db, cfg, now), now, deliverer(db, cfg))

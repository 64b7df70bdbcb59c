"""Where a reader came from: the referral class of an arrival, from its ``Referer`` and signed newsletter link.

Pure and small, like the rest of :mod:`gate.rules`: the web layer passes the
header and the verified newsletter payload in, and :func:`gate.rules.paywall.decide`
reads the class from the :class:`~gate.rules.paywall.Viewer`. The host lists are
here and nowhere else (docs/referral.md shows them).

A ``Referer`` is whatever the client sends: ``curl -H 'Referer: https://www.google.com/'``
makes anyone a "search" visitor. Only a preset that says ``trust_referer = true``
reads it (the bypass lab's lesson); the newsletter class comes from a link signed
with the site's key, which a reader cannot forge or move to another article.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

Referral = Literal["direct", "search", "social", "newsletter"]
REFERRALS: tuple[Referral, ...] = ("direct", "search", "social", "newsletter")
#: The query parameter of a newsletter's article links: a token signed for that article and list.
NEWSLETTER_PARAM = "nl"
#: Registrable names of search engines (any subdomain, any country suffix: www.google.co.uk).
SEARCH_ENGINES = ("google", "bing", "duckduckgo", "yahoo", "ecosia", "baidu", "yandex", "startpage",
                  "qwant", "kagi", "search.brave")
#: Social networks and link sharers, by the hosts their links come from.
SOCIAL_NETWORKS = ("facebook", "fb", "x", "twitter", "t", "linkedin", "lnkd", "reddit", "instagram",
                   "threads", "bsky", "mastodon", "news.ycombinator", "pinterest", "tiktok", "whatsapp")
#: Short hosts whose name alone would match too much: only the exact host counts (t.co, x.com, fb.me).
_EXACT = {"t": ("t.co",), "x": ("x.com",), "fb": ("fb.com", "fb.me"), "lnkd": ("lnkd.in",)}
_SUFFIXES = ("com", "org", "net", "co", "io", "app", "social", "in", "me")


def _named(host: str, name: str) -> bool:
    """Whether ``host`` is the site ``name`` (a subdomain, a country suffix: www.google.co.uk, m.facebook.com)."""
    if name in _EXACT:
        return any(host == exact or host.endswith("." + exact) for exact in _EXACT[name])
    labels, wanted = host.split("."), name.split(".")
    for start in range(len(labels) - len(wanted)):
        rest = labels[start + len(wanted):]
        if labels[start:start + len(wanted)] == wanted and 1 <= len(rest) <= 2 and \
                (rest[0] in _SUFFIXES or len(rest[0]) == 2):
            return True
    return False


def referer_host(referer: str | None) -> str | None:
    """The lower-case host of a ``Referer`` header, or None for none or garbage."""
    if not referer or len(referer) > 2048:
        return None
    try:
        parts = urlsplit(referer.strip())
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".")
    return host if parts.scheme in ("http", "https") and host else None


def classify_host(host: str | None) -> Referral:
    """The class of an arrival from ``host``: search, social, else direct (our own pages, other sites, none)."""
    if host is None:
        return "direct"
    if any(_named(host, name) for name in SEARCH_ENGINES):
        return "search"
    if any(_named(host, name) for name in SOCIAL_NETWORKS):
        return "social"
    return "direct"


def classify(referer: str | None, trust_referer: bool, newsletter_slug: str | None, slug: str) -> Referral:
    """The referral class of one arrival at ``slug``.

    ``newsletter_slug`` is the article a valid signed newsletter link names
    (None without one, or when its signature is bad): it counts only on that
    article. The ``Referer`` counts only when the preset trusts it.
    """
    if newsletter_slug is not None and newsletter_slug == slug:
        return "newsletter"
    return classify_host(referer_host(referer)) if trust_referer else "direct"


def search_meter(meter_key: str) -> str:
    """The quota-store meter of a viewer's daily search allowance, beside (never inside) their meter."""
    return f"{SEARCH_METER_PREFIX}{meter_key}"


#: Search allowances live on the quota store under this prefix (the audit reads them apart).
SEARCH_METER_PREFIX = "search:"
#: Why each class opens, or not, in words for the explain drawer.
WHY = {
    "direct": "No side door: a direct visit (no trusted Referer, no signed newsletter link) meets the normal meter.",
    "search": "Arrived from a search engine (by the Referer header, which this preset trusts).",
    "social": "Arrived from a social network (by the Referer header, which this preset trusts).",
    "newsletter": "Arrived by a signed newsletter link naming this article (it cannot be forged or moved).",
}
#: What a demo persona's "arrives from" stands for: the Referer its next article request is given.
PERSONA_REFERERS = {"search": "https://www.google.com/", "social": "https://www.facebook.com/"}

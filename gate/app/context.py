"""This request as the paywall sees it: when, by which rules, and who is reading.

One :class:`RequestState` per request (or CLI command), built on first use by
:func:`current` and kept on ``g`` under one attribute. Each field is worked
out the first time something asks for it and then kept, so every decision in
the request agrees and the meter is read once. What changes them has a name:
:meth:`RequestState.after_spend`, :meth:`~RequestState.after_rules_change`,
:meth:`~RequestState.after_sign_in`.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from flask import current_app, flash, g, has_request_context, request, session
from flask_login import current_user

from gate.app import site
from gate.app.db import get_db
from gate.conf.settings import Config
from gate.rules import experiments, paywall, referral, tokens
from gate.rules.paywall import Meter, Rules, Viewer
from gate.services import accounts, content, devices, engagement, gifts, sitestate, subscriptions, visitors
from gate.storage import events
from gate.storage.clock import ClockState, real_now
from gate.storage.quota import MemoryQuotaStore, SqlQuotaStore

#: The attribute of ``g`` the request's state lives under.
G_KEY = "gate_request"
#: The bypass-lab preset's meter: its key, and the plain cookie it lives in.
POROUS_KEY, POROUS_COOKIE = "cookie", "porous_meter"
#: The devices (meter keys) this session opened gift links as, space-separated; their gifts are read
#: only then. Carried over a sign-in, so a visitor who opens a gift and then signs in reads on.
GIFT_SESSION_KEY = "gifts"
#: At most this many devices are remembered (a session opens gifts as a visitor and as one reader).
GIFT_DEVICES_KEPT = 4
#: Fields worked out from the rules: dropped when the rules change (the site's state is read again).
RULES_FIELDS = ("site", "base_rules", "variants", "rules", "viewer", "viewer_before", "cookie_meter",
                "consent_lesson", "meter", "arrival")
#: The session's last side-door arrival ([class, slug]), and a persona's "arrives from" for the next article.
ARRIVAL_KEY, ARRIVAL_NEXT_KEY = "arrival", "arrival_next"


class cached_property:  # noqa: N801 - named as the decorator it stands in for
    """A field worked out on first use and kept on the instance: ``functools.cached_property`` without its lock.

    Python 3.11's takes one lock per field for every instance of the class,
    held while the field is worked out: a request thread that reads the
    database there made every other thread that asked for the same field
    for its own request wait on the lock. A request's state belongs to one
    thread, so it needs none (Python 3.12 dropped the lock for this reason).
    """

    def __init__(self, func) -> None:
        self.func, self.__doc__ = func, func.__doc__

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)  # found there from now on, never here
        return value


def reader_unit(reader) -> str:
    """What experiments assign a reader by: their first visitor id, else their account."""
    return reader.experiment_unit or f"reader:{reader.id}"


def gift_devices(opened) -> list[str]:
    """The devices a session opened gift links as (an older session holds ``True``: its visitor only)."""
    return opened.split() if isinstance(opened, str) else []


def with_gift_device(opened, device: str) -> str:
    """The session's gift devices with ``device`` added (the newest kept, a plain string for the cookie)."""
    kept = [known for known in gift_devices(opened) if known != device] + [device]
    return " ".join(kept[-GIFT_DEVICES_KEPT:])


@dataclass(eq=False)
class RequestState:
    """One request's clock, rules, variants and viewer, each worked out on first use."""

    config: Config
    demo: bool
    #: The console reads by the site's own preset, whatever the session previews.
    site_preset_only: bool = False
    #: This request spent from the bypass lab's cookie meter, so the cookie goes back.
    spent_from_cookie: bool = False
    #: Meters read with the signed-in reader (one statement), until a spend moves them.
    read_with_reader: dict = field(default_factory=dict)
    #: (session token, its reader's rows) read with the site's state, until flask-login's loader takes them.
    unread_reader: tuple | None = None

    @cached_property
    def site(self) -> sitestate.SiteState:
        """The clock, the preset and the consent lesson, read in one statement once per request."""
        return self._read_site()

    def published(self, slug: str) -> content.Article | None:
        """The article at ``slug`` if it is out by now; read with the site's state when that is not read yet."""
        if "site" not in self.__dict__:
            self.__dict__["site"] = self._read_site(slug)  # the cached ``site``
        elif self.site.slug != slug:
            return content.published(get_db(), slug, self.now)
        return content.out_by(self.site.article, self.now)

    def _read_site(self, slug: str | None = None) -> sitestate.SiteState:
        """The site's state (with the article at ``slug``, else the route's), and the session's reader if not loaded.

        Whatever asks first (an unlock's rate limit asks for the reader before
        the view asks for the article) reads the route's article with it.
        """
        token = None
        if has_request_context():
            slug = slug or _route_article()
            kept = g._get_current_object().__dict__  # the objects, not their proxies (gate.app.plumbing)
            token = session._get_current_object().get("_user_id") if "_login_user" not in kept else None
        token = token if isinstance(token, str) and token else None
        found = sitestate.read(get_db(), self.config, real_now(), slug, token)
        if token is not None:
            self.unread_reader = (token, found.reader_rows)
        return found

    def signed_in(self, token: str) -> accounts.Reader | None:
        """The account a session's token names, their subscription settled (flask-login's user loader).

        They came with the site's state when the session named them then; else
        they, their subscription and their meter are read in one statement now
        (either way only their version when this process has them already).
        """
        if "site" not in self.__dict__:
            self.__dict__["site"] = self._read_site()  # the cached ``site``, with this session's reader
        read, self.unread_reader = self.unread_reader, None
        db, now = get_db(), self.now
        if read is not None and read[0] == token:
            reader, spends = subscriptions.settled(db, self.config, token, read[1], now)
        else:
            reader, spends = subscriptions.signed_in(db, self.config, token, now)
        if reader is not None and spends is not None:
            self.read_with_reader[reader.meter_key] = spends  # the viewer's meter, read in the same statement
        if reader is None:
            self._device_signed_out(token)
        else:
            devices.seen(db, reader, now)  # a write at most once a minute per device
        return reader

    def _device_signed_out(self, token: str) -> None:
        """This device's session ended elsewhere: say why once, and forget it (and its remember cookie)."""
        notice = devices.ENDED_NOTICES.get(devices.ended_reason(get_db(), token))
        if notice and has_request_context():
            session.pop("_user_id", None)
            session["_remember"] = "clear"  # flask-login drops the remember cookie, which names it too
            flash(notice, "warning")

    @property
    def clock(self) -> ClockState:
        """The clock as this request read it."""
        return self.site.clock

    @cached_property
    def now(self) -> datetime:
        """The site time, read once per request so every decision in it agrees."""
        return self.clock.now(real_now())

    @property
    def previewed_preset(self) -> str | None:
        """The preset this session previews instead of the site's (demo mode only), or None.

        A student's Try it changes only their own view; the console always shows
        the site's own preset (``show_site_preset``).
        """
        if not self.demo or self.site_preset_only:
            return None
        name = session.get(site.PREVIEW_KEY)
        return name if isinstance(name, str) and name in self.config.presets else None

    @property
    def tried_preset(self) -> str | None:
        """The preset this session tries from the studio (demo mode), or None; the console shows it too.

        A Try is a preview named by the studio: changing the preview any other way ends it.
        """
        name = session.get(site.TRY_KEY) if self.demo else None
        if not isinstance(name, str) or name != session.get(site.PREVIEW_KEY):
            return None
        return name if name in self.config.presets else None

    @cached_property
    def base_rules(self) -> Rules:
        """The viewer's preset as configured, before any experiment variant.

        The site's state first: reading it looks at the saved presets when a
        save or delete moved its version, so a preview of one just saved is found.
        """
        site_preset = self.site.preset
        return self.config.preset(self.previewed_preset or site_preset)

    @cached_property
    def variants(self) -> dict[str, str]:
        """This viewer's variant of each active experiment in the preset."""
        return self._assign(self.experiment_unit)

    @cached_property
    def rules(self) -> Rules:
        """The rules the site applies to this viewer: the preset, with their variants applied."""
        return self._with_variants(self.variants)

    def rules_for(self, reader) -> Rules:
        """The rules another reader sees (an admin's view of them, a persona being built)."""
        return self._with_variants(self._assign(lambda: reader_unit(reader)))

    def _assign(self, unit_of) -> dict[str, str]:
        """The variant of each active experiment for the unit ``unit_of()`` names (asked only if any is active)."""
        active = [exp for exp in self.base_rules.experiments if exp.active]
        unit = unit_of() if active else None
        return {exp.id: experiments.assign(exp, unit).id for exp in active}

    def _with_variants(self, chosen: dict[str, str]) -> Rules:
        applied = self.base_rules
        for exp in applied.experiments:
            if exp.id in chosen:
                applied = experiments.apply(applied, exp.variant(chosen[exp.id]))
        return applied

    def experiment_unit(self) -> str:
        """What experiments assign this viewer by: the signed-in reader's unit, else this visitor's id."""
        if current_user.is_authenticated:
            return reader_unit(current_user)
        return f"visitor:{self.visitor_id()}"  # an arm given is kept, so the visitor stays in it

    def event_tags(self) -> dict:
        """The tags of an event recorded in this request: the viewer's variants, and a previewed preset.

        The audit reads the site's preset from its history; an event recorded
        under a preview names its preset so it is checked by the rules it had.
        """
        chosen, preview = self.variants, self.previewed_preset
        return {**({"variants": chosen} if chosen else {}), **({"preset": preview} if preview else {})}

    @cached_property
    def new_visitor(self) -> str:
        """An id for a visitor without one, chosen for this request and kept only once it is used."""
        return secrets.token_urlsafe(12)

    def _visitor(self) -> str:
        """This visitor's id: the session's, or this request's new one (reading the meter does not keep it).

        Recording an event or a spend, or placing the visitor in an experiment,
        keeps it (``visitor_id``). A feed reader, a crawler or a 404 gets no
        cookie and adds no visitor.
        """
        kept = session._get_current_object()  # the session, not its proxy (gate.app.plumbing)
        return kept["visitor"] if "visitor" in kept else self.new_visitor

    def visitor_id(self) -> str:
        """The anonymous visitor id, kept in the signed session cookie and the visitors table from now on."""
        kept = session._get_current_object()
        if "visitor" not in kept:
            kept["visitor"] = self._visitor()
            visitors.keep(get_db(), kept["visitor"], self.now)
        return kept["visitor"]

    @property
    def porous(self) -> bool:
        """Whether this viewer's meter is the UNSAFE cookie of the bypass-lab preset."""
        return self.rules.porous and not account().is_authenticated

    @property
    def quota(self) -> SqlQuotaStore:
        """The meter store of this site."""
        return SqlQuotaStore(get_db())

    @cached_property
    def cookie_meter(self) -> MemoryQuotaStore:
        """The bypass lab's meter, as the plain unsigned cookie says it is. Anyone can edit it."""
        store = MemoryQuotaStore()
        for slug, at in _cookie_spends():
            store.spend(POROUS_KEY, slug, at.isoformat(), at, lambda spends: True)
        return store

    @property
    def viewer_quota(self):
        """The store this viewer's meter lives in: the database, or (bypass lab) a cookie."""
        return self.cookie_meter if self.porous else self.quota

    @cached_property
    def viewer(self) -> Viewer:
        """The current viewer with the spends of their meter."""
        user = account()
        verified = not user.is_authenticated or user.email_verified_at is not None
        porous = self.porous
        if user.is_authenticated:
            tier, key = user.tier, user.meter_key
        elif porous:
            tier, key = "anonymous", POROUS_KEY
        else:
            tier, key = "anonymous", f"visitor:{self._visitor()}"
        # A tier without a meter (a subscriber, a teaser-only visitor) has no spends that decide would read.
        if not self.rules.meters(tier):
            spends = ()
        elif key in self.read_with_reader and not porous:
            spends = self.read_with_reader[key]
        else:
            spends = self.viewer_quota.spends(key)  # the store only when read: most pages read none
        kind, slug = self.arrival
        search = () if kind != "search" else self.viewer_quota.spends(referral.search_meter(key))
        signals = self._signals(tier, key, kind)
        return Viewer(tier, key, spends, verified, user.pass_until if user.is_authenticated else None,
                      licence=self.licence_of(user), referral=kind, arrival=slug, search_spends=search,
                      gifts=self.gift_grants(tier, key), signals=signals)

    def _signals(self, tier: str, key: str, kind: str):
        """A dynamic meter's signals (None otherwise): read once a request, since a spend does not change them."""
        before = self.__dict__.get("viewer_before")
        if before is not None and (before.tier, before.meter_key, before.referral) == (tier, key, kind):
            return before.signals
        return engagement.read(get_db(), self.rules, tier, key, kind, self.now)

    @staticmethod
    def licence_of(user) -> paywall.Licence | None:
        """The group licence of a signed-in reader, as kept on their row (read with it), or None."""
        return user.licence if user.is_authenticated else None

    @cached_property
    def arrival(self) -> tuple[str, str | None]:
        """Where this viewer came from, and the article: this request's Referer or signed link, else the session's.

        An arrival by a side door sticks to its article for the session's next
        views of it (until another side-door arrival), so reloading or coming
        back to the article keeps the grant; a direct view changes nothing.
        """
        if not has_request_context():
            return "direct", None
        # The request and the session, each looked up once (every article view asks this).
        asked, kept_session = request._get_current_object(), session._get_current_object()
        slug = (asked.view_args or {}).get("slug")
        if not isinstance(slug, str):
            return "direct", None
        # A persona that "arrives from search" (demo mode); popped only when set, so no other session is rewritten.
        persona = kept_session.pop(ARRIVAL_NEXT_KEY) if ARRIVAL_NEXT_KEY in kept_session else None
        referer = referral.PERSONA_REFERERS.get(persona) or asked.environ.get("HTTP_REFERER")
        raw = asked.args.get(referral.NEWSLETTER_PARAM) if asked.query_string else None
        signed = tokens.load(current_app.secret_key, "newsletter-link", raw) if raw else None
        named = signed.get("a") if isinstance(signed, dict) else None  # a bad signature is no link at all
        kind = referral.classify(referer, self.rules.referral.trust_referer, named, slug)
        if kind != "direct":
            kept_session[ARRIVAL_KEY] = [kind, slug]
            return kind, slug
        kept = kept_session.get(ARRIVAL_KEY)
        if isinstance(kept, list) and len(kept) == 2 and kept[0] in referral.REFERRALS and kept[1] == slug:
            return kept[0], slug
        return "direct", None

    def gift_grants(self, tier: str, key: str) -> tuple:
        """The live gift links this device opened, read only once its session opened one (no cost otherwise)."""
        kept_session = session._get_current_object()
        opened = kept_session.get(GIFT_SESSION_KEY)
        if tier == "subscriber" or not opened:
            return ()
        devices = [key] if tier == "registered" else []
        if "visitor" in kept_session:
            devices.append(f"visitor:{kept_session['visitor']}")
        devices += [device for device in gift_devices(opened) if device not in devices]
        return gifts.grants(get_db(), devices, self.now)

    @cached_property
    def meter(self) -> Meter:
        """The viewer's meter now, for every page's header (a decision made this request leaves its own)."""
        return paywall.meter_for(self.rules, self.viewer, self.now)

    def keep_meter(self, meter: Meter) -> None:
        """The meter of the decision this request served: the header shows it rather than working it out again."""
        self.__dict__["meter"] = meter

    @cached_property
    def viewer_before(self) -> Viewer:
        """The viewer as this request found them, before its spend (what the explain drawer compares)."""
        return self.viewer

    @cached_property
    def instructor(self) -> accounts.Reader | None:
        """The admin underneath this session's persona (demo mode's "view as"), or None.

        The session keeps the admin's rotating session token, so signing the
        admin out anywhere (or removing their admin flag) ends it too.
        """
        token = session.get(site.INSTRUCTOR_KEY) if self.demo else None
        reader = accounts.by_session_token(get_db(), token) if isinstance(token, str) else None
        return reader if reader is not None and reader.is_admin else None

    @cached_property
    def consent_lesson(self) -> bool:
        """Whether the pre-ticked consent lesson is on: a student's preview of it, else the site's setting."""
        preview = self.demo and session.get(site.CONSENT_PREVIEW_KEY)
        return bool(preview) or self.site.consent_lesson

    def after_spend(self, spent: bool) -> None:
        """A spend moved the meter: keep the viewer it started from, and read the meter again on next use."""
        self.read_with_reader.clear()  # the meter moved: read it again
        self.__dict__.pop("meter", None)
        if "viewer" in self.__dict__:
            self.__dict__.setdefault("viewer_before", self.__dict__.pop("viewer"))
        self.spent_from_cookie = self.spent_from_cookie or (spent and self.porous)

    def after_sign_in(self) -> None:
        """Someone else is reading now: their viewer is worked out on next use."""
        self.read_with_reader.clear()  # signing in may have moved a visitor's spends to the reader
        for name in ("viewer", "viewer_before", "meter"):
            self.__dict__.pop(name, None)

    def after_rules_change(self) -> None:
        """The preset, a preview or the reader changed: work the rules, variants and viewer out again."""
        for name in RULES_FIELDS:
            self.__dict__.pop(name, None)

    def show_site_preset(self) -> None:
        """This request reads by the site's preset whatever the session previews (the console)."""
        self.site_preset_only = True
        self.after_rules_change()

    def show_preview(self) -> None:
        """This request reads by the session's preview again (a Try from the console builds its persona by it)."""
        self.site_preset_only = False
        self.after_rules_change()

    def act_as_instructor(self) -> bool:
        """In the console, be the admin underneath the persona for this request; False if there is none."""
        admin = self.instructor
        if admin is None:
            return False
        g._login_user = admin  # what flask-login's current_user reads for the rest of this request
        self.after_rules_change()
        return True


def _route_article() -> str | None:
    """The slug of the article this request's route serves, if it serves one."""
    asked = request._get_current_object()
    if asked.endpoint in site.ARTICLE_ROUTES:
        slug = (asked.view_args or {}).get("slug")
        return slug if isinstance(slug, str) else None
    return None


def account():
    """The request's user as Flask-Login holds it (its anonymous user when signed out): ``current_user``.

    Once loaded it is kept on ``g``, and one lookup finds it there: the proxy
    makes three, and a page asks about ten times. The first ask loads it with
    the site's login manager, as the proxy would, without its own lookups.
    """
    if not has_request_context():
        return current_user._get_current_object()
    kept = g._get_current_object().__dict__
    user = kept.get("_login_user")
    if user is None:
        current_app._get_current_object().login_manager._load_user()
        user = kept["_login_user"]
    return user


def current() -> RequestState:
    """This request's state, built on first use and kept on ``g``."""
    kept = g._get_current_object().__dict__  # one context lookup: this runs about ten times a request
    state = kept.get(G_KEY)
    if state is None:
        demo = bool(current_app._get_current_object().config.get("DEMO"))
        state = kept[G_KEY] = RequestState(site.config(), demo)
    return state


def _cookie_spends():
    """The plain, unsigned cookie meter: a list of [slug, time]. Anyone can edit it."""
    try:
        raw = json.loads(request.cookies.get(POROUS_COOKIE, "[]"))
        return [(str(slug), datetime.fromisoformat(at)) for slug, at in raw][:500]
    except (ValueError, TypeError):
        return []


def write_porous_cookie(response):
    """Send the cookie meter back, when this request spent from it."""
    state = g._get_current_object().get(G_KEY)
    if state is not None and state.spent_from_cookie and "cookie_meter" in state.__dict__:
        spends = [[s.slug, s.at.isoformat()] for s in state.cookie_meter.spends(POROUS_KEY)]
        response.set_cookie(POROUS_COOKIE, json.dumps(spends), max_age=3600 * 24 * 400, samesite="Lax")
    return response


def _event_tags() -> dict:
    """The tags of an event recorded now: the current request's (see ``RequestState.event_tags``)."""
    return current().event_tags()


def tag_request_events() -> None:
    """Every event this request records carries the viewer's variants, whatever the view."""
    events.TAGS.set(_event_tags)


def reset_request_state() -> None:
    """End each request with no event tags (contexts may be reused)."""
    events.TAGS.set({})

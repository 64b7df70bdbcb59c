"""The classroom: a guided tour of paywall patterns, each one a click away, and the bypass lab.

In demo mode a Try it previews the pattern in the visitor's own session, so
students in one class never flip the site for each other; an admin may
apply it to the whole site instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user

from gate.app import site
from gate.app.context import current
from gate.app.db import get_db
from gate.services import newsletter, presets
from gate.web.demo import become, start_preview
from gate.web.forms import ConfirmForm

bp = Blueprint("learn", __name__, url_prefix="/learn")
SAMPLE = "prisoner-swaps-rewarding-hostage-takers"
CONSENT_LESSON = "pre-ticked-consent"
PREMIUM_SAMPLE = "digital-currencies-contest-wholesale-plumbing"


@dataclass(frozen=True)
class Lesson:
    """One paywall pattern: what it is, how to try it, what to watch for."""

    id: str
    title: str
    preset: str
    persona: str
    article: str
    summary: str
    watch_for: tuple[str, ...]
    #: Where Try it lands, when not on the sample article (a page of this site).
    target: str | None = None

    @property
    def landing(self) -> str:
        """The page Try it opens."""
        return self.target or f"/articles/{self.article}"


LESSONS = (
    Lesson("hard", "Hard paywall", "hard", "new-reader", SAMPLE,
           "Only subscribers read past the preview. Simple to explain and to enforce, but it turns away "
           "almost every visitor, and search engines and social links mostly lead to a wall.",
           ("A registered account gets nothing more than an anonymous visitor: registration has no value to offer.",
            "Free articles still read in full: a hard wall usually keeps a few open to stay discoverable.",
            "Watch the dashboard funnel: gate impressions nearly equal visits.")),
    Lesson("metered-view", "Metered by view", "metered", "anonymous", SAMPLE,
           "Every distinct article a visitor opens counts against a monthly allowance; after five comes a "
           "registration wall, then ten a month for registered readers. This is how most news sites meter.",
           ("Re-reading an article costs nothing; a new article does, whether or not it was worth it.",
            "The meter lives on the server: clearing cookies makes you a new visitor, it never refills an account.",
            "Open the explain drawer to see the window, the counts before and after, and the reset time.")),
    Lesson("metered-choice", "Metered by choice", "wpr", "new-reader", SAMPLE,
           "A signup unlocks three articles of the reader's choice each month: the reader presses Unlock, "
           "so nothing is spent on a headline that disappoints. The meter shows what is left on every page.",
           ("Nothing is spent by opening an article, only by pressing Unlock.",
            "The fourth unlock is refused with a subscription offer and the date the meter resets.",
            "Switch to the '0 unlocks left' persona to see the exhausted state at once.")),
    Lesson("freemium", "Freemium", "freemium", "anonymous", PREMIUM_SAMPLE,
           "Whole sections are free and others are for subscribers. Readers always know what is free, and "
           "the premium sections carry the case for paying.",
           ("Diplomacy and Climate read in full for everyone; Economy, Security and Technology never do.",
            "No meter at all: the decision depends only on the article's section.")),
    Lesson("registration-wall", "Registration wall", "registration-wall", "anonymous", SAMPLE,
           "Everything is free with an account. The price is an email address, which the publisher uses for "
           "newsletters and to learn who its readers are.",
           ("Sign up at the gate and you are returned to the same article, now in full.",
            "Watch the funnel: registration becomes the step that matters.")),
    Lesson("dynamic", "Dynamic meter", "dynamic", "anonymous", SAMPLE,
           "The allowance is not the same for everyone. An engagement score out of 100, from what the site "
           "records (days with a read in the last 30, days since the last read, sections read, how this visit "
           "arrived; for accounts, a newsletter and the account itself), picks a band: casual visitors read five "
           "articles a month, engaged ones three, the most engaged one, and they are asked to subscribe rather "
           "than sign up, because they are the likeliest to pay.",
           ("Open the explain drawer: each signal with its points, the score, the band it falls in and every "
            "band of the preset. A first visit scores 10 (the direct arrival): five free.",
            "Read two more articles in other sections, then open the drawer again: a read today and more "
            "sections lift the score past 30, and the allowance drops to three. The header's meter and the "
            "gate say the count the band gives, never a fixed number.",
            "Each spend records the score and allowance of its moment; gate audit checks every one against "
            "the band (dynamic_band_mismatch, dynamic_over_allowance).",
            "Compare it with a fixed meter on one population: gate simulate --preset metered --preset dynamic.")),
    Lesson("ab-testing", "A/B testing a meter", "metered-ab", "anonymous", SAMPLE,
           "Another way to give different visitors different walls: an experiment. Each visitor is assigned a "
           "variant (an inline gate after five articles, or a banner after three), sticky across login, and "
           "the console compares the variants' funnels.",
           ("Open the page in two private windows: you may land in different variants.",
            "The console's Experiments page compares the variants' funnels with confidence intervals.")),
    Lesson("throwaway-accounts", "Throwaway accounts (unsafe on purpose)", "metered", "throwaway", SAMPLE,
           "Each made-up email address is a new account with a full meter: ten more articles a month, as often "
           "as someone cares to sign up. Here the classic meter trusts any address; you are one such account.",
           ("The throwaway account reads ten articles although nobody proved its address.",
            "Sign out and sign up again with another made-up address: a fresh meter every time.",
            "Then try 'Proven addresses': the same account gets nothing until it clicks a mailed link.")),
    Lesson("proven-addresses", "Proven addresses", "metered-verified", "throwaway", SAMPLE,
           "The same meter, but the registered allowance opens only once the reader clicks a link mailed to "
           "their address. Throwaway accounts read nothing more than an anonymous visitor; real readers pay "
           "with a trip to their inbox, and some never come back from it.",
           ("The gate asks the throwaway account to confirm its address, with a button to send the link again.",
            "A new signup answers 'check your email' whether or not the address has an account.",
            "Watch the funnel: signups that never confirm are the price of this protection.")),
    Lesson("group-licences", "Group licences", "hard", "licensed", PREMIUM_SAMPLE,
           "A university, a library or a company buys a number of seats, and its people read everything: "
           "they join by an address on its email domain (proven by a mailed link), from its network's IP "
           "range, or by invitation. The seats are a cap like a meter's: fifty people joining at once for "
           "ten seats leave exactly ten members, because each join counts the seats under a lock on the org.",
           ("Under a hard wall the licensed reader opens this premium article; the explain drawer says "
            "'licensed' and names the organisation and its seats.",
            "An IP range only means something if the address is the reader's: behind a proxy the site must be "
            "told how many proxies to trust (GATE_PROXY_COUNT), or anyone could send X-Forwarded-For.",
            "The console's Licences page shows seats used and each member's reading: the share of core "
            "readers (9+ articles in 30 days) is what a renewal conversation turns on, not seats sold.")),
    Lesson("pre-ticked-consent", "Pre-ticked consent (a dark pattern)", "wpr", "anonymous", SAMPLE,
           "The signup box for the free newsletter starts ticked, so a reader who just wants the article "
           "joins a mailing list without choosing to. Lists grow faster, and the consent is worth nothing: "
           "under the GDPR consent must be an affirmative act, and 'silence, pre-ticked boxes or inactivity' "
           "do not count (Recital 32; the EU Court of Justice said the same of cookies in Planet49, 2019).",
           ("At the gate, the newsletter box under the email field is already ticked.",
            "Sign up without touching it, then open the newsletter settings: the consent record says "
            "'signup preticked', which is exactly what a regulator would ask to see.",
            "Try any other lesson (or the button below) and the box is unticked again, as this site ships: "
            "a list can only start ticked when its consent_default says so in config/site.toml.")),
    Lesson("gift-links", "Gift links", "wpr", "gift-giver", SAMPLE,
           "A subscriber shares one article as a link, as the New York Times' gift articles do: whoever opens it "
           "reads that article in full without touching their own meter, and meets the publication at its best. "
           "Two caps keep it a gift and not a side door: ten gifts a month per subscriber, and ten devices per link.",
           ("Press Gift this article, copy the link from your gifts page and open it in a private window: the "
            "article reads in full, 'A gift from' names the giver, and the meter still says nothing was spent.",
            "The link expires on the site's clock, not the wall clock: advance the clock 14 days in the console "
            "and the same link falls back to the gate. A signed token's own max-age would ignore time travel.",
            "Opens are capped per device, not per click: re-reading costs nothing, but a link posted to a "
            "forum reads for ten people, then shows the normal gate. That is what stops one subscription "
            "becoming a free copy for everyone.",
            "Open the explain drawer on the gifted article: the grant says who gave it, until when, and how "
            "many opens are left.")),
    Lesson("bypass-lab", "Bypass lab (unsafe on purpose)", "bypass-lab", "anonymous", SAMPLE,
           "A deliberately porous meter: three free articles counted in a plain cookie, and the gated text sent "
           "to the browser and hidden by script. Read three articles, then try to get around the gate.",
           ("View the page source: the whole article is there.",
            "Turn JavaScript off and reload: the text appears.",
            "Delete the porous_meter cookie (or edit it): the allowance comes back.",
            "Then try the same tricks under 'Metered by view': each one fails, because the server never sends "
            "gated text and keeps the meter in its database.")),
    Lesson("referer-spoofing", "Side doors and a spoofed Referer (bypass lab)", "side-doors", "from-search", SAMPLE,
           "The New York Times' 2011 meter let readers from search and social networks in by a side door, known "
           "from the Referer header. Anyone can send any Referer: with curl -H 'Referer: https://www.google.com/', "
           "the JSON API at /api/articles/ and this article's slug answers with the whole body_html under this "
           "preset, and each new curl is a new visitor with a new daily allowance. The newsletter side door "
           "holds: its links carry a parameter signed with the site's key that names one article.",
           ("Run that curl, then the same without -H: the first is a referral grant, the second spends "
            "the meter (watch meter.used).",
            "The explain drawer shows the class (search), why (the Referer this preset trusts) and the "
            "day's search reads left.",
            "Open a newsletter's article link from the outbox (/dev/mail) and read it in full; change one "
            "character of its nl= signature, or put it on another article's address: the meter applies again.",
            "Switch to 'Metered by view': the same Referer means nothing, because that preset does not trust it.")),
    Lesson("offers", "Offers and their traps", "wpr", "holding-code", SAMPLE,
           "A promo code, an introductory price or a flash sale turns a visitor into a subscriber at a lower "
           "price. Each is also a trap: a capped code oversold under load, a cliff when the intro price ends, "
           "readers who learn never to pay full price, and 'new subscribers only' answered with new accounts.",
           ("Over-redemption: FLASH10 is capped at ten. A cap checked and then counted in two steps is "
            "oversold when a hundred readers press Subscribe at once; here each redemption takes a lock on "
            "the code and counts under it, so any number of checkouts at once end with exactly ten "
            "redemptions (gate loadtest has a flash-sale persona that races it). The console's Offers "
            "page shows 10 of 10, then 'Fully redeemed', and the funnel the readers refused as exhausted.",
            "The retention cliff: switch to the 'Intro ending' persona and open the account page "
            "(the next renewal is at the list price), then move the clock a week in the console: the $1 "
            "month renews at $12, and the dashboard's MRR and 'still discounted' move with it. Real "
            "subscribers cancel in numbers at that moment; gate simulate shows the dip.",
            "Discount habituation: readers who have seen WELCOME50 and FLASH10 wait for the next code. "
            "Codes here never stack (one per checkout, kept with the subscription), and the Offers "
            "page's funnel shows how many views each code gets against how many redeem it.",
            "'New subscribers only' gamed by new accounts: WELCOME50 refuses a reader who ever "
            "subscribed, but a fresh address is a new reader. Sign out, sign up with another made-up "
            "address and apply the code again; the funnel's refusals by reason show who was stopped."),
           target="/subscribe?code=WELCOME50"),
    Lesson("account-sharing", "Account sharing and device limits", "metered-verified", "shared-account", SAMPLE,
           "One subscription, a family's worth of readers: sharing a password is the cheapest bypass there is. "
           "A device limit caps how many browsers one account may have signed in at once (here two; a plan "
           "may set its own). The cost falls on honest readers too: the phone, the laptop and the work "
           "computer of one person are three devices.",
           ("You are the 'Shared account' persona, already signed in on two other devices: signing in here "
            "signed out the one seen least recently, and the notice says which and when.",
            "On the account page, sign any other device out, or sign out everywhere. The device that was "
            "signed out is told why on its next page, instead of silently landing at a gate.",
            "Open the same account in a second browser profile: each new sign-in evicts the oldest, however "
            "fast you race them (the cap is counted under a lock on the account).",
            "'Private mode resets my meter' matters less once readers register: a registered meter lives "
            "on the account, not the cookie, so a private window signed in to the same account sees the "
            "same count. Only anonymous meters reset with cookies; that is why the gate asks for an account."),
           target="/account"),
)
BY_ID = {lesson.id: lesson for lesson in LESSONS}


def _instructor():
    """The admin choosing here: the signed-in admin, or (demo mode) the one underneath a persona."""
    if current_user.is_authenticated and current_user.is_admin:
        return current_user
    return current().instructor


def _may_switch() -> bool:
    """Demo mode previews a pattern for anyone; outside it, only an admin may switch the site's rules."""
    return bool(current_app.config.get("DEMO") or _instructor())


@bp.get("/")
def index():
    """The tour: every pattern, what to watch for, and a try-it button."""
    return render_template("learn/learn.html", lessons=LESSONS, may_switch=_may_switch(), form=ConfirmForm(),
                           may_apply=_instructor() is not None, demo=bool(current_app.config.get("DEMO")),
                           active=presets.active_name(get_db(), site.config()),
                           previewing=current().previewed_preset)


#: Where a Try it takes effect: this session only, or the whole site (admins).
SCOPES = ("preview", "site")


def _scope() -> str:
    """The posted scope, checked: demo mode previews by default, elsewhere an admin applies."""
    default = "preview" if current_app.config.get("DEMO") else "site"
    scope = request.form.get("scope") or default
    if scope not in SCOPES or (scope == "preview" and not current_app.config.get("DEMO")):
        abort(400, description="Choose to preview the pattern or to apply it to the site.")
    if scope == "site" and _instructor() is None:
        abort(403, description="Applying a pattern to the whole site needs an admin; preview it instead.")
    return scope


@bp.post("/try/<lesson_id>")
def try_it(lesson_id: str):
    """Preview (or, for an admin, apply) the lesson's preset, become its persona, and open its sample article (or page)."""
    lesson = BY_ID.get(lesson_id) or abort(404)
    if not _may_switch():
        abort(403, description="Trying a pattern switches the whole site: it needs demo mode or an admin.")
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("learn.index"), code=303)
    scope, consent = _scope(), lesson.id == CONSENT_LESSON
    if scope == "site":
        db, now, who = get_db(), current().now, _instructor().email
        presets.use(db, site.config(), lesson.preset, now, by=who)
        newsletter.set_preticked_lesson(db, consent, now, by=who)
    if current_app.config.get("DEMO"):
        start_preview(lesson.preset if scope == "preview" else None, consent and scope == "preview")
        become(lesson.persona, lesson=lesson.id)
    scope_note = "A preview for you alone: the site's rules are unchanged." if scope == "preview" else (
        "Applied to the whole site.")
    flash(f"Now showing: {lesson.title}. {scope_note}", "info")
    return redirect(lesson.target or url_for("reading.article", slug=lesson.article), code=303)


@bp.post("/consent-lesson/end")
def end_consent_lesson():
    """Untick the signup boxes again (the site's opt-in default)."""
    if not _may_switch():
        abort(403, description="The lesson switches the whole site: it needs demo mode or an admin.")
    if ConfirmForm().validate_on_submit():
        if session.pop(site.CONSENT_PREVIEW_KEY, None) is None:  # not a preview: the site's setting
            if _instructor() is None:
                abort(403, description="The lesson is on for the whole site: an admin turns it off.")
            newsletter.set_preticked_lesson(get_db(), False, current().now, by=_instructor().email)
        flash("Signup boxes start unticked again: consent is opt-in.", "info")
    return redirect(url_for("learn.index", _anchor=CONSENT_LESSON), code=303)

"""The 45-minute class plan, played end to end in a real browser, on a desktop and a phone.

Two browser contexts share one demo site (``gate demo``'s accounts, the clock
frozen at START): the *presenter* logs in as the demo admin and drives the
console, the *student* is an anonymous visitor who becomes a reader, a
subscriber, a lapsed reader and a newsletter reader. Everything is done
through clicks and forms, never the CLI: the seed's gate, signup and three
unlocks; a month of time travel; every pattern on /learn previewed with the
explain drawer open; personas with the console a click away; a subscription
through a failed renewal and *Cancel now*; a newsletter issue and its
one-click unsubscribe; the funnel, an A/B test with its intervals, and a
rule change the student sees.

Each device gets its own fresh site: one run moves the clock more than two
months, past the end of the demo's schedule of upcoming articles, and
*Send the next issue now* needs new articles to send.

With ``GATE_SCREENSHOTS=DIR`` the key screens are saved there as PNGs (the
README's are in docs/screenshots/).
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

import pytest
from playwright.sync_api import expect

from gate.services.seed import DEMO_ACCOUNTS
from gate.web.learn import LESSONS
from tests.helpers import (
    DEVICES,
    NY,
    START,
    UNLOCK_LABEL,
    Camera,
    LiveSite,
    closing_sentence,
    follow_mail_links_to_the_site,
    generate_traffic,
    log_in,
    metered_demo_slugs,
    new_email,
    newsletter_status,
    open_demo_bar,
    sign_in_from_the_inbox,
)

pytestmark = pytest.mark.browser

ADMIN_EMAIL, ADMIN_PASSWORD = next((email, password) for email, password, _, admin in DEMO_ACCOUNTS if admin)
FAILS_RENEWALS = "4000 0000 0000 0341"
SITE_RULES = "Three of your choice"  # the title of the seed's preset, wpr
#: Screens shot on the phone for the docs (the rest on the desktop).
SHOT_DEVICES = {"demo-bar": "phone"}


@pytest.fixture
def classroom(tmp_path):
    """A fresh demo site (GATE_DEMO=1) with the demo admin, as `gate demo` creates it."""
    live = LiveSite(tmp_path)
    live.env["GATE_DEMO"] = "1"
    with live:
        live.gate("readers", "add", ADMIN_EMAIL, "--password", ADMIN_PASSWORD, "--admin", "--subscriber")
        yield live


@pytest.fixture
def camera(audit):
    """Saves screenshots for the docs when GATE_SCREENSHOTS names a folder; else does nothing."""
    folder = os.environ.get("GATE_SCREENSHOTS")
    if not folder:
        return lambda page, name: None
    Path(folder).mkdir(parents=True, exist_ok=True)
    saver = Camera(Path(folder))

    def shoot(page, name: str) -> None:
        """The phone's demo bar on a phone, every other screen on the desktop."""
        if audit.device == SHOT_DEVICES.get(name, "desktop"):
            saver.shoot(page, f"class-{name}-{audit.device}")

    return shoot


def check(audit, page, screen: str) -> None:
    """One step's checks: axe-core, and (on a phone) no sideways scroll."""
    audit.axe(page, screen)


def reset_day(gate) -> datetime:
    """The reset date the exhausted gate announces, checked to be a month's first midnight, site time."""
    expect(gate).to_contain_text("Your free articles come back on")
    resets_at = datetime.fromisoformat(gate.locator("time").get_attribute("datetime")).astimezone(NY)
    assert (resets_at.day, resets_at.hour, resets_at.minute) == (1, 0, 0), resets_at
    return resets_at


def clock_forward(page, *buttons: str) -> None:
    """On the console's clock page, press each +1 day / +1 week / +1 month button in turn."""
    page.goto("/admin/clock")
    for label in buttons:
        before = page.locator(".big-number").inner_text()
        page.get_by_role("button", name=label, exact=True).click()
        expect(page.locator(".flash")).to_contain_text("Time moved forward")
        expect(page.locator(".big-number")).not_to_have_text(before)


def pay(page, card: str) -> None:
    """Fill the Monthly checkout with ``card`` and pay."""
    page.get_by_label("Name on card").fill("Sam Student")
    page.get_by_label("Card number").fill(card)
    page.get_by_label("Expiry (MM/YY)").fill("12/30")
    page.get_by_label("Security code (CVC)").fill("123")
    page.get_by_role("button", name="Pay and subscribe").click()


def site_rules(page):
    """The demo bar's line naming the rules this visitor reads by."""
    return page.locator(".personas__rules")


# --- the steps of the class ----------------------------------------------------------------


def student_meets_the_gate_and_spends_the_meter(student, email, audit, camera) -> None:
    """1. The seeded metered article, its gate, an opt-in signup, three unlocks, the fourth refused."""
    first, second, third, fourth = metered_demo_slugs()[:4]
    student.goto(f"/articles/{first}")
    gate = student.get_by_role("complementary", name="Keep reading for free")
    expect(gate).to_be_visible()
    assert closing_sentence(first) not in student.content()
    camera(student, "gate")
    check(audit, student, "1. the gate")
    consent = gate.get_by_role("checkbox", name=re.compile("The Meridian Weekly"))
    expect(consent).not_to_be_checked()  # opt-in: the student ticks nothing
    gate.get_by_label("Email address").fill(email)
    gate.get_by_role("button", name="Keep reading", exact=True).click()
    expect(student.locator(".flash")).to_contain_text("Welcome to The Meridian")
    for left, slug in zip((3, 2, 1), (first, second, third)):
        student.goto(f"/articles/{slug}")
        student.get_by_role("button", name=UNLOCK_LABEL.format(left=left)).click()
        expect(student.locator(".story__body")).to_contain_text(closing_sentence(slug))
        expect(student.locator(".meterbar__meter")).to_contain_text(f"{left - 1} of 3")
    student.goto(f"/articles/{fourth}")
    gate = student.locator("aside.gate")
    expect(gate).to_have_attribute("data-offer", "subscribe")
    assert reset_day(gate) == datetime(2026, 12, 1, tzinfo=NY)
    expect(student.get_by_role("button", name=re.compile("^Unlock"))).to_have_count(0)
    check(audit, student, "1. the meter spent")


def presenter_travels_a_month(presenter, student, audit) -> None:
    """2. +1 month on the console's clock: the student's meter is full again."""
    clock_forward(presenter, "+1 month")
    check(audit, presenter, "2. console clock")
    student.reload()
    expect(student.locator("aside.gate")).to_have_attribute("data-offer", "unlock")
    expect(student.get_by_role("button", name=UNLOCK_LABEL.format(left=3))).to_be_visible()
    expect(student.locator(".meterbar__meter")).to_contain_text("3 of 3")


def presenter_previews_every_pattern(presenter, student, audit, camera) -> None:
    """3. Every pattern on /learn: Try it, the explain drawer; the student keeps the site's rules."""
    for lesson in LESSONS:
        presenter.goto("/learn/")
        presenter.locator(f"li#{lesson.id}").get_by_role("button", name="Try it", exact=True).click()
        expect(presenter.locator(".flash", has_text="Now showing:")).to_contain_text(  # a persona may add its own
            f"Now showing: {lesson.title}. A preview for you alone")
        if lesson.target is not None:  # a lesson that opens a page of its own (checkout, account): no drawer there
            expect(presenter).to_have_url(re.compile(re.escape(lesson.target.split("?")[0])))
            student.reload()
            expect(site_rules(student)).to_contain_text(f"Rules: {SITE_RULES}")
            continue
        drawer = presenter.locator("details.explain")
        drawer.locator("summary").click()
        facts = drawer.locator(".explain__facts")
        expect(facts).to_be_visible()
        expect(facts).to_contain_text(f"({lesson.preset})")
        audit.fits(presenter, f"3. explain drawer, {lesson.id}")
        if lesson.id == "ab-testing":  # the experiment's arm is named
            expect(drawer.locator(".explain__experiment")).to_contain_text("arm")
            camera(presenter, "explain")
            check(audit, presenter, "3. explain drawer with an experiment arm")
        if lesson.id == "dynamic":  # the score, its inputs and the band
            expect(drawer.locator(".explain__engagement")).to_contain_text("score 10 of 100")
            expect(drawer.locator(".explain__band")).to_contain_text("≤ 30: 5 free articles")
            camera(drawer, "explain-dynamic")  # the drawer alone: the score, its inputs and the band
            check(audit, presenter, "3. explain drawer with a dynamic meter")
        student.reload()
        expect(site_rules(student)).to_contain_text(f"Rules: {SITE_RULES}")
    open_demo_bar(presenter)
    presenter.get_by_role("button", name="Back to the site's preset").click()
    expect(presenter.locator(".flash")).to_contain_text(f"Back to the site's preset: {SITE_RULES}.")
    presenter.goto(f"/articles/{LESSONS[0].article}")  # the last lessons open pages of their own (account, checkout)


def presenter_views_as_personas(presenter, audit, camera) -> None:
    """4. Trialing, past due (banner, grace end), lapsed; the Console from the bar; back to the instructor."""
    bar = presenter.get_by_role("form", name="Demo personas")

    def become(label: str) -> None:
        open_demo_bar(presenter)
        bar.get_by_role("button", name=label, exact=True).click()
        expect(presenter.locator(".flash")).to_contain_text(f"You are now: {label}.")

    become("Trialing")
    expect(presenter.locator("aside.gate")).to_have_count(0)
    become("Past due")
    banner = presenter.get_by_role("alert").filter(has_text="Your last payment failed")
    expect(banner).to_contain_text(re.compile(r"You keep full access until \w+ \d+, \d{4}"))
    drawer = presenter.locator("details.explain")
    drawer.locator("summary").click()
    expect(drawer.locator(".explain__subscription")).to_contain_text(
        re.compile(r"access continues in the grace period until \w+ \d+"))
    check(audit, presenter, "4. past due persona")
    become("Lapsed")
    expect(presenter.locator("aside.gate")).to_have_attribute("data-offer", "unlock")
    camera(presenter, "demo-bar")
    bar.get_by_role("link", name="Console").click()
    expect(presenter.get_by_role("heading", level=1)).to_have_text("Dashboard")
    bar.get_by_role("button", name="Return to instructor").click()
    expect(presenter.locator(".flash")).to_contain_text("You are back in your own account.")
    expect(presenter.locator(".meterbar")).to_contain_text(ADMIN_EMAIL)
    check(audit, presenter, "4. back to the instructor")


def student_subscribes_fails_a_renewal_and_cancels(student, presenter, email, audit, camera) -> None:
    """5. Guest checkout on the card that fails renewals, the mailed sign-in, past due, Cancel now."""
    student.locator(".meterbar").get_by_role("button", name="Log out").click()
    expect(student.locator(".flash")).to_contain_text("You are logged out.")
    student.goto("/subscribe/monthly")
    student.get_by_label("Email address").fill(email)
    pay(student, FAILS_RENEWALS)
    expect(student.get_by_role("heading", level=1)).to_have_text("Check your email to finish")
    check(audit, student, "5. check your email")

    sign_in_from_the_inbox(student, email)  # anonymous in demo mode: everyone's mail, filtered to theirs
    # The student has an account (from the gate): checkout signs them in, then they pay.
    expect(student).to_have_url(re.compile(r"/subscribe/monthly$"))
    pay(student, FAILS_RENEWALS)
    expect(student).to_have_url(re.compile(r"/account$"))
    expect(student.get_by_role("region", name="Subscription").locator(".status")).to_have_text("Active")

    clock_forward(presenter, "+1 month", "+1 day")  # past the renewal, which the card refuses
    student.goto("/")
    banner = student.get_by_role("alert").filter(has_text="Your last payment failed")
    expect(banner).to_contain_text(re.compile(r"You keep full access until \w+ \d+, \d{4}"))
    check(audit, student, "5. past-due banner")

    student.goto("/dev/mail/")
    expect(student.get_by_role("heading", level=1)).to_have_text("Your mail")
    student.get_by_role("link", name="Action needed: your payment to The Meridian failed").first.click()
    expect(student.locator("h1.page-title")).to_contain_text("payment")
    student.goto("/account")
    student.get_by_role("link", name="Cancel now…").click()
    expect(student.get_by_role("heading", level=1)).to_have_text("Cancel your subscription now?")
    check(audit, student, "5. cancel confirmation")
    student.get_by_role("button", name="Yes, cancel now").click()
    expect(student.locator(".flash")).to_have_text("Your subscription has ended.")
    student.goto("/dev/mail/")
    expect(student.locator(".mailtable__subject").first).to_have_text("Your subscription to The Meridian has ended")
    camera(student, "inbox")
    check(audit, student, "5. inbox")


def the_newsletter_goes_out_and_the_student_unsubscribes(student, presenter, email, audit) -> None:
    """6. The student joins the free list; the presenter sends an issue; one click unsubscribes."""
    student.goto("/account/newsletters")
    student.get_by_role("button", name="Turn on The Meridian Weekly").click()
    # The address was proven by the mailed sign-in link: no second confirmation is asked for.
    expect(student.locator(".flash")).to_have_text("You're subscribed to The Meridian Weekly.")
    expect(newsletter_status(student, "The Meridian Weekly")).to_have_text("Subscribed")

    presenter.goto("/admin/newsletters")
    check(audit, presenter, "6. console newsletters")
    presenter.get_by_role("button", name="Send the next issue of The Meridian Weekly now").click()
    expect(presenter.locator(".flash")).to_contain_text("Sent issue No.")

    student.goto("/dev/mail/")
    student.locator(".mailtable__subject a", has_text="The Meridian Weekly No.").first.click()
    student.get_by_role("button", name="One-click unsubscribe, as a mail provider does").click()
    expect(student.get_by_role("heading", level=1)).to_contain_text("unsubscribed")
    student.goto("/account/newsletters")
    expect(newsletter_status(student, "The Meridian Weekly")).to_have_text("Unsubscribed")
    check(audit, student, "6. newsletters after one click")


def funnel_counts(page) -> list[int]:
    """The dashboard funnel's People column, top to bottom."""
    cells = page.get_by_role("region", name="Funnel").locator("tbody tr td:nth-child(2)").all_inner_texts()
    return [int(cell.replace(",", "")) for cell in cells]


def presenter_reads_the_numbers_and_changes_the_rule(presenter, student, audit, camera) -> None:
    """7. The funnel narrows; the rules switcher applies the A/B preset; traffic; a result with intervals."""
    presenter.goto("/admin/")
    # The class began two months of site time ago: count from its first day, not the last 30.
    presenter.get_by_label("From").fill(START.date().isoformat())
    presenter.get_by_role("button", name="Show").click()
    expect(presenter).to_have_url(re.compile(rf"start={START.date().isoformat()}"))
    counts = funnel_counts(presenter)
    assert len(counts) == 5 and counts[0] > 0, counts
    assert all(later <= earlier for earlier, later in zip(counts, counts[1:])), f"the funnel widens: {counts}"
    camera(presenter, "console-funnel")
    check(audit, presenter, "7. dashboard")

    presenter.get_by_role("navigation", name="Console").get_by_role("link", name="Rules").click()
    switcher = presenter.get_by_role("region", name="Presets")
    switcher.locator("form").filter(has=presenter.locator("input[value=metered-ab]")).get_by_role("button").click()
    expect(presenter.locator(".flash")).to_have_text("The site now applies metered-ab.")
    check(audit, presenter, "7. rules")
    student.reload()
    open_demo_bar(student)
    expect(site_rules(student)).to_contain_text("Rules:")
    expect(site_rules(student)).not_to_contain_text(SITE_RULES)

    generate_traffic(presenter)
    camera(presenter, "experiments")
    check(audit, presenter, "7. experiments")


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_the_class_plan_plays_from_the_browser(classroom, open_page, audit, camera):
    """The whole class, presenter and student side by side, without a terminal."""
    presenter, student = open_page(classroom.url), open_page(classroom.url)
    follow_mail_links_to_the_site(student.context, classroom)
    email = new_email("student")
    log_in(presenter, ADMIN_EMAIL, ADMIN_PASSWORD)

    student_meets_the_gate_and_spends_the_meter(student, email, audit, camera)
    presenter_travels_a_month(presenter, student, audit)
    presenter_previews_every_pattern(presenter, student, audit, camera)
    presenter_views_as_personas(presenter, audit, camera)
    student_subscribes_fails_a_renewal_and_cancels(student, presenter, email, audit, camera)
    the_newsletter_goes_out_and_the_student_unsubscribes(student, presenter, email, audit)
    presenter_reads_the_numbers_and_changes_the_rule(presenter, student, audit, camera)
    audit.assert_clean()

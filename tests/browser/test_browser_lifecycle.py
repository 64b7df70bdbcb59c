"""A subscription's life as a class watches it, in a real browser, on a desktop and a phone.

A visitor subscribes on the card that fails every renewal; a month of time
travel later the site-wide banner says until when access lasts, the inbox
(their own mail, newest first) has the failure notice with a clickable link,
a Daily Review issue unsubscribes in one click as a mail provider would, and
*Cancel now* asks before it ends anything.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.helpers import DEVICES, MAIL_ORIGIN, follow_mail_links_to_the_site, new_email, sign_in_from_the_inbox

pytestmark = pytest.mark.browser


def subscribe(page, email: str, card: str) -> None:
    """Check out the Monthly plan as a new visitor, then sign in through the link it mails."""
    page.goto("/subscribe/monthly")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Name on card").fill("Dana Okafor")
    page.get_by_label("Card number").fill(card)
    page.get_by_label("Expiry (MM/YY)").fill("12/30")
    page.get_by_label("Security code (CVC)").fill("123")
    page.get_by_role("button", name="Pay and subscribe").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your email to finish")
    sign_in_from_the_inbox(page, email)
    expect(page).to_have_url(re.compile(r"/account$"))


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_a_failing_renewal_a_class_can_follow(demo_site, open_page, audit, device):
    page = open_page(demo_site.url)
    follow_mail_links_to_the_site(page.context, demo_site)
    email = new_email("lifecycle")

    # Consent is opt-in: the gate's newsletter box starts unticked.
    page.goto("/articles/prisoner-swaps-rewarding-hostage-takers")
    expect(page.get_by_role("checkbox", name=re.compile("The Meridian Weekly"))).not_to_be_checked()

    subscribe(page, email, "4000 0000 0000 0341")
    expect(page.locator(".billing-alert")).to_have_count(0)
    demo_site.gate("clock", "advance", "31d")  # the renewal fails; Daily Review issues go out

    page.goto("/")
    banner = page.get_by_role("alert").filter(has_text="Your last payment failed")
    expect(banner).to_contain_text(re.compile(r"You keep full access until \w+ \d+, \d{4} at \d\d:\d\d"))
    audit.axe(page, "front page with the past-due banner")
    banner.get_by_role("link", name="Update card").click()
    expect(page).to_have_url(re.compile(r"/account/card$"))

    # The inbox opens on this reader's own mail, newest first.
    page.goto("/dev/mail/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your mail")
    expect(page.locator(".devmail__scope")).to_contain_text(email)
    expect(page.locator(".mailtable tbody tr").first).to_be_visible()
    subjects = page.locator(".mailtable__subject").all_inner_texts()
    assert subjects[-1] == "Receipt for your subscription to The Meridian"  # the oldest
    audit.axe(page, "inbox")
    page.get_by_role("link", name="Action needed: your payment to The Meridian failed").click()
    audit.axe(page, "payment failed mail")
    link = page.locator(".mailview__pre").get_by_role("link", name=f"{MAIL_ORIGIN}/account/card")
    link.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("card")

    # A Daily Review issue: one click, as a mail provider does it (RFC 8058).
    page.goto("/dev/mail/")
    page.locator(".mailtable__subject a", has_text="Daily Review No.").first.click()
    page.get_by_role("button", name="One-click unsubscribe, as a mail provider does").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("unsubscribed")
    page.goto("/account/newsletters")
    expect(page.locator(".consents")).to_contain_text("one click")

    # Cancel now asks first; only the confirmation ends the subscription.
    page.goto("/account")
    page.get_by_role("link", name="Cancel now…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Cancel your subscription now?")
    audit.axe(page, "cancel confirmation")
    page.get_by_role("button", name="Yes, cancel now").click()
    expect(page.locator(".flash")).to_have_text("Your subscription has ended.")
    expect(page.locator(".billing-alert")).to_have_count(0)
    page.goto("/dev/mail/")
    expect(page.locator(".mailtable__subject").first).to_have_text("Your subscription to The Meridian has ended")
    audit.fits(page, "inbox after cancel")
    audit.assert_clean()

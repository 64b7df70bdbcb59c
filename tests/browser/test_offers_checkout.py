"""A promo code at checkout, in a real browser: a wrong code is explained beside the field, the right one
shows its price before any card is asked, and the account page shows the discounted subscription."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import expect

from tests.helpers import follow_mail_links_to_the_site, new_email, sign_in_from_the_inbox

pytestmark = pytest.mark.browser


def test_a_reader_applies_a_code_and_pays_the_discounted_price(demo_site, open_page, audit):
    page = open_page(demo_site.url)
    follow_mail_links_to_the_site(page.context, demo_site)
    email = new_email("welcome")

    page.goto("/subscribe/monthly")
    page.get_by_label("Promo code", exact=True).fill("WELCOME5")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#promo-code-error")).to_have_text(re.compile("We don't recognise that code"))
    expect(page.get_by_label("Promo code", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".lede")).to_have_text("$12 a month. Cancel any time.")
    audit.axe(page, "checkout with a wrong code")

    page.get_by_label("Promo code", exact=True).fill("welcome50")
    page.get_by_role("button", name="Apply").click()
    price = page.get_by_role("status", name=re.compile("WELCOME50 applied"))
    expect(price).to_contain_text("WELCOME50 applied: Half price for three months")
    expect(price).to_contain_text("$6 a month for your first 3 months, then $12 a month.")
    expect(price).to_contain_text("Regular price: $12 a month.")
    audit.axe(page, "checkout with WELCOME50 applied")
    if os.environ.get("GATE_SCREENSHOTS"):
        page.screenshot(path=os.environ["GATE_SCREENSHOTS"], full_page=True)

    for label, value in {"Email address": email, "Name on card": "Wren Abara", "Card number": "4242 4242 4242 4242",
                         "Expiry (MM/YY)": "12/30", "Security code (CVC)": "123"}.items():
        page.get_by_label(label).fill(value)
    page.get_by_role("button", name="Pay and subscribe").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your email to finish")
    sign_in_from_the_inbox(page, email)
    expect(page).to_have_url(re.compile(r"/account$"))
    expect(page.locator("main")).to_contain_text("Active")
    expect(page.locator("main")).to_contain_text("USD 6.00")
    audit.assert_clean()

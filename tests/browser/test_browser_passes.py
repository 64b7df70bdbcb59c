"""A day pass in a real browser: bought from the gate's third option, read in full, ended by the console's clock."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, METERED, log_in, new_email

pytestmark = pytest.mark.browser
PASSWORD = "day-pass-reader-1"


def shoot(target, name: str) -> None:
    """A screenshot to look at, when GATE_SCREENSHOTS names a folder."""
    folder = os.environ.get("GATE_SCREENSHOTS")
    if folder:
        target.screenshot(path=str(Path(folder) / name))


def buy_a_day_pass(page, audit) -> None:
    """From the gate, buy the day pass on the card that succeeds."""
    page.get_by_role("link", name="Just today? A day pass for $3").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Day pass")
    audit.axe(page, "day pass form")
    shoot(page, "pass-form.png")
    page.get_by_label("Name on card").fill("Ines Vidal")
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.get_by_label("Expiry (MM/YY)").fill("12/30")
    page.get_by_label("Security code (CVC)").fill("123")
    page.get_by_role("button", name="Pay USD 3.00 and read").click()


def test_a_day_pass_from_the_gate_to_its_end(demo_site, open_page, audit):
    visitor = open_page(demo_site.url)
    visitor.goto(f"/articles/{METERED}")
    gate = visitor.get_by_role("complementary", name=re.compile("Keep reading"))
    expect(gate.get_by_role("button", name="Keep reading")).to_be_visible()  # signup
    expect(gate.get_by_role("link", name=re.compile("subscribe", re.I))).to_be_visible()
    expect(gate.get_by_role("link", name="Just today? A day pass for $3")).to_be_visible()
    audit.axe(visitor, "gate with three options")
    shoot(gate, "gate-three-options.png")

    email = new_email("daypass")
    demo_site.gate("readers", "add", email, "--password", PASSWORD)
    page = open_page(demo_site.url)
    log_in(page, email, PASSWORD)
    page.goto(f"/articles/{METERED}")
    buy_a_day_pass(page, audit)
    audit.axe(page, "article read on a day pass")
    expect(page).to_have_url(re.compile(f"/articles/{METERED}$"))
    expect(page.locator(".flash")).to_contain_text("Your day pass is on: every article is open until")
    expect(page.locator("aside.gate")).to_have_count(0)
    page.get_by_text("Why am I seeing this?").click()
    expect(page.locator(".explain__pass")).to_contain_text("every article is open until")
    page.goto("/account")
    expect(page.locator(".account__pass")).to_contain_text("Every article is open until")

    console = open_page(demo_site.url)
    log_in(console, ADMIN_EMAIL, ADMIN_PASSWORD)
    console.goto("/admin/clock")
    console.get_by_label("Advance by").fill("1d")
    console.get_by_role("button", name="Advance").click()
    expect(console.locator(".flash")).to_contain_text("Time moved forward 1d.")

    page.goto(f"/articles/{METERED}")
    expect(page.locator("aside.gate")).to_be_visible()
    expect(page.get_by_role("link", name="Just today? A day pass for $3")).to_be_visible()
    audit.assert_clean()

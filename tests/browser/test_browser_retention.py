"""The cancel flow in a real browser: asked why, one subscriber keeps half price, another pauses.

Each subscriber cancels from the account page, picks a reason, sees the save offer that
answers it, and accepts; the account then shows what they got. axe-core checks every
screen (refused answers, a 400 beside the field, are tested in tests/test_retention.py). With ``GATE_SCREENSHOTS=DIR`` the screens are saved there as PNGs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.helpers import Camera, log_in, new_email

pytestmark = pytest.mark.browser
PASSWORD = "retention-pass-1"


@pytest.fixture
def shoot():
    """Save a screen when GATE_SCREENSHOTS names a folder; else do nothing."""
    folder = os.environ.get("GATE_SCREENSHOTS")
    if not folder:
        return lambda page, name: None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Camera(Path(folder)).shoot


def cancel_for(page, demo_site, audit, shoot, name: str, reason: str) -> None:
    """A new monthly subscriber signs in and starts cancelling, giving ``reason``."""
    email = new_email(name)
    demo_site.gate("readers", "add", email, "--password", PASSWORD, "--subscriber", "--plan", "monthly")
    log_in(page, email, PASSWORD)
    page.goto("/account")
    page.get_by_role("link", name="Cancel at period end…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Before you go")
    audit.axe(page, "cancel reason")
    shoot(page, f"retention-reason-{name}")
    page.get_by_role("radio", name=reason).check()
    page.get_by_role("button", name="Continue cancelling").click()


def test_cancelling_subscribers_keep_half_price_or_pause(demo_site, open_page, audit, shoot):
    page = open_page(demo_site.url)
    cancel_for(page, demo_site, audit, shoot, "saver", "It costs too much")
    expect(page.get_by_role("heading", level=1)).to_have_text("Stay for less?")
    expect(page.locator(".lede")).to_contain_text("50% off your next 3 months ($6 a month instead of $12)")
    audit.axe(page, "discount save offer")
    shoot(page, "retention-discount-offer")
    page.get_by_role("button", name="Yes, keep my subscription at this price").click()
    expect(page.locator(".flash")).to_contain_text("Done: 50% off your next 3 months")
    expect(page.get_by_role("region", name="Subscription")).to_contain_text(re.compile(r"SAVE-\d+-\d{8}: 50% off your next 3 payments"))
    expect(page.locator(".status")).to_have_text("Active")
    shoot(page, "retention-discount-account")
    page.get_by_role("button", name="Log out").click()

    cancel_for(page, demo_site, audit, shoot, "pauser", "I don't have time to read it")
    expect(page.get_by_role("heading", level=1)).to_have_text("Take a break instead?")
    page.get_by_role("radio", name=re.compile(r"^1 month, back on")).check()
    audit.axe(page, "pause save offer")
    shoot(page, "retention-pause-offer")
    page.get_by_role("button", name="Pause my subscription").click()
    expect(page.locator(".status")).to_have_text("Paused")
    expect(page.get_by_role("region", name="Subscription")).to_contain_text(re.compile(r"paused until December 28, 2026"))
    expect(page.get_by_role("button", name="Resume now")).to_be_visible()
    audit.axe(page, "account while paused")
    shoot(page, "retention-paused-account")
    audit.assert_clean()

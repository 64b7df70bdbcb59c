"""Device limits in real browsers: one sign-in too many signs the least recently seen out, with a notice on both."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.helpers import PHONE, log_in, new_email

pytestmark = pytest.mark.browser
PASSWORD = "shared-device-pass-1"
ANDROID = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36"


def shoot(target, name: str) -> None:
    """A screenshot to look at, when GATE_SCREENSHOTS names a folder."""
    folder = os.environ.get("GATE_SCREENSHOTS")
    if folder:
        target.screenshot(path=str(Path(folder) / name), full_page=True)


def test_one_device_too_many_signs_the_oldest_out_and_the_account_page_signs_others_out(
        site, browser, open_page, audit):
    """metered-verified allows two devices: a third sign-in signs out the first (seen least recently)."""
    site.gate("preset", "use", "metered-verified")
    email = new_email("shared")
    site.gate("readers", "add", email, "--password", PASSWORD)
    first, second = open_page(site.url), open_page(site.url)
    log_in(first, email, PASSWORD)
    log_in(second, email, PASSWORD)

    phone = browser.new_context(base_url=site.url, user_agent=ANDROID, **PHONE)
    phone.set_default_timeout(10_000)
    audit.watch(phone)
    third = phone.new_page()
    log_in(third, email, PASSWORD)
    expect(third.locator(".flashes")).to_contain_text("we signed you out of Chrome on Linux last seen")

    first.goto("/account")
    expect(first.locator(".flashes")).to_contain_text(
        "You were signed out because your account signed in on another device.")
    expect(first).to_have_url(f"{site.url}/login?next=%2Faccount")
    first.reload()
    expect(first.locator(".flash")).to_have_count(0)  # said once

    third.goto("/account")
    devices = third.get_by_role("table", name="Devices signed in to your account")
    expect(devices.get_by_role("row")).to_have_count(3)  # the header and two devices
    expect(devices.get_by_role("row").filter(has_text="This device")).to_contain_text("Chrome on Android")
    audit.axe(third, "account page's device list")
    shoot(third, "account-devices.png")
    devices.get_by_role("button", name="Sign out Chrome on Linux").click()
    expect(third.locator(".flashes")).to_contain_text("That device is signed out.")
    expect(third.get_by_role("table", name="Devices signed in to your account").get_by_role("row")).to_have_count(2)

    second.goto("/account")
    expect(second.locator(".flashes")).to_contain_text("You were signed out of this device from another one.")
    phone.close()
    audit.assert_clean()

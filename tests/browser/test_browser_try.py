"""Try (issue 18) in a real browser: an admin tries a preset as two personas, then goes back to the studio.

The site's preset never changes: another visitor reads by it all along. Each
screen is checked by axe-core and, on the phone, for its width.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, DEVICES, METERED, closing_sentence, log_in, shoot_if_asked

pytestmark = pytest.mark.browser

BANNER = "Trying preset Hard paywall as {who} — the site still runs Three of your choice"


def site_preset(page) -> str:
    """The preset the site runs, as any visitor's API answers it."""
    return page.request.get("/api/health").json()["preset"]


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_an_admin_tries_a_preset_as_two_personas_and_goes_back_to_the_studio(demo_site, open_page, audit, device):
    page = open_page(demo_site.url)
    log_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.goto("/admin/rules?a=wpr&b=hard")
    form = page.get_by_role("form", name="Try hard as a persona")
    expect(form).to_contain_text("Just signed up; the whole meter is left.")  # each persona's one line
    audit.axe(page, "the rules page with its Try form")

    form.get_by_role("radio", name=re.compile("^New reader")).check()
    form.get_by_role("button", name="Try", exact=True).click()
    expect(page.locator(".flash")).to_contain_text("Trying Hard paywall as New reader")
    banner = page.get_by_role("region", name="Trying a preset")
    expect(banner).to_contain_text(BANNER.format(who="New reader"))
    expect(page).to_have_url(re.compile(r"/articles/[a-z0-9-]+$"))
    gate = page.locator("aside.gate")
    expect(gate).to_have_attribute("data-offer", "subscribe")  # the hard paywall's gate, not the site's unlock
    expect(gate).to_contain_text("This article is for subscribers")
    audit.axe(page, "an article tried under the hard paywall as a new reader")
    shoot_if_asked(page, f"try-{audit.device}.png")

    stranger = open_page(demo_site.url)  # another browser reads by the site's preset meanwhile
    stranger.goto(f"/articles/{METERED}")
    expect(stranger.get_by_role("region", name="Trying a preset")).to_have_count(0)
    expect(stranger.locator("aside.gate")).to_have_attribute("data-offer", "register")
    assert site_preset(stranger) == "wpr"

    page.goto(f"/articles/{METERED}")
    banner.get_by_label("Switch persona").select_option(label="Subscriber")
    banner.get_by_role("button", name="Switch", exact=True).click()
    expect(page.locator(".flash")).to_contain_text("You are now: Subscriber.")
    expect(banner).to_contain_text(BANNER.format(who="Subscriber"))
    expect(page).to_have_url(re.compile(rf"/articles/{METERED}$"))
    expect(page.locator("aside.gate")).to_have_count(0)
    expect(page.locator(".story__body")).to_contain_text(closing_sentence(METERED))
    audit.axe(page, "the same article tried as a subscriber")

    banner.get_by_role("button", name="Back to the studio").click()
    expect(page.locator(".flash")).to_contain_text("Back in the studio. The site runs Three of your choice")
    expect(page).to_have_url(re.compile(r"/admin/rules$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Rules")
    expect(page.get_by_role("heading", name=re.compile("^Active: Three of your choice"))).to_be_visible()
    expect(page.locator(".meterbar")).to_contain_text(ADMIN_EMAIL)
    expect(page.get_by_role("region", name="Trying a preset")).to_have_count(0)
    assert site_preset(page) == "wpr" and site_preset(stranger) == "wpr"
    audit.axe(page, "back in the studio")
    audit.assert_clean()

"""Issue 18's journey in a real browser: a presenter designs a preset, forecasts it, tries it, ships it.

Everything is done in the console of a demo site, by clicks and forms, on a
desktop and on a 390 px phone: a new preset copied from the running one and
edited (a weekly meter for visitors and readers), its differences from the
running preset in words, saved; a forecast against the running preset on a
small seeded population, with its progress, table and charts; a Try as an
anonymous visitor and then as a new reader, each meeting the new preset's
gate while another browser keeps the site's; back to the studio; Save and
use, after which that other browser reads by the new preset too. axe-core
runs on every screen; ``GATE_SCREENSHOTS=DIR`` saves the key ones.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, DEVICES, METERED, closing_sentence, log_in, shoot_if_asked

pytestmark = pytest.mark.browser

TITLE = "Two free a week"
#: A small population: a forecast of it takes seconds, even on a loaded machine.
READERS, DAYS = "2000", "21"


def site_preset(page) -> str:
    """The preset the site runs, as any visitor's API answers it."""
    return page.request.get("/api/health").json()["preset"]


def design(page, name: str) -> None:
    """Copy the running preset and make it weekly: visitors read two counted views, readers unlock four."""
    page.goto("/admin/rules")
    start = page.get_by_role("region", name="New preset")
    start.get_by_label("Start from").select_option("wpr")
    start.get_by_role("button", name="Start a preset").click()
    form = page.get_by_role("form", name="Preset rules")
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Title", exact=True).fill(TITLE)
    visitors = form.get_by_role("group", name="Anonymous visitors", exact=True)
    visitors.get_by_label("Number of articles").fill("2")
    visitors.get_by_label("Period", exact=True).select_option("week")
    visitors.get_by_label("What counts").select_option("auto")
    readers = form.get_by_role("group", name="Registered readers", exact=True)
    readers.get_by_label("Number of articles").fill("4")
    readers.get_by_label("Period", exact=True).select_option("week")
    form.get_by_role("button", name="Show differences").click()
    changes = page.get_by_role("region", name="Differences from the running preset").get_by_role("listitem")
    expect(changes.filter(has_text="Anonymous visitors:")).to_have_text(
        "Anonymous visitors: a teaser only → 2 counted views a week")
    expect(changes.filter(has_text="Registered readers:")).to_have_text(
        "Registered readers: 3 of their choice a month → 4 of their choice a week")
    form.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".flash")).to_contain_text(f"Saved {name}")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Edit {name}")


def forecast(page, name: str, audit, seed: str) -> None:
    """Forecast the saved preset against the running one, from its editor; wait for the table."""
    box = page.get_by_role("region", name="Forecast")
    expect(box.get_by_label("Preset to forecast")).to_have_value(name)
    expect(box.get_by_label("Against")).to_have_value("wpr")  # the running preset
    box.get_by_label("Readers").fill(READERS)
    box.get_by_label("Days").fill(DAYS)
    box.get_by_label("Seed").fill(seed)
    box.get_by_role("button", name="Start the forecast").click()
    table = box.get_by_role("table", name=f"What {name} would bring, against wpr")
    expect(table).to_be_visible(timeout=120_000)
    expect(table.get_by_role("row", name="registrations")).to_be_visible()
    expect(box.get_by_role("img", name=f"Registrations a day: wpr and {name}")).to_be_visible()
    expect(box.get_by_role("status")).to_contain_text(f"Done: {name} against wpr")
    audit.axe(page, "the editor with its forecast")


def try_as(page, persona: str) -> None:
    """From the editor's Try, become ``persona`` under the saved preset, on the seeded metered article."""
    box = page.get_by_role("region", name="Try")
    box.get_by_role("radio", name=re.compile(f"^{persona}")).check()
    box.get_by_role("button", name="Try", exact=True).click()
    expect(page.get_by_role("region", name="Trying a preset")).to_contain_text(
        f"Trying preset {TITLE} as {persona} — the site still runs Three of your choice")
    page.goto(f"/articles/{METERED}")


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_a_presenter_designs_forecasts_tries_and_ships_a_preset(demo_site, open_page, audit, device):
    phone = bool(device.get("is_mobile"))
    name = f"weekly-{'phone' if phone else 'desktop'}"
    page = open_page(demo_site.url)
    log_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    stranger = open_page(demo_site.url)  # another browser, reading by the site's preset throughout
    try:
        design(page, name)
        audit.axe(page, "the saved preset's editor")
        forecast(page, name, audit, seed="7" if phone else "8")
        shoot_if_asked(page, f"studio-forecast-{audit.device}.png")

        # Try, as two personas: the new preset's gate for each, the site's for everyone else.
        try_as(page, "Anonymous")
        expect(page.locator("aside.gate")).to_have_count(0)  # a counted view of two this week
        expect(page.locator(".story__body")).to_contain_text(closing_sentence(METERED))
        audit.axe(page, "tried as an anonymous visitor")
        stranger.goto(f"/articles/{METERED}")
        expect(stranger.locator("aside.gate")).to_have_attribute("data-offer", "register")
        assert closing_sentence(METERED) not in stranger.content()

        banner = page.get_by_role("region", name="Trying a preset")
        banner.get_by_label("Switch persona").select_option(label="New reader")
        banner.get_by_role("button", name="Switch", exact=True).click()
        expect(banner).to_contain_text(f"Trying preset {TITLE} as New reader")
        gate = page.locator("aside.gate")
        expect(gate).to_have_attribute("data-offer", "unlock")
        expect(gate).to_contain_text("4")  # the week's four of their choice, all left
        audit.axe(page, "tried as a new reader")
        shoot_if_asked(page, f"studio-try-{audit.device}.png")

        banner.get_by_role("button", name="Back to the studio").click()
        expect(page).to_have_url(re.compile(rf"/admin/rules/{name}$"))
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Edit {name}")
        assert site_preset(stranger) == "wpr"

        # Ship: the site runs it, and the other browser reads by it on its next page.
        page.get_by_role("form", name="Preset rules").get_by_role("button", name="Save and use").click()
        expect(page.locator(".flash")).to_contain_text("The site now applies it")
        audit.axe(page, "shipped")
        assert site_preset(stranger) == name
        stranger.goto(f"/articles/{METERED}")
        expect(stranger.locator("aside.gate")).to_have_count(0)
        expect(stranger.locator(".story__body")).to_contain_text(closing_sentence(METERED))
        page.goto("/admin/rules")
        expect(page.get_by_role("heading", name=f"Active: {TITLE}")).to_be_visible()
        events = page.request.get("/admin/events.json").json()
        kinds = {event["type"] for event in events["events"]}
        assert {"preset_saved", "preset_changed"} <= kinds, kinds
    finally:
        demo_site.gate("preset", "use", "wpr")
    audit.assert_clean()

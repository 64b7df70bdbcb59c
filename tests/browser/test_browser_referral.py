"""Side doors in a real browser: arriving from search by the persona and by a Referer, the explain drawer, axe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.helpers import METERED, closing_sentence, open_demo_bar

pytestmark = pytest.mark.browser
OTHER = "baltic-seabed-natos-exposed-frontier"  # another metered demo article


def shoot(target, name: str) -> None:
    """A screenshot to look at, when GATE_SCREENSHOTS names a folder."""
    folder = os.environ.get("GATE_SCREENSHOTS")
    if folder:
        target.screenshot(path=str(Path(folder) / name))


def test_arriving_from_search_reads_outside_the_meter(demo_site, open_page, audit):
    demo_site.gate("preset", "use", "side-doors")
    try:
        page = open_page(demo_site.url)
        page.goto("/")
        open_demo_bar(page)
        page.get_by_role("form", name="Demo personas").get_by_role("button", name="Arrives from search").click()
        expect(page.locator(".flash")).to_contain_text("You are now: Arrives from search.")
        page.goto(f"/articles/{METERED}")  # the next article comes from a Google result
        expect(page.locator(".story__body")).to_contain_text(closing_sentence(METERED))
        expect(page.locator("aside.gate")).to_have_count(0)
        page.get_by_text("Why am I seeing this?").click()
        facts = page.locator(".explain__facts")
        expect(facts.locator(".explain__referral")).to_contain_text("search: Arrived from a search engine")
        expect(facts.locator(".explain__referral")).to_contain_text("1 of 5 search reads used today, this article included")
        expect(facts).to_contain_text("nothing spent")
        audit.axe(page, "article read through the search side door, drawer open")
        shoot(page, "referral-search.png")

        spoofed = open_page(demo_site.url)  # a stranger with a forged Referer walks in the same way
        spoofed.goto(f"/articles/{OTHER}", referer="https://www.bing.com/search?q=baltic")
        expect(spoofed.locator(".story__body")).to_contain_text(closing_sentence(OTHER))
        spoofed.get_by_text("Why am I seeing this?").click()
        expect(spoofed.locator(".explain__referral")).to_contain_text("search")
        audit.axe(spoofed, "article opened with a spoofed Referer")
    finally:
        demo_site.gate("preset", "use", "wpr")
    audit.assert_clean()

"""A gift link in a real browser: a subscriber gifts an article, a stranger reads it in full outside the meter."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.helpers import METERED, LiveSite, closing_sentence

GIVER, PASSWORD = "giver@example.org", "gift-pass-123"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The real site with one subscriber."""
    with LiveSite(tmp_path_factory.mktemp("gifts-site")) as live:
        live.gate("readers", "add", GIVER, "--password", PASSWORD, "--subscriber")
        yield live


def test_a_subscriber_gifts_an_article_and_a_stranger_reads_it_in_full(site, open_page, audit, tmp_path):
    giver = open_page(site.url)
    giver.goto(f"/login?next=/articles/{METERED}")
    form = giver.get_by_role("region", name="Log in")
    form.get_by_label("Email address").fill(GIVER)
    form.locator("input[name=password]").fill(PASSWORD)
    form.locator("button[type=submit]").click()
    expect(giver).to_have_url(re.compile(rf"/articles/{METERED}$"))
    expect(giver.locator(".gift-form")).to_contain_text("your gifts and how many are left")
    giver.get_by_role("button", name="Gift this article").click()
    expect(giver).to_have_url(re.compile(r"/gifts#gift-\d+$"))
    expect(giver.locator(".flash")).to_contain_text("9 of 10 gifts left this period")
    audit.axe(giver, "the giver's gifts")
    path = urlsplit(giver.locator(".gift-url").first.input_value()).path

    stranger = open_page(site.url)  # another browser context: a new visitor
    stranger.goto(path)
    expect(stranger.get_by_role("heading", level=1)).to_be_visible()
    expect(stranger.locator(".gift-landing")).to_contain_text("A gift from g***@example.org")
    audit.axe(stranger, "a gift's page")
    stranger.get_by_role("button", name="Read the gift").click()
    expect(stranger).to_have_url(re.compile(rf"/articles/{METERED}$"))
    expect(stranger.locator(".notice--gift")).to_contain_text("A gift from g***@example.org")
    expect(stranger.locator(".story__body")).to_contain_text(closing_sentence(METERED))
    audit.axe(stranger, "a gifted article")
    stranger.screenshot(path=str(tmp_path / "gifted-article.png"), full_page=False)
    meter = stranger.evaluate("() => fetch('/api/meter').then(r => r.json())")
    assert meter["used"] == 0
    stranger.reload()  # the grant is the device's: the article's own URL keeps reading in full
    expect(stranger.locator(".story__body")).to_contain_text(closing_sentence(METERED))
    audit.assert_clean()

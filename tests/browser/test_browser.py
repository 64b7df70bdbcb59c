"""The site in a real browser: Chromium, driven by Playwright, against gunicorn.

One real server (``gate serve``) on a free loopback port serves a fresh,
seeded database with the clock frozen at START, and the tests act as people
do: they click headlines, type into the gate, press buttons and read what
the page says. Each test gets its own browser context (its own cookies), so
each starts as a new anonymous visitor.

The server and browser helpers are in ``tests/helpers.py`` (``tests/screenshots.py`` uses them too);
Chromium is a fixture of ``tests/browser/conftest.py``.
"""

from __future__ import annotations

import itertools
import os
import re
from datetime import datetime

import pytest
from playwright import sync_api  # a test dependency: missing, it fails the run rather than skipping

from tests.helpers import (
    METERED,
    NY,
    READER_EMAIL,
    READER_PASSWORD,
    UNLOCK_LABEL,
    LiveSite,
    articles,
    closing_sentence,
    metered_demo_slugs,
    opening_sentence,
)

expect = sync_api.expect
pytestmark = pytest.mark.browser



# --- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The real site, with one reader who has a password."""
    with LiveSite(tmp_path_factory.mktemp("browser-site")) as live:
        live.gate("readers", "add", READER_EMAIL, "--password", READER_PASSWORD)
        yield live


@pytest.fixture
def new_page(browser, site):
    """Open pages in fresh browser contexts (new visitors); closed after the test."""
    contexts = []

    def open_page(**options):
        options.setdefault("viewport", {"width": 1280, "height": 900})
        context = browser.new_context(base_url=site.url, **options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page):
    """A desktop page for a new anonymous visitor."""
    return new_page()


_numbers = itertools.count(1)


@pytest.fixture
def email() -> str:
    """An address no one has signed up with yet."""
    return f"visitor{next(_numbers)}.{os.getpid()}@example.org"


# --- what a person does ----------------------------------------------------------


def gate_of(page):
    """The gate card under the teaser, whatever it offers."""
    return page.locator("aside.gate")


def sign_up_at_gate(page, slug: str, address: str) -> None:
    """Open an article and sign up with the gate's email field."""
    page.goto(f"/articles/{slug}")
    gate = gate_of(page)
    gate.get_by_label("Email address").fill(address)
    gate.get_by_role("button", name="Keep reading", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/articles/{slug}$"))


def unlock(page, slug: str, left: int) -> None:
    """Open an article, press the unlock button (showing ``left`` of 3) and check it opened."""
    if not page.url.endswith(f"/articles/{slug}"):
        page.goto(f"/articles/{slug}")
    page.get_by_role("button", name=UNLOCK_LABEL.format(left=left)).click()
    expect(page.locator(".story__body")).to_contain_text(closing_sentence(slug))


def meter_text(page) -> str:
    return page.locator(".meterbar__meter").inner_text()


# --- the tests ------------------------------------------------------------------


def test_anonymous_visitor_reads_the_teaser_and_meets_the_gate(page):
    """(a) A headline on the front page leads to the teaser and the gate, never the rest."""
    article = articles()[METERED]
    page.goto("/")
    page.get_by_role("link", name=article["title"], exact=True).first.click()
    expect(page).to_have_url(re.compile(rf"/articles/{METERED}$"))

    expect(page.get_by_role("heading", level=1)).to_have_text(article["title"])
    expect(page.locator(".story__dek")).to_have_text(article["dek"])
    expect(page.locator(".story__header .byline")).to_contain_text(article["author"])
    expect(page.locator(".story__body")).to_contain_text(opening_sentence(METERED))

    gate = page.get_by_role("complementary", name="Keep reading for free")
    expect(gate).to_be_visible()
    expect(gate.get_by_role("textbox", name="Email address")).to_be_visible()
    expect(gate.get_by_role("button", name="Keep reading", exact=True)).to_be_visible()
    expect(gate.get_by_role("link", name=re.compile("subscribe now", re.I))).to_be_visible()
    expect(gate.get_by_role("link", name="Log in", exact=True)).to_be_visible()
    assert closing_sentence(METERED) not in page.content()


def test_signup_at_the_gate_then_unlock_an_article(page, email):
    """(b) Keep reading → back on the article → Unlock → the whole text; the meter drops to 2."""
    sign_up_at_gate(page, METERED, email)
    expect(page.locator(".meterbar")).to_contain_text(email)
    expect(page.locator(".meterbar__meter")).to_contain_text("3 of 3")
    assert closing_sentence(METERED) not in page.content()

    button = page.get_by_role("button", name=UNLOCK_LABEL.format(left=3))
    expect(button).to_be_visible()
    button.click()

    expect(page).to_have_url(re.compile(rf"/articles/{METERED}$"))
    expect(page.locator(".story__body")).to_contain_text(closing_sentence(METERED))
    assert closing_sentence(METERED) in page.content()
    expect(page.locator("aside.gate")).to_have_count(0)
    expect(page.locator(".meterbar__meter")).to_contain_text("2 of 3")


def test_the_fourth_article_offers_a_subscription_and_the_reset_date(page, email):
    """(c) After three unlocks the next article shows the subscribe offer and when the meter resets."""
    first, second, third, fourth = metered_demo_slugs()[:4]
    sign_up_at_gate(page, first, email)
    unlock(page, first, left=3)
    unlock(page, second, left=2)
    unlock(page, third, left=1)
    expect(page.locator(".meterbar__meter")).to_contain_text("0 of 3")

    page.goto(f"/articles/{fourth}")
    gate = gate_of(page)
    expect(gate).to_have_attribute("data-offer", "subscribe")
    expect(gate.get_by_role("heading")).to_have_text("You've read your 3 free articles this month")
    expect(gate.get_by_role("link", name="Subscribe now to get full access")).to_be_visible()
    expect(gate).to_contain_text("Your free articles come back on Tuesday, December 1")
    resets_at = datetime.fromisoformat(gate.locator("time").get_attribute("datetime"))
    assert resets_at == datetime(2026, 12, 1, tzinfo=NY)
    expect(page.get_by_role("button", name=re.compile("^Unlock"))).to_have_count(0)
    assert closing_sentence(fourth) not in page.content()

    page.goto(f"/articles/{first}")  # re-reading an unlocked article costs nothing
    expect(page.locator(".story__body")).to_contain_text(closing_sentence(first))


def test_log_out_with_the_header_button(page, email):
    """(d) The header's Log out button ends the session: the visitor is anonymous again."""
    sign_up_at_gate(page, METERED, email)
    unlock(page, METERED, left=3)
    page.locator(".meterbar").get_by_role("button", name="Log out").click()

    expect(page.locator(".flash")).to_contain_text("You are logged out.")
    bar = page.locator(".meterbar")
    expect(bar).not_to_contain_text(email)
    expect(bar.get_by_role("link", name="Log in")).to_be_visible()
    assert page.request.get("/api/meter").json()["tier"] == "anonymous"

    page.goto(f"/articles/{METERED}")
    expect(page.get_by_role("complementary", name="Keep reading for free")).to_be_visible()
    assert closing_sentence(METERED) not in page.content()


def test_log_in_with_a_password_returns_to_the_article(page):
    """(e) The gate's Log in link → email and password → back on the article, logged in."""
    page.goto(f"/articles/{METERED}")
    gate_of(page).get_by_role("link", name="Log in", exact=True).click()
    expect(page).to_have_url(re.compile(r"/login\?next="))

    form = page.get_by_role("region", name="Log in")
    form.get_by_label("Email address").fill(READER_EMAIL)
    form.get_by_label("Password").fill(READER_PASSWORD)
    form.get_by_role("button", name="Log in").click()

    expect(page).to_have_url(re.compile(rf"/articles/{METERED}$"))
    expect(page.locator(".flash")).to_contain_text("You are logged in.")
    expect(page.locator(".meterbar")).to_contain_text(READER_EMAIL)
    expect(page.get_by_role("button", name=re.compile(r"^Unlock this article"))).to_be_visible()


def test_a_wrong_password_is_refused(page):
    """Logging in with a wrong password says so and logs nobody in."""
    page.goto("/login")
    form = page.get_by_role("region", name="Log in")
    form.get_by_label("Email address").fill(READER_EMAIL)
    form.get_by_label("Password").fill("not-the-password")
    form.get_by_role("button", name="Log in").click()
    expect(form.locator(".field__error")).to_contain_text("don't match")
    expect(page.locator(".meterbar")).not_to_contain_text(READER_EMAIL)


def test_the_gate_works_without_javascript(new_page, email):
    """(f) With JavaScript off, the gate's forms still post: sign up, unlock, read."""
    page = new_page(java_script_enabled=False)
    sign_up_at_gate(page, METERED, email)
    expect(page.locator(".meterbar")).to_contain_text(email)
    unlock(page, METERED, left=3)
    expect(page.locator(".meterbar__meter")).to_contain_text("2 of 3")


PHONE = {"width": 375, "height": 800}


def _too_wide(page, paths: list[str]) -> dict[str, int]:
    """The pages, among ``paths``, that scroll sideways on the phone, with their widths.

    A mobile browser zooms out to fit content that is too wide, which
    widens innerWidth too, so both are compared with the screen's width.
    """
    wide = {}
    for path in paths:
        page.goto(path)
        scroll_width, inner_width = page.evaluate(
            "[document.scrollingElement.scrollWidth, window.innerWidth]")
        if max(scroll_width, inner_width) > PHONE["width"]:
            wide[path] = scroll_width
    return wide


def test_no_horizontal_scrolling_on_a_phone(new_page, email):
    """(g) At 375 px wide nothing is wider than the screen, anonymous or signed in."""
    page = new_page(viewport=PHONE, is_mobile=True, has_touch=True)
    anonymous = ["/", f"/articles/{METERED}", "/sections/Diplomacy", "/signup", "/login", "/subscribe"]
    assert _too_wide(page, anonymous) == {}
    sign_up_at_gate(page, METERED, email)
    assert _too_wide(page, [f"/articles/{METERED}", "/account"]) == {}


_UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter(el => ![...(el.labels || [])].some(label => label.textContent.trim()))
  .map(el => el.outerHTML)"""


def test_inputs_have_labels_the_gate_is_labelled_and_articles_have_one_h1(new_page, email):
    """(h) Every input has a label; the gate is a labelled <aside>; one h1 per article page."""
    page = new_page()
    page.goto(f"/articles/{METERED}")
    gate = page.locator(".gate")
    assert gate.evaluate("el => el.tagName") == "ASIDE"
    title_id = gate.get_attribute("aria-labelledby")
    assert title_id and page.locator(f"#{title_id}").inner_text().strip() == "Keep reading for free"
    assert page.evaluate(_UNLABELLED) == []
    expect(page.locator("h1")).to_have_count(1)

    for path in ("/signup", "/login"):
        page.goto(path)
        assert page.evaluate(_UNLABELLED) == [], path

    sign_up_at_gate(page, METERED, email)
    assert page.evaluate(_UNLABELLED) == []
    expect(page.locator("h1")).to_have_count(1)
    unlock(page, METERED, left=3)
    expect(page.locator("h1")).to_have_count(1)
    expect(page.locator("h1")).to_have_text(articles()[METERED]["title"])

"""A group licence in a real browser: join by a domain link, read a premium article, see it in the console."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect

from gate.storage.db import open_database
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, PREMIUM, log_in

pytestmark = pytest.mark.browser
PASSWORD = "riverside-reader-1"
JOIN = re.compile(r"https?://[^/\s]+(/orgs/join/[A-Za-z0-9._-]+)")


def shoot(target, name: str) -> None:
    """A screenshot to look at, when GATE_SCREENSHOTS names a folder."""
    folder = os.environ.get("GATE_SCREENSHOTS")
    if folder:
        target.screenshot(path=str(Path(folder) / name), full_page=True)


def mailed_join_path(site, to: str) -> str:
    """The path of the newest join link the site mailed to ``to``."""
    db = open_database(site.database)
    try:
        text = db.scalar("select body_text from outbox where to_addr = ? and kind = 'org_link' order by id desc",
                         [to])
    finally:
        db.close()
    return JOIN.search(text).group(1)


def test_join_by_domain_link_read_premium_and_see_it_in_the_console(demo_site, open_page, audit):
    slug = f"riverside-{uuid.uuid4().hex[:6]}"
    demo_site.gate("orgs", "add", "Riverside University", "--slug", slug, "--seats", "25",
                   "--domain", "riverside.example")
    email = f"ada.{uuid.uuid4().hex[:8]}@riverside.example"
    demo_site.gate("readers", "add", email, "--password", PASSWORD)
    page = open_page(demo_site.url)
    log_in(page, email, PASSWORD)
    page.goto(f"/articles/{PREMIUM}")
    expect(page.locator("aside.gate")).to_be_visible()

    page.goto(f"/orgs/{slug}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Riverside University")
    expect(page.locator(".org__seats")).to_have_text("0 of 25 taken")
    audit.axe(page, "organisation page")
    shoot(page, "org-page.png")
    page.get_by_role("button", name="Email me a link to join").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your email to join")

    page.goto(mailed_join_path(demo_site, email))
    audit.axe(page, "join confirmation")
    page.get_by_role("button", name="Join Riverside University").click()
    expect(page.locator(".flash")).to_contain_text("You joined Riverside University's group licence")
    page.goto(f"/articles/{PREMIUM}")
    expect(page.locator("aside.gate")).to_have_count(0)
    page.get_by_text("Why am I seeing this?").click()
    expect(page.locator(".explain__licence")).to_contain_text("a member of Riverside University (25 seats)")
    audit.axe(page, "premium article read on a licence")
    page.goto("/account")
    expect(page.get_by_role("button", name="Leave Riverside University")).to_be_visible()

    console = open_page(demo_site.url)
    log_in(console, ADMIN_EMAIL, ADMIN_PASSWORD)
    console.goto("/admin/orgs")
    console.get_by_role("link", name="Riverside University").first.click()
    expect(console.locator(".org__seats")).to_have_text("1 of 25")
    expect(console.get_by_role("table")).to_contain_text(email)
    audit.axe(console, "console organisation page")
    shoot(console, "admin-org.png")
    audit.assert_clean()

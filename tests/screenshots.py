"""Screenshots of the site for the README and docs/: `python -m tests.screenshots OUTDIR`.

Starts the real site the way the browser tests do (gunicorn, a fresh seeded
database, the clock frozen at 2026-11-28 12:00 New York time), walks through
it in Chromium as an anonymous visitor and then as a reader who signs up at
the gate, and saves full-page PNGs: desktop at 1280 px wide, and the front
page and the article on a 390 px phone (about 2.8 MB in all).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.helpers import UNLOCK_LABEL, Camera, LiveSite, launch_chromium, metered_demo_slugs

ARTICLE = "prisoner-swaps-rewarding-hostage-takers"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def anonymous_pages(browser, base_url: str, camera: Camera) -> None:
    """What a visitor without an account sees."""
    context = browser.new_context(base_url=base_url, viewport=DESKTOP)
    page = context.new_page()
    camera.shoot(page, "front", "/")
    camera.shoot(page, "section", "/sections/Diplomacy")
    camera.shoot(page, "article-anonymous", f"/articles/{ARTICLE}")
    camera.shoot(page, "signup", f"/signup?next=/articles/{ARTICLE}")
    camera.shoot(page, "login", f"/login?next=/articles/{ARTICLE}")
    camera.shoot(page, "subscribe", "/subscribe")
    camera.shoot(page, "not-found", "/articles/no-such-article")
    context.close()

    phone = browser.new_context(base_url=base_url, viewport=PHONE, is_mobile=True,
                                has_touch=True, device_scale_factor=1)
    page = phone.new_page()
    camera.shoot(page, "mobile-front", "/")
    camera.shoot(page, "mobile-article-anonymous", f"/articles/{ARTICLE}")
    phone.close()


def reader_pages(browser, base_url: str, camera: Camera) -> None:
    """A visitor signs up at the gate, unlocks three articles and runs out."""
    context = browser.new_context(base_url=base_url, viewport=DESKTOP)
    page = context.new_page()
    page.goto(f"/articles/{ARTICLE}")
    page.locator("aside.gate").get_by_label("Email address").fill("amira.haddad@example.org")
    page.get_by_role("button", name="Keep reading", exact=True).click()
    page.wait_for_url(f"**/articles/{ARTICLE}")
    camera.shoot(page, "article-registered")
    page.get_by_role("button", name=UNLOCK_LABEL.format(left=3)).click()
    page.wait_for_url(f"**/articles/{ARTICLE}")
    camera.shoot(page, "article-unlocked")

    others = [slug for slug in metered_demo_slugs() if slug != ARTICLE]
    for left, slug in zip((2, 1), others):
        page.goto(f"/articles/{slug}")
        page.get_by_role("button", name=UNLOCK_LABEL.format(left=left)).click()
        page.wait_for_url(f"**/articles/{slug}")
    camera.shoot(page, "article-meter-exhausted", f"/articles/{others[2]}")
    camera.shoot(page, "account", "/account")
    context.close()


def subscriber_pages(browser, site, camera: Camera) -> None:
    """A visitor subscribes with a test card, searches the archive and manages newsletters."""
    context = browser.new_context(base_url=site.url, viewport=DESKTOP)
    page = context.new_page()
    camera.shoot(page, "checkout", "/subscribe/monthly")
    page.get_by_label("Email address").fill("lena.fischer@example.org")
    page.get_by_label("Name on card").fill("Lena Fischer")
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.get_by_label("Expiry (MM/YY)").fill("12/30")
    page.get_by_label("Security code (CVC)").fill("123")
    page.get_by_role("button", name="Pay and subscribe").click()
    page.wait_for_url("**/account")
    camera.shoot(page, "account-subscriber")
    camera.shoot(page, "search", "/search?q=sanctions")
    camera.shoot(page, "newsletters", "/account/newsletters")
    context.close()
    site.gate("readers", "add", "editor@meridian.example", "--password", "editor-pass-1", "--admin")
    admin = browser.new_context(base_url=site.url, viewport=DESKTOP)
    page = admin.new_page()
    page.goto("/login")
    page.locator("#email").fill("editor@meridian.example")
    page.locator("#password").fill("editor-pass-1")
    page.get_by_role("button", name="Log in", exact=True).click()
    camera.shoot(page, "inbox", "/dev/mail/")
    page.goto("/dev/mail/")
    page.locator(".mailtable a", has_text="Please confirm").first.click()
    camera.shoot(page, "inbox-message")
    admin.close()


def demo_pages(browser, site, camera: Camera) -> None:
    """Demo mode: the persona bar, the explain drawer, the tour and the console."""
    site.gate("readers", "add", "teacher@meridian.example", "--password", "teacher-pass-1", "--admin")
    context = browser.new_context(base_url=site.url, viewport=DESKTOP)
    page = context.new_page()
    page.goto(f"/articles/{ARTICLE}")
    page.get_by_role("button", name="1 unlock left").click()
    page.wait_for_url(f"**/articles/{ARTICLE}")
    page.locator("details.explain summary").click()
    camera.shoot(page, "demo-explain")
    camera.shoot(page, "learn", "/learn/")
    for persona in ("Anonymous", "New reader", "Subscriber", "Past due", "Lapsed"):
        page.get_by_role("button", name=persona, exact=True).click()
        page.goto(f"/articles/{ARTICLE}")
    page.goto("/login")
    page.locator("#email").fill("teacher@meridian.example")
    page.locator("#password").fill("teacher-pass-1")
    page.get_by_role("button", name="Log in", exact=True).click()
    camera.shoot(page, "console-dashboard", "/admin/")
    camera.shoot(page, "console-rules", "/admin/rules?a=wpr&b=metered")
    page.goto("/admin/rules/new?from=metered")  # the rule studio's editor, with its differences in words
    page.get_by_label("Teaser length (paragraphs)").fill("3")
    page.get_by_role("group", name="Registered readers", exact=True).get_by_label("Number of articles").fill("5")
    page.get_by_role("button", name="Show differences").click()
    camera.shoot(page, "console-rule-editor")
    camera.shoot(page, "console-readers", "/admin/readers?q=persona.past-due")
    page.locator("table a", has_text="persona.past-due").first.click()
    camera.shoot(page, "console-reader")
    context.close()


def main(argv: list[str] | None = None) -> int:
    """Start the site, take every screenshot into OUTDIR, stop the site."""
    parser = argparse.ArgumentParser(prog="python -m tests.screenshots", description=__doc__.split("\n")[0])
    parser.add_argument("outdir", type=Path, help="folder for the PNG files (created if missing)")
    args = parser.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    camera = Camera(args.outdir)
    with tempfile.TemporaryDirectory(prefix="gate-shots-") as scratch, LiveSite(Path(scratch)) as site:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                anonymous_pages(browser, site.url, camera)
                reader_pages(browser, site.url, camera)
                subscriber_pages(browser, site, camera)
            finally:
                browser.close()
    with tempfile.TemporaryDirectory(prefix="gate-demo-shots-") as scratch:
        demo_site = LiveSite(Path(scratch))
        demo_site.env["GATE_DEMO"] = "1"
        with demo_site as site, sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                demo_pages(browser, site, camera)
            finally:
                browser.close()
    total = sum(path.stat().st_size for path in camera.saved)
    print(f"{len(camera.saved)} screenshots, {total / 1024 / 1024:.1f} MB in {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

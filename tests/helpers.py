"""What several test files share: the site's fixed facts, a person driving the site, the real
server and browser, and small readers of the database and the demo articles.

Test files import from here and from nothing else under tests/ (a test checks it);
shared fixtures live in conftest.py.
"""

from __future__ import annotations

import http.cookiejar
import itertools
import json
import multiprocessing
import os
import re
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect
from pydantic import Field

from gate.loadtest.server import Nodes, ServerProcess, database_env, gate_command, site_env
from gate.rules.model import Strict
from gate.rules.paywall import Rules
from gate.rules.timeutil import to_iso
from gate.services import content, seed
from gate.services.content import parse_article_file, split_teaser
from gate.services.seed import ARTICLES_DIR
from gate.storage import events
from gate.storage.clock import Clock
from gate.storage.db import open_database, open_site_db

NY = ZoneInfo("America/New_York")
#: Every test starts at this site time, after all demo articles are published.
START = datetime(2026, 11, 28, 12, 0, tzinfo=NY)

METERED = "prisoner-swaps-rewarding-hostage-takers"
FREE = "southwest-atlantic-squid-rush-treaty"
PREMIUM = "digital-currencies-contest-wholesale-plumbing"
_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
CHROMIUM = os.environ.get("GATE_CHROMIUM", "/usr/bin/chromium")
#: The site's public origin (GATE_BASE_URL): links in its emails point here, on another port.
MAIL_ORIGIN = "http://127.0.0.1:5000"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
READER_EMAIL, READER_PASSWORD = "lena.ortiz@example.org", "correct-horse-battery"
UNLOCK_LABEL = "Unlock this article — {left} of 3 free articles left this month"
ADMIN = ("boss@example.com", "boss-pass-123")


# --- a person on the site, through the test client ---------------------------------


class Reader:
    """Drives the site as one person in one browser, CSRF tokens and all."""

    def __init__(self, client) -> None:
        self.client = client

    def token(self) -> str:
        """The CSRF token of the current session, read from a page's meta tag."""
        page = self.client.get("/signup").get_data(as_text=True)
        return _CSRF.search(page).group(1)

    def post(self, url: str, data: dict | None = None, **kwargs):
        """POST a form with the session's CSRF token."""
        return self.client.post(url, data={"csrf_token": self.token(), **(data or {})}, **kwargs)

    def post_json(self, url: str, **kwargs):
        """POST to the API with the X-CSRFToken header."""
        return self.client.post(url, headers={"X-CSRFToken": self.token()}, **kwargs)

    def signup(self, email: str, password: str = "", next: str = "/"):
        return self.post("/signup", {"email": email, "password": password, "next": next})

    def login(self, email: str, password: str, next: str = "/"):
        return self.post("/login", {"email": email, "password": password, "next": next})

    def logout(self):
        return self.post("/logout")

    def unlock(self, slug: str):
        return self.post(f"/articles/{slug}/unlock")

    def article(self, slug: str) -> dict:
        return self.client.get(f"/api/articles/{slug}").get_json()

    def meter(self) -> dict:
        return self.client.get("/api/meter").get_json()


def metered_slugs(db, count: int) -> list[str]:
    """Slugs of ``count`` published metered articles."""
    rows = db.execute(
        "select slug from articles where access_class = 'metered' order by slug limit ?", [count]
    ).fetchall()
    assert len(rows) == count
    return [row[0] for row in rows]


KEY = re.compile(r'name="idempotency_key" type="hidden" value="([^"]+)"')
CARD = {"name": "Ada Reader", "card_number": "4242 4242 4242 4242", "expiry": "12/30", "cvc": "123"}


def open_checkout(reader, plan="monthly") -> str:
    page = reader.client.get(f"/subscribe/{plan}").get_data(as_text=True)
    return KEY.search(page).group(1)


def pay(reader, plan="monthly", key=None, **fields):
    key = key or open_checkout(reader, plan)
    return reader.post(f"/subscribe/{plan}", {**CARD, "idempotency_key": key, **fields})


def statuses(db):
    return [row[0] for row in db.execute("select status from subscriptions order by id")]


CONFIRM = re.compile(r"http://meridian\.test(/newsletter/confirm/[A-Za-z0-9._-]+)")
WEEKLY = "meridian-weekly"


def last_mail(db, to, kind=None):
    where = " and kind = ?" if kind else ""
    row = next(db.query(f"select * from outbox where to_addr = ?{where} order by id desc limit 1",
                        [to] + ([kind] if kind else [])), None)
    return {**row, "headers": json.loads(row["headers"])} if row else None


def signup_with_list(reader, email, tick=True, next="/"):
    data = {"email": email, "next": next}
    if tick:
        data["list_meridian_weekly"] = "y"
    return reader.post("/signup", data, environ_base={"REMOTE_ADDR": "203.0.113.9"})


def confirm_path(db, email):
    return CONFIRM.search(last_mail(db, email, "newsletter_confirmation")["body_text"]).group(1)


def publish(db, slug, when):
    """Publish a copy of the metered article at ``when`` (site time)."""
    row = db.first("select * from articles where slug = ?", [METERED])
    row.pop("search", None)  # PostgreSQL's generated search column
    del row["id"]
    row.update(slug=slug, title=f"Fresh analysis {slug}", published_at=to_iso(when))
    db.insert("articles", row)


def magic_link(reader, client, email: str) -> str:
    """Ask for a sign-in link for ``email`` and return the path it mails."""
    reader.post("/login/magic", {"email": email})
    from gate.storage.db import open_database

    db = open_database(client.application.config["DATABASE"])
    text = db.scalar("select body_text from outbox order by id desc limit 1")
    db.close()
    return LINK.search(text).group(1)


def gated_sentences(slug: str, paragraphs: int = 3) -> list[str]:
    """Sentences from the part of an article a teaser must never contain."""
    row = parse_article_file(seed.ARTICLES_DIR / f"{slug}.md")
    teaser, _ = split_teaser(row["body_md"], paragraphs)
    rest = row["body_md"][len(teaser):]
    plain = re.sub(r"[#>*_`-]", " ", rest)
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", plain) if len(s.split()) >= 6]
    # quotes and apostrophes are typographically rewritten when rendered: use words only
    return [re.sub(r"[\"'’“”]", "", s).split(",")[0][:60] for s in sentences]


def leaks(html: str, slug: str) -> list[str]:
    """Gated fragments present in a response."""
    text = re.sub(r"[\"'’“”]|&#\d+;|&\w+;", "", html)
    return [s for s in gated_sentences(slug) if s and s in text]


GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
BINGBOT = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
#: Requests that pretend to be a crawler, a search or social arrival, or a trusted proxy: none may open gated text.
BYPASS_TECHNIQUES = {
    "plain": {},
    "googlebot": {"User-Agent": GOOGLEBOT},
    "googlebot+xff": {"User-Agent": GOOGLEBOT, "X-Forwarded-For": "66.249.66.1"},
    "bingbot": {"User-Agent": BINGBOT},
    "bingbot+xff": {"User-Agent": BINGBOT, "X-Forwarded-For": "157.55.39.1"},
    "google-referer": {"Referer": "https://www.google.com/"},
    "facebook-referer": {"Referer": "https://www.facebook.com/"},
    "tco-referer": {"Referer": "https://t.co/abc123"},
    "forged-xff": {"X-Forwarded-For": "127.0.0.1, 10.0.0.1", "X-Real-IP": "127.0.0.1"},
}
#: Every page, feed and JSON answer an article's text could travel through.
LEAK_CHANNELS = ["/articles/{slug}", "/articles/{slug}?print=1", "/articles/{slug}?amp=1", "/articles/{slug}.json",
                 "/api/articles/{slug}", "/api/articles/{slug}?explain=1", "/feed.xml", "/sitemap.xml",
                 "/api/articles", "/articles/{slug}/nope", "/sections/Diplomacy", "/"]
#: Searches for words of the demo article's gated text.
GATED_WORDS = ("the same detaining state", "negotiation between capitals")


def leaks_from_a_gated_viewer(person, slug: str, headers: dict) -> list[str]:
    """What a gated viewer got that they should not: channels with gated text of ``slug``, or a meter that moved."""
    before = person.meter()
    found = leaked_channels(person.client, slug, headers)
    after = person.meter()
    if (after["tier"], after["used"]) != (before["tier"], before["used"]):
        found.append(f"the meter moved: {before['used']} used, then {after['used']}")
    return found


def leaked_channels(client, slug: str, headers: dict | None = None) -> list[str]:
    """The channels (and searches) that answered with a 5xx or with gated text of ``slug``: none, for a gated viewer."""
    found = []
    for channel in LEAK_CHANNELS:
        response = client.get(channel.format(slug=slug), headers=headers or {})
        if response.status_code >= 500 or leaks(response.get_data(as_text=True), slug):
            found.append(channel)
    for words in GATED_WORDS:
        page = client.get("/search", query_string={"q": words}, headers=headers or {})
        if leaks(page.get_data(as_text=True), slug):
            found.append(f"/search?q={words}")
    return found


LINK = re.compile(r"http://meridian\.test(/login/magic/[A-Za-z0-9._-]+)")
def mailed_link(db, to: str) -> str:
    """The path of the newest sign-in link mailed to ``to``."""
    text = db.execute("select body_text from outbox where to_addr = ? order by id desc limit 1", [to]).fetchone()
    return LINK.search(text[0]).group(1)


# --- the real server ----------------------------------------------------------


class WireReader:
    """One browser over real HTTP: a cookie jar, CSRF tokens, and no redirects followed.

    ``base`` is the origin requests go to; give another ``base`` per request to
    reach another node of the same site with the same cookies (a cookie names
    a host, not a port, so every loopback node gets them).
    """

    def __init__(self, base: str) -> None:
        self.base = base

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect)

    def request(self, path: str, data: dict | None = None, headers: dict | None = None,
                *, base: str | None = None) -> tuple[int, str]:
        """GET (or POST ``data`` as a form); returns the status and the body."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request((base or self.base) + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def token(self, path: str = "/signup", *, base: str | None = None) -> str:
        """The session's CSRF token, read from a page's meta tag."""
        return self.csrf(self.request(path, base=base)[1])

    @staticmethod
    def csrf(page: str) -> str:
        """The CSRF token in a page's meta tag."""
        return _CSRF.search(page).group(1)



class LiveSite:
    """The real site: a fresh seeded database, a frozen clock and gunicorn on loopback.

    ``nodes`` > 1 serves it from several `gate serve` processes on their own
    ports, sharing the database (a SQLite path, or a PostgreSQL URL as
    ``database``), the secret key and the public origin: ``urls`` lists them.
    ``settings`` are more GATE_* variables for every node; ``schedule=False`` seeds
    the demo articles without the desk's schedule or the newsletters' calendar.
    """

    def __init__(self, directory: Path, secret_key: str = "browser-test-key", *,
                 database: str | Path | None = None, nodes: int = 1, rate_limits: bool = False,
                 schedule: bool = True, **settings: str) -> None:
        self.directory = Path(directory)
        self.database = database or self.directory / "gate.sqlite"
        # One loopback address signs up and logs in many times a minute here: rate limits
        # (tested on their own in test_security.py) would make the browser tests flaky.
        self.env = site_env(**database_env(self.database), GATE_SECRET_KEY=secret_key,
                            GATE_RATE_LIMITS="on" if rate_limits else "off", GATE_BASE_URL=MAIL_ORIGIN,
                            **{"GATE_PRESETS_DIR": str(self.directory / "presets"),
                               "GATE_INSTANCE": str(self.directory / "instance"), **settings})
        self.node_count = nodes
        self.nodes: Nodes | None = None  # made at start, from env as it stands then (callers add settings)
        self.seed = ("db", "seed") if schedule else ("db", "seed", "--no-schedule")
        self.server: ServerProcess | None = None
        self.url = ""
        self.urls: list[str] = []

    def gate(self, *args: str) -> str:
        """Run a `gate` CLI command against this site's database; returns its output."""
        done = subprocess.run([*gate_command(), *args], env=self.env, capture_output=True,
                              text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"gate {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def freeze_clock(self, at: datetime = START) -> None:
        """Freeze the site clock at ``at``.

        `gate clock set` refuses to move a fresh site's (real-time) clock
        backward, so once the machine's date passes ``at`` it would fail; the
        library call, with the real time pinned to ``at``, always works.
        """
        db = open_site_db(self.database)
        try:
            Clock(db, real=lambda: at).set(at, freeze=True)
        finally:
            db.close()

    def start(self) -> "LiveSite":
        """Seed, freeze the clock and serve (one gunicorn worker per node) until /api/health answers."""
        self.gate(*self.seed)
        self.freeze_clock()
        self.nodes = Nodes(self.env, self.directory, self.node_count, workers=1).start()
        self.server, self.url, self.urls = self.nodes.servers[0], self.nodes.urls[0], self.nodes.urls
        return self

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL) and close its log."""
        if self.nodes is not None:
            self.nodes.stop()
        self.server = None

    def __enter__(self) -> "LiveSite":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def launch_chromium(playwright):
    """Debian's Chromium, headless (never a downloaded browser build)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


# --- the demo articles, read from their Markdown --------------------------------


@cache
def articles() -> dict[str, dict]:
    """Every demo article file, parsed, by slug."""
    rows = (content.parse_article_file(path) for path in sorted(ARTICLES_DIR.glob("*.md")))
    return {row["slug"]: row for row in rows}


def metered_demo_slugs() -> list[str]:
    """Metered demo articles, newest first (all published before START)."""
    rows = [row for row in articles().values() if row["access_class"] == "metered"]
    rows.sort(key=lambda row: row["published_at"], reverse=True)
    return [row["slug"] for row in rows]


def _plain_sentences(paragraph: str) -> list[str]:
    """Sentences that render as they are written (no quotes, dashes or markup)."""
    sentences = re.split(r"(?<=[.!?])\s+", paragraph.strip())
    return [s for s in sentences if re.fullmatch(r"[A-Za-z0-9 ,.;:]+", s) and len(s) > 40]


def paragraphs(slug: str) -> list[str]:
    """The article's prose paragraphs, in order (no headings, lists or quotes)."""
    blocks = articles()[slug]["body_md"].split("\n\n")
    return [b.strip() for b in blocks if b.strip() and not b.lstrip().startswith(("#", "-", ">", "*"))]


def closing_sentence(slug: str) -> str:
    """A sentence from the end of the article: gated text that a teaser must not carry."""
    return _plain_sentences(paragraphs(slug)[-1])[-1]


def opening_sentence(slug: str) -> str:
    """A sentence from the first paragraph: part of every teaser."""
    return _plain_sentences(paragraphs(slug)[0])[0]


class Camera:
    """Saves full-page screenshots into one folder."""

    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        self.saved: list[Path] = []

    def shoot(self, page, name: str, path: str | None = None) -> None:
        """Optionally open ``path``, then save the whole page (or one element, given a locator) as ``name``.png."""
        if path is not None:
            page.goto(path)
        target = self.outdir / f"{name}.png"
        whole = {"full_page": True} if hasattr(page, "goto") else {}  # a Playwright Locator has no goto
        page.screenshot(path=str(target), animations="disabled", caret="hide", **whole)
        self.saved.append(target)
        print(f"{target}  {target.stat().st_size // 1024} KB")


def shoot_if_asked(target, name: str) -> None:
    """Save what ``target`` (a page or an element) shows as ``name``, when GATE_SCREENSHOTS names a folder."""
    folder = os.environ.get("GATE_SCREENSHOTS")
    if folder:
        target.screenshot(path=str(Path(folder) / name))


# --- what a browser test checks on every page, and what a person does there ----------


AXE = Path(__file__).parents[1] / ".axe/node_modules/axe-core/axe.min.js"
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DEVICES = [pytest.param(DESKTOP, id="desktop"), pytest.param(PHONE, id="phone")]
ADMIN_EMAIL, ADMIN_PASSWORD = "editor@meridian.example", "editor-pass-1"
BLOCKING = ("serious", "critical")


class Audit:
    """Console errors, uncaught exceptions and axe violations, gathered over one test."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.errors: list[str] = []
        self.violations: list[str] = []
        self.too_wide: list[str] = []

    def watch(self, context) -> None:
        """Record every console error and page error from the pages of ``context``."""
        context.on("console", self._console)
        context.on("weberror", lambda error: self.errors.append(
            f"uncaught exception on {error.page.url if error.page else '?'}: {error.error}"))

    def _console(self, message) -> None:
        if message.type != "error":
            return
        source = message.location.get("url", "")
        # Chromium asks for /favicon.ico once per browser, on whichever page comes first;
        # its 404 is checked by its own test, so one missing icon fails one test, not a random one.
        if urlsplit(source).path == "/favicon.ico":
            return
        page = message.page.url if message.page else "?"
        self.errors.append(f"console error on {page}: {message.text} (from {source or 'the page'})")

    def axe(self, page, screen: str) -> None:
        """Run axe-core on the page as it is now; keep the serious and critical violations."""
        # Evaluated through the DevTools protocol, which the page's CSP does not govern, so the
        # contexts keep enforcing the CSP (a bypass_csp context would hide every CSP violation).
        if not page.evaluate("() => typeof window.axe === 'object'"):
            page.evaluate(_axe_source())
        self.fits(page, screen)
        found = page.evaluate(_AXE_RUN)
        for item in found:
            line = (f"{screen} ({self.device}, {page.url}): {item['id']} [{item['impact']}] "
                    f"{item['help']}\n      " + "\n      ".join(item["targets"]))
            print(line)
            if item["impact"] in BLOCKING:
                self.violations.append(line)

    def fits(self, page, screen: str) -> None:
        """On a phone, record a page that is wider than the screen."""
        problem = too_wide(page)
        if problem:
            self.too_wide.append(f"{screen} ({self.device}): {problem}")

    def assert_clean(self) -> None:
        """Fail with every problem found, each with its page."""
        problems = []
        if self.errors:
            problems.append("Console errors and uncaught exceptions:\n  " + "\n  ".join(self.errors))
        if self.violations:
            problems.append("Serious or critical accessibility violations (axe-core):\n  "
                            + "\n  ".join(self.violations))
        if self.too_wide:
            problems.append("Pages wider than the phone (they scroll sideways and zoom out):\n  "
                            + "\n  ".join(self.too_wide))
        assert not problems, "\n\n".join(problems)


_AXE_RUN = """() => axe.run(document, {resultTypes: ['violations']}).then(result =>
  result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
    targets: v.nodes.map(n => n.target.join(' ') + (n.any[0] ? '  — ' + n.any[0].message : ''))})))"""


@cache
def _axe_source() -> str:
    """axe.min.js, read once."""
    return AXE.read_text()


_numbers = itertools.count(1)


def new_email(name: str) -> str:
    """An address nobody has used on these sites yet."""
    return f"{name}{next(_numbers)}.{os.getpid()}@example.org"


def log_in(page, email: str, password: str) -> None:
    """Log in with a password on /login."""
    page.goto("/login")
    form = page.get_by_role("region", name="Log in")
    form.get_by_label("Email address").fill(email)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Log in").click()
    expect(page.locator(".flashes")).to_contain_text("You are logged in.")  # with any notice beside it


_WIDEST = """() => [...document.querySelectorAll('body *')]
  .filter(el => el.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .filter(el => ![...el.children].some(child => child.getBoundingClientRect().right >
                                                  document.documentElement.clientWidth + 1))
  .slice(0, 3).map(el => `<${el.tagName.toLowerCase()}${el.className ? '.' + el.className : ''}> ` +
                         `${Math.round(el.getBoundingClientRect().right)} px: ` +
                         JSON.stringify(el.textContent.trim().slice(0, 50)))"""


def too_wide(page) -> str | None:
    """On a phone, what makes the page wider than the screen, if it is; else None.

    A mobile browser zooms out to fit a page that is too wide, which widens
    innerWidth too, so both are compared with the screen's width.
    """
    screen = page.viewport_size["width"]
    if screen >= 1000:
        return None
    # Measured before the stylesheet applies, an unstyled table is wider than the phone for a
    # moment (a slow machine showed 527 px with nothing too wide once laid out): wait for load.
    page.wait_for_load_state()
    scroll_width, inner_width = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    if max(scroll_width, inner_width) <= screen:
        return None
    return (f"{urlsplit(page.url).path} is {scroll_width} px wide on a {screen} px screen; widest: "
            + "; ".join(page.evaluate(_WIDEST)))


def follow_mail_links_to_the_site(context, site: LiveSite) -> None:
    """Serve the links inside emails (written for GATE_BASE_URL) from the site under test.

    The emails point at the configured origin, http://127.0.0.1:5000, where
    this test's server is not listening: each request there is fetched from
    the test's server instead (with the context's cookies, which name a host,
    not a port) and its answer handed to the page unchanged, redirects included.
    """
    def forward(route) -> None:
        target = site.url + route.request.url[len(MAIL_ORIGIN):]
        route.fulfill(response=route.fetch(url=target, max_redirects=0))

    context.route(f"{MAIL_ORIGIN}/**", forward)


def newsletter_status(page, name: str):
    """The status line of one list in the preference center."""
    return page.locator(".list-item").filter(
        has=page.get_by_role("heading", name=re.compile("^" + re.escape(name)))).locator(".list-item__status")


def open_demo_bar(page) -> None:
    """On a phone the demo bar folds its personas behind one control: open it (a wide screen shows them).

    Whether the summary shows is the stylesheet's call, so the page must have loaded it first: a
    page that has its HTML but not yet its CSS shows the summary on any screen, and a click begun
    then waits for ever once the wide-screen rule hides it.
    """
    page.wait_for_load_state("load")
    summary = page.locator(".personas__summary")
    if summary.is_visible() and page.locator(".personas__menu[open]").count() == 0:
        summary.click()
    expect(page.locator(".personas__list")).to_be_visible()
    more = page.locator(".personas__more-summary")  # the personas each feature adds fold behind "More"
    if more.count() and page.locator(".personas__more[open]").count() == 0:
        more.click()


def sign_in_from_the_inbox(page, email: str) -> None:
    """Open the newest sign-in link mailed to ``email`` in the local inbox and press its button."""
    page.goto("/dev/mail/")
    page.get_by_role("textbox", name="Recipient").fill(email)
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("link", name="Your sign-in link for The Meridian").first.click()
    page.locator(".mailview__pre a[href*='/login/magic/']").click()
    page.get_by_role("button", name="Sign me in").click()


def generate_traffic(page, visitors: int = 600, days: int = 14):
    """Press *Generate traffic* on the console's experiments page; returns the gate-pressure test's region."""
    page.goto("/admin/experiments")
    form = page.get_by_role("region", name="Generate traffic")
    form.get_by_label("Visitors").fill(str(visitors))
    form.get_by_label("Past days").fill(str(days))
    form.get_by_role("button", name="Generate traffic").click()
    expect(page.locator(".flash")).to_contain_text("Traffic generated", timeout=60_000)
    test = page.get_by_role("region", name=re.compile(r"gate-pressure in metered-ab"))
    expect(test).to_contain_text("Primary metric: Registered")
    expect(test.locator("svg.chart--intervals")).to_be_visible()
    return test


#: ``pytestmark = BOTH_ENGINES``: every test of the module runs on SQLite and on PostgreSQL
#: (the ``engine`` fixture in conftest.py; PostgreSQL needs GATE_TEST_DATABASE_URL).
BOTH_ENGINES = pytest.mark.parametrize("engine", ["sqlite", "postgresql"], indirect=True)

#: Connections a test's pool may hold: the seam under test plus the threads of a race.
TEST_POOL = 24


def race_processes(racer, argument_lists: list[tuple], timeout: float = 60) -> list:
    """Start one spawned process per argument list, running ``racer(*arguments, start, results)``, fire the
    start gun, and return what each put on ``results`` once all have exited cleanly (the multi-process races)."""
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=racer, args=(*arguments, start, results)) for arguments in argument_lists]
    for proc in procs:
        proc.start()
    start.set()
    found = [results.get(timeout=timeout) for _ in procs]
    for proc in procs:
        proc.join(timeout=timeout)
        assert proc.exitcode == 0
    return found


def at_once(target, count: int, action, pool: int = TEST_POOL) -> tuple[list, list]:
    """Run ``action(db)`` on ``count`` threads released together, each on its own connection: (results, errors).

    The races on both engines (billing, newsletters) use it: errors are returned, not lost in a thread.
    """
    results, errors, start = [], [], threading.Barrier(count)

    def one() -> None:
        db = open_database(target, pool)
        try:
            start.wait()
            results.append(action(db))
        except Exception as error:  # noqa: BLE001 - reported by the test
            errors.append(error)
        finally:
            db.close()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


# --- a rules model with one section more, as the dynamic meter's branch adds one ---------------
# (the rule studio's form and the differences in words are built from the model: they must take it)


class ToyBand(Strict):
    up_to: int | None = Field(default=None, ge=0, le=100)
    allowance: int = Field(ge=0, le=100)
    offer: Literal["subscribe"] | None = None


class ToyWeights(Strict):
    visits: int = Field(default=2, ge=0, le=100)


class ToyDynamic(Strict):
    tiers: list[Literal["anonymous", "registered"]] = Field(min_length=1)
    bands: list[ToyBand] = Field(min_length=1)
    weights: ToyWeights = ToyWeights()


class DynamicRules(Rules):
    """The rules with a ``[dynamic]`` section: bands of allowances for some tiers."""

    dynamic: ToyDynamic | None = None

    def dynamic_for(self, tier: str) -> ToyDynamic | None:
        """The dynamic meter, if it sets this tier's allowance."""
        return self.dynamic if self.dynamic is not None and tier in self.dynamic.tiers else None


#: When :func:`pending_view`'s events happen unless a test says otherwise.
VIEWED_AT = datetime(2026, 11, 28, 17, tzinfo=UTC)


def pending_view(visitor: str, at: datetime = VIEWED_AT) -> tuple:
    """One view by ``visitor`` as a page queues it for the background writer (``events.pending``)."""
    return events.pending(at, [("article_view", {})], visitor_id=visitor, slug="a")[0]

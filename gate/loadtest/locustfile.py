"""Locust personas for gate: the readers a metered paywall meets, and the invariants they check.

Run it through `gate loadtest` (which starts a fresh site and seeds the
subscriber accounts), or by hand against a site you run yourself:

    locust -f gate/loadtest/locustfile.py --host http://127.0.0.1:8000

Several app servers of one site (`gate loadtest --nodes 2`, or ``--gate-targets
URL1,URL2`` by hand) share the load request by request, as a proxy without
sticky sessions spreads it: a user's cookies go to every node.

Only point it at your own servers. The file needs nothing but Locust and the
standard library, so a distributed worker can run it without gate installed.

Requests are named by endpoint pattern (``/articles/[slug]``) so statistics
group per endpoint. An unlock the meter refuses (403) is the expected answer
once a reader has used their free articles, and so is a rate limit's 429 on
sign-up, login and unlock: they count as successes, reported under their own
name (``POST /signup [429]``) so they are counted apart. 5xx answers and
connection errors are failures (after one resend of a request whose kept-alive
connection the server closed under it, as browsers do; resends are counted
as ``RETRY`` rows), and so is any broken invariant (``invariant:``
in the failure message): more unlocks granted than the limit, a subscriber
shown a teaser, gated text served after the cookies are gone.

Each simulated user sends its own client address in ``X-Forwarded-For``
(from 198.18.0.0/15, the range set aside for benchmarks). A site that trusts
one proxy (``GATE_PROXY_COUNT=1``, as `gate loadtest` starts it) then sees
two hundred users as two hundred clients, and its per-address rate limits
apply per user, as they would in production; a site that trusts no proxy
ignores the header and sees a single client.
"""

from __future__ import annotations

import itertools
import random
import re
import uuid

import gevent
from gevent.lock import Semaphore
from gevent.pool import Pool
from locust import HttpUser, between, events, task
from locust.clients import HttpSession
from locust.exception import CatchResponseError
from urllib3.util.retry import Retry

_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
_ACCESS = re.compile(r'<article class="story" data-access="(\w+)"')
_CHECKOUT_KEY = re.compile(r'name="idempotency_key" type="hidden" value="([^"]+)"')
#: The account page's device list: one row per signed-in device, and the limit it states (if any).
_DEVICE_ROW = re.compile(r'<tr class="device[ "]')
_DEVICE_LIMIT = re.compile(r"can be signed in on (\d+) device")
#: How many clients a device hopper signs its one account in from, one after another.
HOPS = 6
#: The capped promo code the flash-sale buyers race (FLASH10 in config/site.toml: cap 10).
FLASH_CODE = "FLASH10"
#: How many unlock requests a tab racer sends at once.
RACE_TABS = 10
#: Subscriber accounts seeded by gate.loadtest.run; override with the --gate-* options.
SUBSCRIBER_EMAIL = "loadtest-subscriber-{n:03d}@loadtest.example"
SUBSCRIBER_PASSWORD = "loadtest-pass-{n:03d}"
#: Like a browser, resend once when a kept-alive connection was closed under the request
#: (the server drops idle connections after its keep-alive timeout); a second drop fails.
BROWSER_RETRY = Retry(total=1, connect=1, read=1, redirect=0, status=0, other=0,
                      allowed_methods=None, raise_on_status=False)
#: The licence `gate loadtest` seeds for the seat rush: few seats, its range the users' addresses (RFC 2544).
SEAT_RUSH_ORG = "seat-rush"
_SEATS = re.compile(r'class="org__seats">(\d+) of (\d+) taken')
SEARCHES = ("treaty", "border tariff", "grid", "inflation", "satellite", "drought")


@events.init_command_line_parser.add_listener
def _options(parser):
    """gate's options: how the seeded subscriber accounts are named (sent on to workers)."""
    parser.add_argument("--gate-subscribers", type=int, default=20,
                        help="How many seeded subscriber accounts there are (0: none)")
    parser.add_argument("--gate-subscriber-email", default=SUBSCRIBER_EMAIL,
                        help="Email of subscriber n, a str.format template")
    parser.add_argument("--gate-subscriber-password", default=SUBSCRIBER_PASSWORD,
                        help="Password of subscriber n, a str.format template")
    parser.add_argument("--gate-flash-code", default=FLASH_CODE,
                        help="The capped promo code the flash-sale buyers race")
    parser.add_argument("--gate-targets", default="",
                        help="Comma-separated origins of the site's nodes: requests rotate over them")


class NodesSession(HttpSession):
    """An HttpSession whose relative paths go to each of the site's nodes in turn."""

    def __init__(self, targets: list[str], *args, **kwargs) -> None:
        super().__init__(targets[0], *args, **kwargs)
        self.targets = itertools.cycle(target.rstrip("/") for target in targets)

    def _build_url(self, path) -> str:
        self.base_url = next(self.targets)
        return super()._build_url(path)


def node_targets(environment) -> list[str]:
    """The nodes named by --gate-targets (none: the one --host)."""
    options = environment.parsed_options
    text = getattr(options, "gate_targets", "") if options else ""
    return [target.strip() for target in text.split(",") if target.strip()]


class _Catalogue:
    """The site's published articles by access class, fetched once per process."""

    def __init__(self) -> None:
        self.by_class: dict[str, list[str]] = {}
        self._lock = Semaphore()

    def load(self, client) -> dict[str, list[str]]:
        """Read /api/articles the first time any user asks; later calls are free."""
        with self._lock:
            if not self.by_class:
                with client.get("/api/articles?limit=500", name="/api/articles",
                                catch_response=True) as response:
                    if settle(response) == "ok":
                        for item in response.json()["articles"]:
                            self.by_class.setdefault(item["access_class"], []).append(item["slug"])
        return self.by_class


CATALOGUE = _Catalogue()


def client_address() -> str:
    """A made-up client address from the benchmarking range 198.18.0.0/15 (RFC 2544)."""
    return f"198.{random.choice((18, 19))}.{random.randrange(256)}.{random.randrange(1, 255)}"


def root_cause(error) -> str:
    """The innermost exception's class (RemoteDisconnected, ConnectionRefusedError, …)."""
    seen = 0
    while seen < 5 and error is not None and error.args and isinstance(error.args[-1], BaseException):
        error, seen = error.args[-1], seen + 1
    return type(error).__name__


def settle(response, ok=(200,), refused=()) -> str:
    """Classify an answer: ``ok``, ``refused`` (expected, counted apart) or ``failed``."""
    code = response.status_code
    retries = getattr(getattr(response, "raw", None), "retries", None)
    if retries is not None and retries.history:  # counted apart, as RETRY rows
        events.request.fire(request_type="RETRY", name=response.request_meta["name"], response_time=None,
                            response_length=0, exception=None, context={})
    if code in ok:
        response.success()
        return "ok"
    if code in refused:
        response.request_meta["name"] += f" [{code}]"
        response.success()
        return "refused"
    if code == 0:
        response.failure(f"connection error: {root_cause(response.error)}")
    elif code >= 500:
        response.failure(f"server error {code}")
    else:
        response.failure(f"unexpected status {code}")
    return "failed"


def broken_invariant(name: str, message: str) -> None:
    """Report a broken invariant that no single response shows (a race's total).

    Reported as a CHECK row; its response time is None, so it stays out of the percentiles.
    """
    events.request.fire(request_type="CHECK", name=name, response_time=None, response_length=0,
                        exception=CatchResponseError(f"invariant: {message}"), context={})


class Persona(HttpUser):
    """What every persona can do: read, sign up, log in and unlock, as a browser does."""

    abstract = True
    token = ""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        targets = node_targets(self.environment)
        if len(targets) > 1:
            self.client = NodesSession(targets, request_event=self.environment.events.request, user=self,
                                       pool_manager=self.pool_manager)
            self.client.trust_env = False
        self.client.headers["X-Forwarded-For"] = client_address()
        for adapter in self.client.adapters.values():
            adapter.max_retries = BROWSER_RETRY

    def articles(self, access_class: str = "metered") -> list[str]:
        """Slugs of one access class (every slug if the site has none of that class)."""
        catalogue = CATALOGUE.load(self.client)
        return catalogue.get(access_class) or [s for slugs in catalogue.values() for s in slugs]

    def pick(self, access_class: str = "metered") -> str:
        """A random published slug of an access class."""
        return random.choice(self.articles(access_class) or ["missing-article"])

    def page(self, path: str, name: str, ok=(200,)):
        """GET an HTML page and keep the session's CSRF token from its meta tag."""
        with self.client.get(path, name=name, catch_response=True, allow_redirects=False) as response:
            if settle(response, ok) == "ok" and "html" in response.headers.get("Content-Type", ""):
                found = _CSRF.search(response.text)
                self.token = found.group(1) if found else self.token
            return response

    def read(self, slug: str):
        """Open an article page; returns the access it shows (full, teaser or None)."""
        response = self.page(f"/articles/{slug}", "/articles/[slug]")
        found = _ACCESS.search(response.text or "") if response.status_code == 200 else None
        return found.group(1) if found else None

    def fetch_article(self, slug: str) -> dict:
        """The JSON view of one article for this viewer."""
        with self.client.get(f"/api/articles/{slug}", name="/api/articles/[slug]",
                             catch_response=True) as response:
            return response.json() if settle(response) == "ok" else {}

    def signup(self, password: bool = False) -> bool:
        """Sign up with a unique email (optionally a password), as the gate's form does."""
        self.page("/signup", "/signup")
        email = f"lt-{uuid.uuid4().hex[:16]}@loadtest.example"
        form = {"csrf_token": self.token, "email": email, "next": "/",
                "list_meridian_weekly": "y", "password": uuid.uuid4().hex if password else ""}
        self.email, self.password = email, form["password"]  # a device hopper signs in with them again
        with self.client.post("/signup", data=form, name="/signup", catch_response=True,
                              allow_redirects=False) as response:
            done = settle(response, ok=(303,), refused=(429,)) == "ok"
        self.token = ""  # signing in starts a fresh session: the old token is void
        return done

    def login(self, email: str, password: str) -> bool:
        """Log in with a password through the login form."""
        self.page("/login", "/login")
        form = {"csrf_token": self.token, "email": email, "password": password, "next": "/"}
        with self.client.post("/login", data=form, name="/login", catch_response=True,
                              allow_redirects=False) as response:
            done = settle(response, ok=(303,), refused=(429,)) == "ok"
        self.token = ""
        return done

    def ensure_token(self) -> str:
        """A CSRF token for this session (reads the front page if there is none yet)."""
        if not self.token:
            self.page("/", "/")
        return self.token

    def unlock(self, slug: str) -> dict | None:
        """Spend one free article on ``slug``: the new meter, or None when refused or failed."""
        with self.client.post(f"/api/articles/{slug}/unlock", name="/api/articles/[slug]/unlock",
                              headers={"X-CSRFToken": self.ensure_token()},
                              catch_response=True) as response:
            return response.json() if settle(response, refused=(403, 429)) == "ok" else None

    def fresh_session(self) -> None:
        """Forget every cookie: a new visitor, as after clearing the browser."""
        self.client.cookies.clear()
        self.token = ""


class AnonymousSkimmer(Persona):
    """Skims the front page, opens articles, reads teasers and the JSON listing."""

    weight = 10
    wait_time = between(1, 4)

    @task(3)
    def front_page(self):
        self.page("/", "/")

    @task(5)
    def article(self):
        self.read(self.pick(random.choice(("metered", "metered", "free", "premium"))))

    @task(2)
    def api_listing(self):
        with self.client.get("/api/articles", name="/api/articles", catch_response=True) as response:
            settle(response)

    @task(1)
    def api_article(self):
        data = self.fetch_article(self.pick())
        if data and data.get("access") == "teaser" and "body_html" in data:
            broken_invariant("/api/articles/[slug] body leak", "body_html sent with a teaser")


class RegisteredReader(Persona):
    """Signs up, then unlocks three articles of their choice and re-reads them."""

    weight = 4
    wait_time = between(1, 3)

    def on_start(self):
        self.unlocked: list[str] = []
        self.page("/", "/")
        self.signup()

    @task(4)
    def choose_and_unlock(self):
        slug = self.pick()
        if self.read(slug) == "teaser" and self.unlock(slug) is not None:
            self.unlocked.append(slug)

    @task(3)
    def reread(self):
        if self.unlocked:
            if self.read(random.choice(self.unlocked)) == "teaser":
                broken_invariant("reread unlocked", "an unlocked article showed a teaser")

    @task(1)
    def meter(self):
        with self.client.get("/api/meter", name="/api/meter", catch_response=True) as response:
            meter = response.json() if settle(response) == "ok" else {}
        # A dynamic meter's allowance may fall below what was spent under an earlier band (the audit checks each
        # spend against its own allowance); a fixed limit never may.
        fixed = meter.get("allowance") is None
        if fixed and meter.get("limit") is not None and meter.get("used", 0) > meter["limit"]:
            broken_invariant("/api/meter over limit", f"used {meter['used']} of {meter['limit']}")


class BingeSubscriber(Persona):
    """Logs in with a seeded subscriber account and reads everything, premium included."""

    weight = 2
    wait_time = between(0.5, 2)

    def on_start(self):
        options = self.environment.parsed_options
        count = getattr(options, "gate_subscribers", 20) if options else 20
        self.subscribed = False
        if count > 0:
            n = random.randrange(count)
            email = getattr(options, "gate_subscriber_email", SUBSCRIBER_EMAIL).format(n=n)
            password = getattr(options, "gate_subscriber_password", SUBSCRIBER_PASSWORD).format(n=n)
            self.subscribed = self.login(email, password)

    @task(5)
    def binge(self):
        access = self.read(self.pick(random.choice(("metered", "premium", "free"))))
        if self.subscribed and access == "teaser":
            broken_invariant("subscriber access", "a subscriber was shown a teaser")

    @task(2)
    def api_article(self):
        data = self.fetch_article(self.pick("premium"))
        if self.subscribed and data and data.get("access") != "full":
            broken_invariant("subscriber access", f"API gave a subscriber {data.get('reason')}")

    @task(1)
    def search(self):
        self.page(f"/search?q={random.choice(SEARCHES)}", "/search?q=[query]")


class TabRacer(Persona):
    """Signs up, then unlocks many articles at once from many tabs: the meter must hold."""

    weight = 1
    wait_time = between(2, 5)

    @task
    def race(self):
        self.fresh_session()
        if not self.signup():
            return
        self.ensure_token()
        with self.client.get("/api/meter", name="/api/meter", catch_response=True) as response:
            limit = response.json().get("limit") if settle(response) == "ok" else None
        slugs = random.sample(self.articles(), min(RACE_TABS, len(self.articles())))
        pool = Pool(len(slugs) or 1)
        answers = pool.map(self.unlock, slugs)
        granted = sum(1 for answer in answers if answer and answer.get("spent"))
        if limit is not None and granted > limit:
            broken_invariant("tab race over-grant", f"{granted} unlocks granted with a limit of {limit}")


class CookieClearer(Persona):
    """Signs up, unlocks one, clears cookies and re-reads: the new visitor gets the teaser."""

    weight = 2
    wait_time = between(1, 3)

    @task
    def clear_and_reread(self):
        self.fresh_session()
        slug = self.pick()
        self.read(slug)
        if self.signup() and self.unlock(slug) is not None:
            self.read(slug)
        self.fresh_session()
        if self.read(slug) == "full":
            broken_invariant("cookie clear", "a new visitor was shown a metered article in full")
        data = self.fetch_article(slug)
        if data.get("access") == "teaser" and "body_html" in data:
            broken_invariant("cookie clear", "body_html sent to a new visitor")


class _ViralLink:
    """One gift link per process, made once by a seeded subscriber and opened by every viral reader."""

    def __init__(self) -> None:
        self.path, self.devices, self.full = "", 0, 0
        self._lock = Semaphore()

    def make(self, user: "Persona") -> str:
        """The link's path: made by ``user`` signed in as subscriber 0 the first time (then signed out)."""
        with self._lock:
            options = user.environment.parsed_options
            if not self.path and (getattr(options, "gate_subscribers", 20) if options else 20) > 0:
                email = getattr(options, "gate_subscriber_email", SUBSCRIBER_EMAIL).format(n=0)
                password = getattr(options, "gate_subscriber_password", SUBSCRIBER_PASSWORD).format(n=0)
                if user.login(email, password):
                    self.path, self.devices = self._gift(user)
                user.fresh_session()
        return self.path

    @staticmethod
    def _gift(user: "Persona") -> tuple[str, int]:
        """Gift a metered article through the API: the link's path and its device cap."""
        with user.client.post(f"/api/articles/{user.pick()}/gift", name="/api/articles/[slug]/gift",
                              headers={"X-CSRFToken": user.ensure_token()}, catch_response=True) as response:
            if settle(response, ok=(201,), refused=(403,)) != "ok" or response.status_code != 201:
                return "", 0
            answer = response.json()
        return "/" + answer["url"].split("/", 3)[3], answer["devices"]


VIRAL = _ViralLink()


class ViralGiftReader(Persona):
    """A gift link gone viral: many new visitors open one link at once; at most its cap read in full."""

    weight = 1
    wait_time = between(0.5, 2)

    @task
    def open_the_link(self):
        path = VIRAL.make(self)
        if not path:
            return
        self.fresh_session()  # a new device every time
        landing = self.page(path, "/gift/[token]", ok=(200, 303))  # 303: exhausted, back to the gate
        target = landing.headers.get("Location", "")
        if landing.status_code == 200:
            with self.client.post(path, data={"csrf_token": self.token}, name="/gift/[token] POST",
                                  catch_response=True, allow_redirects=False) as response:
                settle(response, ok=(303,))
                target = response.headers.get("Location", "")
        slug = target.rsplit("/articles/", 1)[-1] if "/articles/" in target else ""
        if slug and self.read(slug) == "full":
            VIRAL.full += 1
            if VIRAL.full > VIRAL.devices:
                broken_invariant("gift device cap", f"{VIRAL.full} devices read a gift capped at {VIRAL.devices}")


class SignupBurst(Persona):
    """A burst of sign-ups back to back (a newsletter push, a bot wave), then a pause."""

    weight = 1
    wait_time = between(4, 8)

    @task
    def burst(self):
        for number in range(5):
            self.fresh_session()
            self.signup(password=number == 0)  # one in five sets a password (slow hash)
            gevent.sleep(random.uniform(0, 0.2))


class _FlashSale:
    """The flash-sale code's cap (read once from the API) and the checkouts that got it, per process."""

    def __init__(self) -> None:
        self.cap: int | None = None
        self.won = 0
        self._lock = Semaphore()

    def load(self, client, code: str) -> int | None:
        """The code's cap, from GET /api/offers/<code> the first time any buyer asks."""
        with self._lock:
            if self.cap is None:
                with client.get(f"/api/offers/{code}?plan=monthly", name="/api/offers/[code]",
                                catch_response=True) as response:
                    if settle(response, refused=(404,)) == "ok":  # 404: no such code on this site
                        self.cap = (response.json().get("offer") or {}).get("cap")
        return self.cap


FLASH_SALE = _FlashSale()


class FlashSaleBuyer(Persona):
    """Signs up and races to pay with a capped promo code through the real checkout form.

    A cap of N must give exactly N discounted subscriptions: a buyer who loses the race
    gets the refusal (409) and no charge; more wins than the cap (in this process) is a
    broken invariant, and the audit's ``redemptions_over_cap`` checks the whole site.
    """

    weight = 1
    wait_time = between(1, 3)

    @task
    def buy(self):
        options = self.environment.parsed_options
        code = getattr(options, "gate_flash_code", FLASH_CODE) if options else FLASH_CODE
        cap = FLASH_SALE.load(self.client, code)
        self.fresh_session()
        if not self.signup():
            return
        response = self.page(f"/subscribe/monthly?code={code}", "/subscribe/[plan]?code=[code]")
        key = _CHECKOUT_KEY.search(response.text or "") if response.status_code == 200 else None
        if key is None or f'name="code" type="hidden" value="{code}"' not in response.text:
            return  # the page refused the code (exhausted already): nothing to race for
        if self.pay(code, key.group(1)) and cap is not None:
            FLASH_SALE.won += 1
            if FLASH_SALE.won > cap:
                broken_invariant("flash sale over cap", f"{FLASH_SALE.won} checkouts got {code}, capped at {cap}")

    def pay(self, code: str, key: str) -> bool:
        """Submit the checkout with the 4242 card and the code: True when it subscribed (303)."""
        form = {"csrf_token": self.token, "idempotency_key": key, "code": code, "name": "Flash Buyer",
                "card_number": "4242 4242 4242 4242", "expiry": "12/34", "cvc": "123"}
        with self.client.post("/subscribe/monthly", data=form, name="/subscribe/[plan] with code",
                              catch_response=True, allow_redirects=False) as response:
            return settle(response, ok=(303,), refused=(409, 429)) == "ok"


class SeatRusher(Persona):
    """Signs up and joins a small group licence from its IP range with everyone else; often leaves again.

    The seats must hold: the org page never shows more seats taken than it has (the audit's
    ``seats_over`` checks every moment afterwards).
    """

    weight = 1
    wait_time = between(1, 3)

    def seats(self) -> tuple[int, int] | None:
        """The licence's seats taken and total, from its page (None: no such licence on this site)."""
        response = self.page(f"/orgs/{SEAT_RUSH_ORG}", "/orgs/[slug]", ok=(200, 404))
        found = _SEATS.search(response.text or "") if response.status_code == 200 else None
        return (int(found.group(1)), int(found.group(2))) if found else None

    @task
    def rush(self):
        self.fresh_session()
        if not self.signup() or self.seats() is None:
            return
        form = {"csrf_token": self.ensure_token()}
        with self.client.post(f"/orgs/{SEAT_RUSH_ORG}/ip", data=form, name="/orgs/[slug]/ip", catch_response=True,
                              allow_redirects=False) as response:
            settle(response, ok=(303,))
        taken = self.seats()
        if taken and taken[0] > taken[1]:
            broken_invariant("seat rush", f"{taken[0]} seats taken of {taken[1]}")
        self.read(self.pick("premium"))
        if random.random() < 0.5:  # leave, freeing the seat for the next rusher
            with self.client.post(f"/orgs/{SEAT_RUSH_ORG}/leave", data={"csrf_token": self.token},
                                  name="/orgs/[slug]/leave", catch_response=True, allow_redirects=False) as response:
                settle(response, ok=(303,))


class DeviceHopper(Persona):
    """One account signed in from many clients, one after another (a shared password, a hopping reader).

    Each hop is a new cookie jar from a new address. The account page must never
    list more devices than the limit it states; the audit's ``devices_over``
    checks every sign-in of the whole site.
    """

    weight = 1
    wait_time = between(2, 5)

    def on_start(self):
        self.fresh_session()
        self.has_account = self.signup(password=True)

    @task
    def hop(self):
        if not self.has_account:
            return
        for _ in range(HOPS):
            self.fresh_session()
            self.client.headers["X-Forwarded-For"] = client_address()  # another client
            if not self.login(self.email, self.password):
                continue
            response = self.page("/account", "/account")
            shown = len(_DEVICE_ROW.findall(response.text or "")) if response.status_code == 200 else 0
            limit = _DEVICE_LIMIT.search(response.text or "")
            if limit and shown > int(limit.group(1)):
                broken_invariant("devices over limit", f"{shown} devices signed in with a limit of {limit.group(1)}")

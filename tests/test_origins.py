"""Origins come from configuration, never from the request.

A sign-in link built from the request's Host header let anyone make the site
mail a victim a valid link to another origin (an account takeover). Here every
absolute URL the site emits must start with the configured origin, and a
request for any other Host is refused with 400.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate import cli, create_app
from gate.cli import serving
from tests.helpers import FREE, METERED, START, publish

ORIGIN = "https://news.example.com"
HOST = "news.example.com"
URL = re.compile(r"""\b(?:https?:)?//[^\s"'<>)\\]+""")
#: Hosts of vocabularies a page names (schema.org in JSON-LD, the sitemap namespace), not links.
VOCABULARIES = {"schema.org", "www.sitemaps.org", "www.w3.org", "purl.org"}


def serve(app_db: str, **config):
    """The site as deployed: GATE_BASE_URL set, no SERVER_NAME from a test, no CSRF or limits."""
    return create_app({"TESTING": True, "DATABASE": app_db, "SECRET_KEY": "origin-key",
                       "BASE_URL": ORIGIN, "WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False,
                       **config})


@pytest.fixture
def site(app, db):
    """The conftest site's database (seeded, clock frozen) served at ORIGIN, with an account."""
    from gate.services import accounts

    accounts.create(db, "victim@example.com", "victim-pass-1", START, admin=True)
    return serve(app.config["DATABASE"])


def outbox(db) -> list[dict]:
    """Every message the site queued, oldest first."""
    return list(db.query("select * from outbox order by id"))


def foreign_hosts(*texts: str) -> set[str]:
    """Hosts of the absolute URLs in ``texts`` that are not the configured origin's."""
    hosts = {urlsplit(url if url.startswith("http") else "http:" + url).hostname or ""
             for text in texts for url in URL.findall(text or "")}
    return hosts - {HOST} - VOCABULARIES


SIGN_IN_LINK_REQUESTS = [
    pytest.param("/login/magic", {"email": "victim@example.com"}, id="login-magic"),
    pytest.param("/signup", {"email": "victim@example.com"}, id="signup-existing"),
]


@pytest.mark.parametrize(("path", "form"), SIGN_IN_LINK_REQUESTS)
def test_a_forged_host_gets_400_and_no_sign_in_link_is_mailed(site, db, path, form):
    response = site.test_client().post(path, data=form, headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert outbox(db) == []


@pytest.mark.parametrize(("path", "form"), SIGN_IN_LINK_REQUESTS)
def test_a_mailed_sign_in_link_points_at_the_configured_origin(site, db, path, form):
    # Requested over plain http on another port: the link is still the configured https origin.
    response = site.test_client().post(path, data=form, headers={"Host": f"{HOST}:8080"})
    assert response.status_code in (200, 303)
    [message] = outbox(db)
    assert re.search(rf"{re.escape(ORIGIN)}/login/magic/[\w.-]+", message["body_text"])
    assert foreign_hosts(message["body_text"]) == set()


@pytest.mark.parametrize("path", ["/", f"/articles/{METERED}", "/feed.xml", "/sitemap.xml",
                                  "/api/health", "/api/articles", "/login"])
@pytest.mark.parametrize("host", ["evil.example", "news.example.com.evil.example", "127.0.0.1:5000",
                                  "localhost", "", "news.example.com@evil.example"])
def test_requests_for_another_host_get_400(site, path, host):
    response = site.test_client().get(path, headers={"Host": host})
    assert response.status_code == 400 and "evil" not in response.get_data(as_text=True)


def test_feed_sitemap_canonical_and_json_ld_use_the_configured_origin(site):
    client = site.test_client()  # plain http to the origin's host: links still say https
    feed = client.get("/feed.xml").get_data(as_text=True)
    sitemap = client.get("/sitemap.xml").get_data(as_text=True)
    page = client.get(f"/articles/{FREE}").get_data(as_text=True)
    assert f"<link>{ORIGIN}/</link>" in feed and f"<guid isPermaLink=\"true\">{ORIGIN}/articles/" in feed
    assert f"<loc>{ORIGIN}/</loc>" in sitemap and f"<loc>{ORIGIN}/articles/{FREE}</loc>" in sitemap
    assert f'<link rel="canonical" href="{ORIGIN}/articles/{FREE}">' in page
    ld = json.loads(re.search(r'<script type="application/ld\+json">(.*?)</script>', page).group(1))
    assert ld["url"] == f"{ORIGIN}/articles/{FREE}"
    assert foreign_hosts(feed, sitemap, page) == set()


def test_newsletter_mail_and_one_click_unsubscribe_use_the_configured_origin(site, db, clock):
    from datetime import timedelta

    client = site.test_client()
    client.post("/signup", data={"email": "new@example.com", "password": "pass-word-1",
                                 "list_meridian_weekly": "y"})
    [confirmation] = outbox(db)
    link = re.search(rf"{re.escape(ORIGIN)}(/newsletter/confirm/[\w.-]+)", confirmation["body_text"])
    assert client.post(link.group(1)).status_code == 200
    publish(db, "origin-piece", START + timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    result = site.test_cli_runner().invoke(args=["newsletter", "send", "meridian-weekly"])
    assert "Sent meridian-weekly" in result.output, result.output
    issue = outbox(db)[-1]
    assert json.loads(issue["headers"])["List-Unsubscribe"].startswith(f"<{ORIGIN}/newsletter/unsubscribe/")
    assert f"{ORIGIN}/articles/origin-piece" in issue["body_text"]
    assert foreign_hosts(issue["body_text"], issue["body_html"], issue["headers"]) == set()


def test_forwarded_host_is_ignored_without_a_proxy_count(site):
    response = site.test_client().get("/feed.xml", headers={"X-Forwarded-Host": "evil.example"})
    assert response.status_code == 200 and foreign_hosts(response.get_data(as_text=True)) == set()


@pytest.mark.parametrize(("forwarded", "status"), [("evil.example", 400), (HOST, 200)])
def test_forwarded_host_is_checked_behind_a_configured_proxy(app, forwarded, status):
    proxied = serve(app.config["DATABASE"], PROXY_COUNT=1)
    response = proxied.test_client().get("/feed.xml", headers={
        "Host": "10.0.0.5:8000", "X-Forwarded-Host": forwarded, "X-Forwarded-Proto": "https"})
    assert response.status_code == status
    assert foreign_hosts(response.get_data(as_text=True)) == set()


@pytest.mark.parametrize(("host", "demo", "status"), [
    ("127.0.0.1:5000", True, 200), ("localhost:8123", True, 200), ("127.0.0.1", True, 200),
    (HOST, True, 200), ("evil.example", True, 400),
    ("127.0.0.1:5000", False, 400), ("localhost", False, 400),
])
def test_demo_mode_also_answers_loopback_on_any_port(app, host, demo, status):
    demo_site = serve(app.config["DATABASE"], DEMO=demo)
    assert demo_site.test_client().get("/", headers={"Host": host}).status_code == status


@pytest.mark.parametrize(("config", "site_origin", "expected"), [
    ({"BASE_URL": "https://A.example/"}, "https://b.example", "https://a.example"),
    ({}, "https://b.example:8443", "https://b.example:8443"),
    ({"SERVER_NAME": "meridian.test"}, None, "http://meridian.test"),
    ({}, None, None),
])
def test_the_origin_comes_from_configuration_in_order(config, site_origin, expected):
    from gate import _pin_origin

    settings_ = {"BASE_URL": None, "SERVER_NAME": None, "PREFERRED_URL_SCHEME": "http",
                 "TRUSTED_HOSTS": None, "DEMO": False, **config}
    _pin_origin(settings_, site_origin)
    assert settings_["BASE_URL"] == expected
    hosts = [urlsplit(expected).hostname] if expected else ["127.0.0.1", "localhost"]
    assert settings_["TRUSTED_HOSTS"] == hosts


def test_an_unconfigured_site_links_to_loopback_and_answers_only_loopback(tmp_path, monkeypatch):
    monkeypatch.delenv("GATE_BASE_URL", raising=False)
    bare = create_app({"DATABASE": str(tmp_path / "bare.sqlite"), "SECRET_KEY": "k"})
    client = bare.test_client()
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400
    feed = client.get("/feed.xml", headers={"Host": "localhost:8000"}).get_data(as_text=True)
    assert "<link>http://127.0.0.1:5000/</link>" in feed


@pytest.fixture
def served(monkeypatch, tmp_path):
    """`gate serve` with gunicorn replaced by a record of the app it would have served."""
    seen = {}
    monkeypatch.setattr(serving, "_gunicorn", lambda app, *args: seen.update(origin=app.config["BASE_URL"]))
    monkeypatch.setenv("GATE_DATABASE", str(tmp_path / "serve.sqlite"))
    monkeypatch.setenv("GATE_SECRET_KEY", "serve-key")
    for name in ("GATE_BASE_URL", "GATE_DEMO", "GATE_EVENT_BUFFER"):  # serve may set these
        monkeypatch.setenv(name, "")
    return seen


def test_serve_refuses_to_start_without_an_origin(served):
    result = CliRunner().invoke(cli.main, ["serve"])
    assert result.exit_code == 1 and served == {}
    assert "no public origin: set GATE_BASE_URL" in result.output


@pytest.mark.parametrize(("env", "expected"), [
    ({"GATE_BASE_URL": "https://news.example.com"}, "https://news.example.com"),
    ({"GATE_DEMO": "yes"}, "http://127.0.0.1:8000"),
    ({"GATE_DEMO": "on", "GATE_BASE_URL": "http://192.168.1.5:8000"}, "http://192.168.1.5:8000"),
])
def test_serve_starts_with_a_configured_origin_or_in_demo_mode(served, monkeypatch, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli.main, ["serve"])
    assert result.exit_code == 0, result.output
    assert served == {"origin": expected}


HOSTS = st.one_of(
    st.sampled_from(["evil.example", f"{HOST}.evil.example", "evil.example:443", f"{HOST}:8080",
                     f"{HOST}", f"{HOST.upper()}", f"evil.example/{HOST}", f"{HOST}@evil.example",
                     "127.0.0.1", "localhost:5000", "[::1]:80", "", " ", f"{HOST} evil.example"]),
    st.from_regex(r"[a-zA-Z0-9.-]{1,40}(:[0-9]{1,6})?", fullmatch=True),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
)
ROUTES = ["/", f"/articles/{METERED}", "/feed.xml", "/sitemap.xml", "/api/articles", "/login"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=HOSTS, forwarded=st.none() | HOSTS, path=st.sampled_from(ROUTES))
def test_no_emitted_url_ever_names_a_host_but_the_configured_one(site, db, host, forwarded, path):
    client = site.test_client()
    headers = {"Host": host, **({"X-Forwarded-Host": forwarded} if forwarded is not None else {})}
    page = client.get(path, headers=headers)
    mailed = client.post("/login/magic", data={"email": "victim@example.com"}, headers=headers)
    assert page.status_code in (200, 400) and mailed.status_code in (200, 400)
    if page.status_code == 200:  # only the origin's own host (any port) is answered
        assert host.lower().partition(":")[0] == HOST
    bodies = [page.get_data(as_text=True), mailed.get_data(as_text=True)]
    bodies += [row["body_text"] for row in outbox(db)]
    assert foreign_hosts(*bodies) == set()

"""gate: a metered-paywall and subscription-gate simulator."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask

from gate.app import sessions
from gate.app.plumbing import Site
from gate.conf import environment
from gate.conf.resources import resource_dir
from gate.conf.version import __version__ as __version__  # re-exported: gate.__version__


def _instance_secret(instance_path: str) -> str:
    """The secret key kept in the instance folder, generated on first use."""
    path = Path(instance_path) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a private name (mode 0600), then linked into place. Commands started at
        # once on a fresh instance folder all keep the one key that was linked first, never half of one.
        fd, draft = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):  # another process was first: its key is the key
                os.link(draft, path)
        finally:
            os.unlink(draft)
    return path.read_text().strip()


def create_app(test_config: dict | None = None) -> Flask:
    """Build the site: configuration, database, extensions and blueprints."""
    env = environment.read()
    app = Site(
        __name__,
        instance_path=os.path.abspath(env["GATE_INSTANCE"]) if env["GATE_INSTANCE"] else None,
        instance_relative_config=True,
        template_folder=str(resource_dir("templates")),
    )
    app.config.from_mapping(
        # A PostgreSQL URL, else the SQLite file: services open either through gate.storage.db.
        DATABASE=env["GATE_DATABASE_URL"] or env["GATE_DATABASE"] or os.path.join(app.instance_path, "gate.sqlite"),
        DATABASE_POOL=env["GATE_DATABASE_POOL"],
        SECRET_KEY=env["GATE_SECRET_KEY"],
        PRESET=env["GATE_PRESET"],
        PRESETS_DIR=env["GATE_PRESETS_DIR"] or os.path.join(app.instance_path, "presets"),
        DEMO=env["GATE_DEMO"],
        CONFIG_DIR=None,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=env["GATE_SECURE_COOKIES"],
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,
        PROXY_COUNT=env["GATE_PROXY_COUNT"],
        BASE_URL=env["GATE_BASE_URL"],
        EVENT_BUFFER=env["GATE_EVENT_BUFFER"],
        RATELIMIT_ENABLED=env["GATE_RATE_LIMITS"],
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    app.session_interface = sessions.SessionInterface()  # each cookie verified once per process
    if not app.config["SECRET_KEY"]:
        from gate.storage.engine import is_url  # (importing gate must not load sqlite-utils, nor numpy)

        if is_url(app.config["DATABASE"]):
            raise environment.SettingError(
                "GATE_SECRET_KEY: required with GATE_DATABASE_URL. Every node serving one database "
                "must sign sessions and links with the same key (a key generated in this node's "
                "instance folder would sign out readers whose next request reaches another node)."
            )
        app.config["SECRET_KEY"] = _instance_secret(app.instance_path)
    app.config["REMEMBER_COOKIE_SECURE"] = app.config["SESSION_COOKIE_SECURE"]

    from gate.app import db, site
    from gate.conf.settings import Config

    app.extensions["gate.config"] = Config(app.config["CONFIG_DIR"], app.config["PRESETS_DIR"])
    _pin_origin(app.config, app.extensions["gate.config"].publication.base_url)
    if app.config["BASE_URL"]:  # services without Flask (lifecycle mail) build links from it
        app.extensions["gate.config"].origin = app.config["BASE_URL"]
    if env["GATE_RATELIMIT_STORAGE"]:
        app.config.setdefault("RATELIMIT_STORAGE_URI", env["GATE_RATELIMIT_STORAGE"])
    db.init_app(app)
    from gate.app import ratelimit

    ratelimit.init_app(app)
    site.init_app(app)

    proxies = int(app.config.get("PROXY_COUNT") or 0)
    if proxies:  # trust X-Forwarded-* only from this many proxies in front of us
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)

    from gate.cli import init_app as init_cli
    from gate.web import init_app as init_web

    init_web(app)
    init_cli(app)
    return app


#: Hosts a demo (or a site with no origin configured) is reached by on this machine, any port.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def _pin_origin(config, site_origin: str | None) -> None:
    """Fix the public origin from configuration and answer only its host (plus loopback in demo).

    Precedence: BASE_URL (GATE_BASE_URL or a test config), then ``[site] base_url``, then
    Flask's own SERVER_NAME (how tests name their host). With none, BASE_URL stays None:
    links point at the loopback demo address and only loopback hosts are answered;
    `gate serve` refuses to start. A request for any other Host gets 400 (TRUSTED_HOSTS),
    so no URL is ever built from a Host header an attacker chose.
    """
    base = config.get("BASE_URL") or site_origin
    if not base and config.get("SERVER_NAME"):
        base = f"{config['PREFERRED_URL_SCHEME']}://{config['SERVER_NAME']}"
    try:
        config["BASE_URL"] = environment.origin(base) if base else None
    except ValueError as error:
        raise environment.SettingError(f"BASE_URL={base!r}: {error}") from None
    if config["BASE_URL"]:
        parts = urlsplit(config["BASE_URL"])
        config["SERVER_NAME"] = config["SERVER_NAME"] or parts.netloc
        config["PREFERRED_URL_SCHEME"] = parts.scheme
    if config.get("TRUSTED_HOSTS") is None:
        hosts = [urlsplit(config["BASE_URL"]).hostname] if config["BASE_URL"] else []
        config["TRUSTED_HOSTS"] = hosts + list(LOOPBACK_HOSTS if config["DEMO"] or not hosts else ())

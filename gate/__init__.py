"""gate: a metered-paywall and subscription-gate simulator."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import Flask

from gate.resources import resource_dir

__version__ = "0.1.0"


def _instance_secret(instance_path: str) -> str:
    """The secret key kept in the instance folder, generated on first use."""
    path = Path(instance_path) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip()


def create_app(test_config: dict | None = None) -> Flask:
    """Build the site: configuration, database, extensions and blueprints."""
    app = Flask(
        __name__,
        instance_relative_config=True,
        template_folder=str(resource_dir("templates")),
    )
    app.config.from_mapping(
        DATABASE=os.environ.get("GATE_DATABASE") or os.path.join(app.instance_path, "gate.sqlite"),
        SECRET_KEY=os.environ.get("GATE_SECRET_KEY"),
        PRESET=os.environ.get("GATE_PRESET") or None,
        DEMO=os.environ.get("GATE_DEMO", "") not in ("", "0", "false"),
        CONFIG_DIR=None,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=os.environ.get("GATE_SECURE_COOKIES", "") == "1",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,
        PROXY_COUNT=int(os.environ.get("GATE_PROXY_COUNT") or 0),
        BASE_URL=os.environ.get("GATE_BASE_URL") or None,
        EVENT_BUFFER=os.environ.get("GATE_EVENT_BUFFER", "") == "1",
        RATELIMIT_ENABLED=os.environ.get("GATE_RATE_LIMITS", "on") != "off",
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = _instance_secret(app.instance_path)
    app.config["REMEMBER_COOKIE_SECURE"] = app.config["SESSION_COOKIE_SECURE"]

    from gate import db, site
    from gate.settings import Config

    app.extensions["gate.config"] = Config(app.config["CONFIG_DIR"])
    if os.environ.get("GATE_RATELIMIT_STORAGE"):
        app.config.setdefault("RATELIMIT_STORAGE_URI", os.environ["GATE_RATELIMIT_STORAGE"])
    db.init_app(app)
    from gate import ratelimit

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

"""Every GATE_* environment variable, declared once and parsed strictly.

The table below is the only place a GATE_* variable is read: create_app and
the CLI call :func:`read`, `gate --help` prints :func:`table`, and a test
checks the README and docs/cli.md list the same rows. A value that is not exactly one of the
accepted spellings stops the start with the variable, the value and what is
accepted (``GATE_DEMO=off`` once turned demo mode *on*). An empty value counts
as unset. No Flask here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class SettingError(ValueError):
    """One or more GATE_* variables with a value gate cannot use."""


def boolean(text: str) -> bool:
    """1/true/yes/on or 0/false/no/off, any case; nothing else."""
    word = text.strip().lower()
    if word in TRUE or word in FALSE:
        return word in TRUE
    raise ValueError(f"accepted: {'/'.join(TRUE)} or {'/'.join(FALSE)} (any case)")


def integer(low: int, high: int) -> Callable[[str], int]:
    """A parser for a whole number from ``low`` to ``high``."""
    def parse(text: str) -> int:
        if not re.fullmatch(r"[0-9]+", text.strip()) or not low <= int(text) <= high:
            raise ValueError(f"accepted: a whole number from {low} to {high}")
        return int(text)
    return parse


def _split(text: str, accepted: str):
    """A URL's parts and port, or the ``accepted`` refusal for one urllib cannot read (a bad port)."""
    try:
        parts = urlsplit(text.strip())
        return parts, parts.port
    except ValueError:
        raise ValueError(accepted) from None


def origin(text: str) -> str:
    """``http(s)://host[:port]``: a scheme and a host, no path, query, user or fragment."""
    accepted = "accepted: an origin like https://news.example.com or http://127.0.0.1:5000 (no path)"
    parts, port = _split(text, accepted)
    host = parts.hostname or ""
    if (port == 0 or parts.scheme not in ("http", "https") or not re.fullmatch(r"[a-z0-9.-]+", host)
            or parts.username is not None or parts.path not in ("", "/")
            or parts.query or parts.fragment or text.strip().endswith(("?", "#"))):
        raise ValueError(accepted)
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}"


def path(text: str) -> str:
    """A file path (no NUL byte)."""
    if "\0" in text:
        raise ValueError("accepted: a file path")
    return text


def text(value: str) -> str:
    """Any non-empty text."""
    return value


def storage_uri(text: str) -> str:
    """A limits storage URI such as ``memory://`` or ``redis://host:6379``."""
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*://\S*", text.strip()):
        raise ValueError("accepted: a storage URI such as memory:// or redis://host:6379")
    return text.strip()


def database_url(text: str) -> str:
    """``postgresql://[user[:password]@]host[:port]/database``: a PostgreSQL server and one database."""
    accepted = "accepted: a URL like postgresql://gate@db.example.com:5432/gate"
    parts, port = _split(text, accepted)
    if (parts.scheme not in ("postgresql", "postgres") or not parts.hostname or port == 0
            or not re.fullmatch(r"/[A-Za-z0-9_.-]+", parts.path) or parts.fragment):
        raise ValueError(accepted)
    return text.strip()


@dataclass(frozen=True)
class Variable:
    """One GATE_* variable: its name, the kind of value, the default and what it does."""

    name: str
    kind: str
    default: str
    help: str
    parse: Callable[[str], object]
    unset: object = None


VARIABLES = (
    Variable("GATE_INSTANCE", "path", "`instance/` beside the package (Flask's instance folder)",
             "the instance folder: the secret key, the default SQLite file, forecasts (nodes may share it)",
             path),
    Variable("GATE_DATABASE", "path", "`instance/gate.sqlite` (the Flask instance folder)",
             "the SQLite file", path),
    Variable("GATE_DATABASE_URL", "database URL", "unset: SQLite at `GATE_DATABASE`",
             "PostgreSQL for all state (`postgresql://user@host:port/db`; needs `GATE_SECRET_KEY`)",
             database_url),
    Variable("GATE_DATABASE_POOL", "integer 1-100", "6; `gate serve`: its threads + 2",
             "PostgreSQL connections each process may hold (its pool's size)", integer(1, 100)),
    Variable("GATE_SECRET_KEY", "text", "generated once and kept in `instance/secret_key` (mode 0600)",
             "signs sessions and links", text),
    Variable("GATE_PRESET", "preset name", "the database's choice, else `site.default_preset`",
             "the preset applied when the site starts", text),
    Variable("GATE_PRESETS_DIR", "path", "`presets/` in the instance folder",
             "where presets saved in the rule studio and by `gate preset new` live", path),
    Variable("GATE_BASE_URL", "origin", "`[site] base_url`; `gate demo`: `http://` + `--bind`",
             "the public origin of every absolute URL (mail, feed, sitemap, JSON-LD, canonical)",
             origin),
    Variable("GATE_DEMO", "boolean", "off (`gate demo` turns it on)",
             "demo mode: persona switcher, open `/dev/mail/`, loopback hosts accepted", boolean, False),
    Variable("GATE_SECURE_COOKIES", "boolean", "off", "mark cookies `Secure` (serve over https)",
             boolean, False),
    Variable("GATE_PROXY_COUNT", "integer 0-10", "0",
             "trust `X-Forwarded-For/-Proto/-Host` from this many proxies in front", integer(0, 10), 0),
    Variable("GATE_EVENT_BUFFER", "boolean", "off (`gate serve` turns it on)",
             "log view events through a background writer", boolean, False),
    Variable("GATE_RATE_LIMITS", "boolean", "on", "rate limits on sign-in, signup, links and unlocks",
             boolean, True),
    Variable("GATE_RATELIMIT_STORAGE", "storage URI", "the site database",
             "where rate-limit counts are shared by workers (e.g. `redis://host:6379`)", storage_uri),
    Variable("GATE_CHROMIUM", "path", "`/usr/bin/chromium`", "the browser the browser tests drive",
             path),
    Variable("GATE_TEST_DATABASE_URL", "database URL", "unset: PostgreSQL tests skip (fail under `CI`)",
             "a scratch PostgreSQL server the tests create databases in (`.ci/run` starts one)", database_url),
)

BY_NAME = {variable.name: variable for variable in VARIABLES}


def read(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """Every declared variable parsed from ``environ``; all bad values reported together."""
    environ = os.environ if environ is None else environ
    values, problems = {}, []
    for name in sorted(key for key in environ if key.startswith("GATE_") and key not in BY_NAME):
        problems.append(f"{name}: not a gate setting (known: {', '.join(BY_NAME)})")
    for variable in VARIABLES:
        raw = environ.get(variable.name, "")
        try:
            values[variable.name] = variable.parse(raw) if raw.strip() else variable.unset
        except ValueError as error:
            problems.append(f"{variable.name}={raw!r}: {error}")
    if problems:
        raise SettingError("\n".join(problems))
    return values


def table() -> str:
    """The variables as plain text, for `gate --help`."""
    return "\n".join(f"{v.name:<23} {v.kind:<13} {v.help} (default: {v.default})".replace("`", "")
                     for v in VARIABLES)

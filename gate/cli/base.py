"""What every command shares: clean refusals, and the app built with them.

Nothing here opens the database, so `import gate.cli` stays light (no sqlite-utils, hence no NumPy).
"""

from __future__ import annotations

import functools

import click

from gate import create_app
from gate.conf import environment


def refusing(command=None, *, prefix: str = ""):
    """Turn a domain error into click's clean refusal (``Error: …``, exit 1), never a traceback.

    Every error gate raises for bad input or configuration is a ValueError with a
    message for people (ConfigError, SettingError, ClockError, BillingError,
    AccountError, CheckoutError, NewsletterError, TrafficError), as are the
    parsers' errors for dates and durations; its message is the refusal's.
    """
    def decorate(function):
        @functools.wraps(function)
        def refused_cleanly(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except ValueError as error:
                raise click.ClickException(f"{prefix}{error}") from None
        return refused_cleanly
    return decorate(command) if command else decorate


@refusing(prefix="configuration error:\n")
def build_app():
    """Build the app for a CLI command, turning config errors into clean messages."""
    return create_app()


@refusing(prefix="configuration error:\n")
def parsed(name: str):
    """One GATE_* variable, strictly parsed (a bad value is a clean refusal)."""
    return environment.read()[name]

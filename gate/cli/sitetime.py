"""The site's time and zone as commands read them (the simulated clock in the database)."""

from __future__ import annotations

from datetime import datetime

from gate.app import site
from gate.app.db import get_db
from gate.storage.clock import Clock


def now() -> datetime:
    """The site time (the simulated clock stored in the database)."""
    return Clock(get_db()).now()


def tz():
    """The time zone of the site's default preset (dates on the command line are read in it)."""
    return site.config().preset(site.config().publication.default_preset).tz

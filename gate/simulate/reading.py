"""What the dynamic meter's score reads, kept for every simulated reader in flat arrays.

The site reads a viewer's signals from its ``article_view`` events
(gate.services.engagement); the simulator keeps the same facts as it goes, one
slot per reader and never a list of visits, so memory stays flat however many
days are run: a 30-bit mask of the days with a read, the day of the last read,
the last day each section was read, and whether the reader came by a newsletter
link. A reader who becomes someone else to the site (a visitor who lost their
cookies, a visitor who signs up) starts a new history, as the site's does.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from gate.rules.engagement import WINDOW_DAYS, Signals

#: The bits of the days mask the score looks at: today and the 29 days before.
_WINDOW = (1 << WINDOW_DAYS) - 1
#: The day of a section never read (far enough back to be outside any window).
_NEVER = -(1 << 30)


class ReadingHistory:
    """Each simulated reader's reads, as the dynamic meter scores them."""

    def __init__(self, readers: int, sections: Sequence[str]) -> None:
        self.column = {section: number for number, section in enumerate(sections)}
        #: Bit k set: the reader read on the day k days before ``today``.
        self.days = np.zeros(readers, dtype=np.uint32)
        self.last = np.full(readers, -1, dtype=np.int32)
        self.section_days = np.full((readers, max(1, len(sections))), _NEVER, dtype=np.int32)
        #: Came by a newsletter link at least once (so is on a list; counted once they have an account).
        self.newsletter = np.zeros(readers, dtype=bool)
        self.today = 0

    def new_day(self, day: int) -> None:
        """Move every reader's mask on to ``day`` (days only go forward)."""
        shift = day - self.today
        if shift > 0:
            self.days = (self.days << np.uint32(min(shift, WINDOW_DAYS))) & np.uint32(_WINDOW)
            self.today = day

    def read(self, reader: int, section: str, newsletter: bool) -> None:
        """Record one article view by ``reader`` today (after its decision, as the site records the event)."""
        self.days[reader] |= np.uint32(1)
        self.last[reader] = self.today
        column = self.column.get(section)
        if column is not None:
            self.section_days[reader, column] = self.today
        if newsletter:
            self.newsletter[reader] = True

    def forget(self, reader: int) -> None:
        """A new identity to the site: the score starts from nothing (the newsletter link still reached them)."""
        self.days[reader] = 0
        self.last[reader] = -1
        self.section_days[reader] = _NEVER

    def signals(self, reader: int, referral: str, registered: bool) -> Signals:
        """The reader's signals now, before today's next view is recorded."""
        last = int(self.last[reader])
        sections = int(np.count_nonzero(self.section_days[reader] > self.today - WINDOW_DAYS))
        return Signals(visits=int(self.days[reader]).bit_count(), days_since=None if last < 0 else self.today - last,
                       sections=sections, referral=referral,
                       newsletter=registered and bool(self.newsletter[reader]), registered=registered)

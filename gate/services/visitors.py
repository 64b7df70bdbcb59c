"""Anonymous visitors: an id kept once the visitor reads, spends or joins an experiment."""

from __future__ import annotations

from datetime import datetime

from gate.rules.timeutil import to_iso


def keep(db, visitor_id: str, at: datetime) -> None:
    """Record a visitor the first time their id is used (again: nothing)."""
    db.insert_ignore("visitors", {"id": visitor_id, "created_at": to_iso(at)})

"""Win-back: a lapsed subscriber is mailed a one-time personal code some days after access ended.

``[retention.winback]`` in config/site.toml sets when (``days_after`` the subscription's
``ended_at``) and what (percent off for ``periods`` paid periods, valid ``valid_days``).
The clock tick that settles subscriptions sends what fell due (:func:`send_due`), each
message dated at the moment it fell due, like every other lifecycle notice; the
``notices`` row (unique per subscription, kind and moment) makes it go out once. Only a
reader's newest subscription is mailed: one who subscribed again meanwhile gets nothing.
The code is an ``offers`` row of its own (source ``winback``, the reader's, cap 1); its
redemption at checkout records ``winback_redeemed`` (gate.services.offers.redeem).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from gate.rules.offers import OfferTerms
from gate.rules.timeutil import to_iso
from gate.services import notices, offers
from gate.storage import events

#: A lapsed reader's newest subscription, ended inside the window, not yet mailed a win-back.
_DUE = ("select s.reader_id from subscriptions s where s.status in ('canceled', 'unpaid')"
        " and s.ended_at <= ? and s.ended_at > ?"
        " and s.id = (select max(id) from subscriptions where reader_id = s.reader_id)"
        " and not exists (select 1 from notices n where n.subscription_id = s.id and n.kind = 'winback')"
        " order by s.ended_at, s.id")


def due(db, cfg, now: datetime) -> list:
    """The ended subscriptions whose win-back mail is due by ``now`` (and whose code would still be valid)."""
    from gate.services import subscriptions  # imported here: its clock tick calls send_due

    terms = cfg.retention.winback
    if terms is None:
        return []
    latest = now - timedelta(days=terms.days_after)
    earliest = latest - timedelta(days=terms.valid_days)  # older ones' codes would arrive expired
    rows = db.execute(_DUE, [to_iso(latest), to_iso(earliest)]).fetchall()
    return [subscriptions.current(db, reader_id) for (reader_id,) in rows]  # each one's newest: the lapsed one


def personal_code(reader_id: int) -> str:
    """A one-time code for one reader, not guessable from their id alone."""
    return f"WINBACK-{reader_id}-{secrets.token_hex(3).upper()}"


def send(db, cfg, sub, now: datetime) -> str | None:
    """Mail one lapsed subscription its win-back code (in one transaction); the code, or None if already sent."""
    terms = cfg.retention.winback
    at = sub.ended_at + timedelta(days=terms.days_after)
    code = personal_code(sub.reader_id)
    link = f"{notices.origin(cfg)}/subscribe?code={code}"
    ends = at + timedelta(days=terms.valid_days)
    with db.transaction():
        if notices.send(db, cfg, sub, "winback", at, code=code, link=link, terms=terms, ends=ends) is None:
            return None
        offers.add(db, OfferTerms(code, f"Welcome back: {terms.percent_off}% off", "percent", terms.percent_off,
                                  "repeating", terms.periods, (), at, ends, cap=1, reader_id=sub.reader_id,
                                  source="winback"), at)
        events.record(db, "winback_sent", at, reader_id=sub.reader_id, subscription_id=sub.id, code=code)
    return code


def send_due(db, cfg, now: datetime) -> int:
    """Send every win-back mail due by ``now``; how many went out."""
    return sum(send(db, cfg, sub, now) is not None for sub in due(db, cfg, now))

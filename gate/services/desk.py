"""The publishing desk: a demo that travels past its scheduled articles keeps publishing.

The demo ships eight weeks of scheduled pieces (``gate/demo/schedule``). Once
the clock passes the last of them, :func:`publish_through` writes further
articles, one each weekday morning and a Saturday long read, so newsletters,
the front page and the meter never go quiet in a long demo. Each piece is
generated from a ``Random`` seeded by its date (the same day always gets the
same piece), is attributed to "The Meridian desk", says in its dek that it was
generated and for which day, and goes through :func:`content.validate_article`
and the same Markdown pipeline as every article, so its gated part is cut and
withheld like any other.
"""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta

from gate.rules.timeutil import from_iso
from gate.services import content
from gate.services.seed import SCHEDULE_DIR, insert_new_articles

AUTHOR = "The Meridian desk"
PREFIX = "desk-"
#: A jump of years publishes at most this many days of pieces (the most recent ones).
BACKFILL_DAYS = 400
WEEKDAY_AT, SATURDAY_AT = time(7, 15), time(6, 45)

#: What each section writes about: (subject, the thing it is really about).
TOPICS = {
    "Diplomacy": [("border commissions", "who draws the map"), ("embassy reopenings", "quiet recognition"),
                  ("mediation offers", "who gets to be neutral"), ("visa deals", "leverage over mobility")],
    "Economy": [("port fees", "who pays for trade"), ("currency swap lines", "lenders of last resort"),
                ("food import bills", "household budgets"), ("sovereign bond auctions", "the cost of trust")],
    "Security": [("coast guard budgets", "grey-zone pressure"), ("ammunition contracts", "industrial depth"),
                 ("cable repair ships", "undersea resilience"), ("border drones", "cheap surveillance")],
    "Climate": [("flood insurance pools", "who carries the risk"), ("grid batteries", "evening peaks"),
                ("heat action plans", "working hours"), ("river basin treaties", "dry seasons")],
    "Technology": [("chip export licences", "supply-chain leverage"), ("satellite spectrum", "crowded orbits"),
                   ("data localisation rules", "cloud sovereignty"), ("digital payment rails", "fees and control")],
}
_GENERIC = [("public procurement", "who gets the contract"), ("regional agreements", "fine print")]
PLACES = ["the Baltic states", "West Africa", "the Gulf", "Central Asia", "the Andean countries",
          "Southeast Asia", "the Horn of Africa", "the Caribbean", "the western Balkans", "South Asia"]
PEOPLE = [("Amara Osei", "a policy analyst in Accra"), ("Lena Brandt", "a former negotiator in Berlin"),
          ("Rafael Ortiz", "an economist in Bogotá"), ("Mei Tanaka", "a risk consultant in Singapore"),
          ("Yusuf Demir", "a researcher in Ankara"), ("Ingrid Solberg", "an adviser in Oslo")]
TITLES = ["The quiet fight over {topic} in {place}", "Why {topic} now decide {theme}",
          "{Place} is rewriting the rules on {topic}", "What {topic} reveal about {theme}"]
DEKS = ["Governments in {place} are discovering that {topic} are really about {theme}.",
        "A technical file in {place} has become a question of {theme}."]
OPENINGS = [
    "For years {topic} were a matter for specialists in {place}. That has changed.",
    "Few voters in {place} could explain how {topic} work, yet the consequences reach most of them.",
]
MIDDLES = [
    "Officials describe the shift as technical, but the choices involved are about {theme}.",
    "The numbers are modest on paper; what matters is who sets the terms and who must accept them.",
    "Neighbouring governments are watching closely, because a precedent set in one capital travels fast.",
    "Budgets are tight, and every concession made now will be hard to withdraw later.",
    "Industry groups argue for patience, while critics say delay simply hands the advantage to incumbents.",
    "The institutions meant to manage {topic} were designed for a calmer decade.",
    "Lenders and insurers have started to price the uncertainty, which is often the first sign of a real change.",
    "Parliaments have mostly been bystanders, approving frameworks whose details are settled elsewhere.",
    "The loudest arguments are about sovereignty; the decisive ones are about paperwork and deadlines.",
    "Smaller states in {place} have learned to act together, since none of them carries much weight alone.",
    "Outside donors offer money, but their conditions tend to arrive before the funds do.",
    "Data is patchy, so each side can point to figures that flatter its own position.",
    "Local firms complain that the rules change faster than they can hire people who understand them.",
    "A few pilot projects have worked, though none has yet been tried at national scale.",
    "Diplomats say privately that the subject now comes up in meetings where it never used to.",
]
CLOSINGS = [
    "The next year will show whether the new approach survives its first real test.",
    "None of this makes headlines, which is precisely why it deserves attention.",
]
HEADINGS = ["What changes next", "The harder question", "Where the money goes"]


def _last_scheduled(db) -> datetime | None:
    """When the last scheduled (or desk) piece is published; None when no schedule was seeded."""
    slugs = [path.stem for path in SCHEDULE_DIR.glob("*.md")]
    marks = ",".join("?" * len(slugs))
    last = db.scalar(f"select max(published_at) from articles where slug like '{PREFIX}%'"
                     f" or slug in ({marks})", slugs)
    return from_iso(last) if last else None


def _sentences(rng: random.Random, words: dict, count: int) -> list[str]:
    """``count`` different supporting sentences, in a random order."""
    return [sentence.format(**words) for sentence in rng.sample(MIDDLES, count)]


def piece(day: date, at: datetime, sections: list[str]) -> dict:
    """The desk's article for one day, the same every time (seeded by the date)."""
    rng = random.Random(f"meridian-desk-{day.isoformat()}")
    section = rng.choice(sections)
    topic, theme = rng.choice(TOPICS.get(section, _GENERIC))
    place = rng.choice(PLACES)
    words = {"topic": topic, "theme": theme, "place": place, "Place": place[0].upper() + place[1:]}
    name, role = rng.choice(PEOPLE)
    title = rng.choice(TITLES).format(**words)
    title = title[0].upper() + title[1:]
    saturday = day.weekday() == 5
    body = _sentences(rng, words, 14 if saturday else 11)
    paragraphs = [" ".join([rng.choice(OPENINGS).format(**words)] + body[:3]), " ".join(body[3:6])]
    if saturday:
        paragraphs.append(" ".join(body[11:14]))
    paragraphs += [f'"The details are dull, and that is where the power is," says {name}, {role}.',
                   f"## {rng.choice(HEADINGS)}", " ".join(body[6:9]),
                   " ".join(body[9:11] + [rng.choice(CLOSINGS)])]
    access = "metered" if saturday else rng.choices(["metered", "premium", "free"], [7, 2, 1])[0]
    return content.validate_article({
        "slug": f"{PREFIX}{day.isoformat()}", "title": title, "section": section,
        "dek": f"Generated by the demo desk for {day.strftime('%A, %B %-d, %Y')}. "
               + rng.choice(DEKS).format(**words),
        "author": AUTHOR, "access": access, "published_at": at,
        "body_md": "\n\n".join(paragraphs) + "\n",
    }, source=f"desk {day.isoformat()}")


def publish_through(db, cfg, now: datetime) -> int:
    """Publish the desk's pieces for every day after the schedule ran out, up to ``now``."""
    last = _last_scheduled(db)
    if last is None or last >= now:
        return 0
    tz = cfg.publication.tz
    today = now.astimezone(tz).date()
    day = max(last.astimezone(tz).date() + timedelta(days=1), today - timedelta(days=BACKFILL_DAYS))
    rows = []
    while day <= today:
        at = datetime.combine(day, SATURDAY_AT if day.weekday() == 5 else WEEKDAY_AT, tz)
        if day.weekday() != 6 and at <= now:
            rows.append(piece(day, at, cfg.publication.sections))
        day += timedelta(days=1)
    return insert_new_articles(db, rows)

"""Signed tokens: one itsdangerous serializer per purpose, each with an expiry.

A bad or expired signature is "no value", never a crash.
"""

from __future__ import annotations

from itsdangerous import BadData, URLSafeTimedSerializer

#: Each purpose gets its own salt, so a token for one can't be used for another.
PURPOSES = {
    "magic-login": 15 * 60,
    "newsletter-confirm": 7 * 24 * 3600,
    "newsletter-unsubscribe": 400 * 24 * 3600,
    "org-join": 7 * 24 * 3600,
    #: A newsletter's article link: reads that article by the preset's newsletter side door.
    "newsletter-link": 400 * 24 * 3600,
    #: A gift link ends on the site's clock (its row's expires_at); this is only a backstop.
    "gift-link": 400 * 24 * 3600,
}


def serializer(secret_key: str, purpose: str) -> URLSafeTimedSerializer:
    """The serializer for one purpose."""
    if purpose not in PURPOSES:
        raise KeyError(f"unknown token purpose {purpose!r}")
    return URLSafeTimedSerializer(secret_key, salt=f"gate.{purpose}")


def sign(secret_key: str, purpose: str, payload) -> str:
    """Sign a payload for one purpose."""
    return serializer(secret_key, purpose).dumps(payload)


def load(secret_key: str, purpose: str, token: str, max_age: int | None = None):
    """The payload of a valid token younger than ``max_age`` seconds (the purpose's default), else None.

    Expiry is real (wall-clock) time, checked by itsdangerous: a signed link
    is a credential, and moving the simulated clock must not extend it.
    """
    try:
        return serializer(secret_key, purpose).loads(token, max_age=max_age or PURPOSES[purpose])
    except BadData:
        return None

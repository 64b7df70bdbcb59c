"""The schema, as named, append-only sqlite-utils migrations.

Never edit an applied migration; add a new one below it.
"""

from __future__ import annotations

from sqlite_utils.migrations import Migrations

migrations = Migrations("gate")


@migrations()
def m001_readers_and_visitors(db):
    """Accounts and anonymous visitors (who hold a meter before signing up)."""
    db["readers"].create(
        {
            "id": int,
            "email": str,
            "password_hash": str,
            "is_admin": int,
            "is_subscriber": int,
            "session_token": str,
            "created_at": str,
        },
        pk="id",
        not_null={"email", "session_token", "created_at"},
        defaults={"is_admin": 0, "is_subscriber": 0},
    )
    db["readers"].create_index(["email"], unique=True)
    db["readers"].create_index(["session_token"], unique=True)
    db["visitors"].create(
        {"id": str, "created_at": str, "reader_id": int},
        pk="id",
        foreign_keys=[("reader_id", "readers", "id")],
    )


@migrations()
def m002_articles(db):
    """The publication's articles, with rendered, sanitised HTML."""
    db["articles"].create(
        {
            "id": int,
            "slug": str,
            "title": str,
            "dek": str,
            "author": str,
            "section": str,
            "published_at": str,
            "access_class": str,
            "body_md": str,
            "word_count": int,
            "synthetic": int,
        },
        pk="id",
        not_null={"slug", "title", "section", "published_at", "access_class", "body_md"},
        defaults={"synthetic": 0, "dek": "", "author": ""},
    )
    db["articles"].create_index(["slug"], unique=True)
    db["articles"].create_index(["published_at"])
    db["articles"].create_index(["section", "published_at"])


@migrations()
def m003_unlocks(db):
    """Meter spends; the unique key is the last line of defence against over-granting."""
    db["unlocks"].create(
        {"id": int, "meter_key": str, "slug": str, "window_key": str, "unlocked_at": str},
        pk="id",
        not_null={"meter_key", "slug", "window_key", "unlocked_at"},
    )
    db["unlocks"].create_index(["meter_key", "slug", "window_key"], unique=True)
    db["unlocks"].create_index(["meter_key", "unlocked_at"])


@migrations()
def m004_events(db):
    """The append-only history every dashboard and audit reads."""
    db["events"].create(
        {
            "id": int,
            "at": str,
            "type": str,
            "reader_id": int,
            "visitor_id": str,
            "slug": str,
            "data": str,
        },
        pk="id",
        not_null={"at", "type"},
    )
    db["events"].create_index(["type", "at"])
    db["events"].create_index(["reader_id", "at"])


@migrations()
def m005_site_state(db):
    """The clock row, site settings (the active preset) and the mail outbox."""
    db["clock"].create(
        {"id": int, "mode": str, "offset_seconds": float, "frozen_at": str}, pk="id"
    )
    db["settings"].create({"key": str, "value": str}, pk="key")
    db["outbox"].create(
        {
            "id": int,
            "created_at": str,
            "kind": str,
            "to_addr": str,
            "from_addr": str,
            "subject": str,
            "headers": str,
            "body_text": str,
            "body_html": str,
        },
        pk="id",
        not_null={"created_at", "to_addr", "subject"},
    )
    db["outbox"].create_index(["to_addr", "created_at"])


@migrations()
def m006_login_tokens(db):
    """Magic-link ids, so that each link signs in once."""
    db["login_tokens"].create(
        {"jti": str, "reader_id": int, "created_at": str, "used_at": str},
        pk="jti",
        foreign_keys=[("reader_id", "readers", "id")],
    )


def apply(db) -> None:
    """Apply every pending migration, each in its own transaction."""
    migrations.apply(db)


@migrations()
def m007_subscriptions(db):
    """Subscriptions, every charge attempt, checkout idempotency keys, and comps.

    The old ``is_subscriber`` flag becomes an open-ended complimentary grant.
    """
    db["subscriptions"].create(
        {
            "id": int, "reader_id": int, "plan_id": str, "status": str, "card_last4": str,
            "created_at": str, "anchor": str, "current_period_start": str,
            "current_period_end": str, "trial_end": str, "cancel_at_period_end": int,
            "past_due_since": str, "retry_count": int, "next_retry_at": str, "ended_at": str,
        },
        pk="id",
        not_null={"reader_id", "plan_id", "status", "created_at"},
        defaults={"cancel_at_period_end": 0, "retry_count": 0},
        foreign_keys=[("reader_id", "readers", "id")],
    )
    db["subscriptions"].create_index(["reader_id"])
    db["subscriptions"].create_index(["status", "current_period_end"])
    db["payments"].create(
        {
            "id": int, "subscription_id": int, "reader_id": int, "at": str, "amount_cents": int,
            "currency": str, "outcome": str, "decline_code": str, "kind": str, "card_last4": str,
        },
        pk="id",
        not_null={"reader_id", "at", "amount_cents", "currency", "outcome", "kind"},
        foreign_keys=[("subscription_id", "subscriptions", "id"), ("reader_id", "readers", "id")],
    )
    db["payments"].create_index(["reader_id", "at"])
    db["checkouts"].create(
        {"idempotency_key": str, "reader_id": int, "subscription_id": int, "created_at": str,
         "decline_code": str},
        pk="idempotency_key",
        foreign_keys=[("reader_id", "readers", "id")],
    )
    db["readers"].add_column("comp_until", str)
    db["readers"].add_column("comp_by", str)
    db.execute(
        "update readers set comp_until = '9999-12-31T00:00:00.000000+00:00', comp_by = 'legacy flag'"
        " where is_subscriber = 1"
    )
    db["readers"].transform(drop={"is_subscriber"})


@migrations()
def m008_article_search(db):
    """Full-text search over articles (FTS5, kept current by triggers)."""
    db["articles"].enable_fts(["title", "dek", "body_md"], fts_version="FTS5",
                              create_triggers=True, tokenize="porter")


@migrations()
def m009_newsletters(db):
    """Enrollments, the consent record, issues and per-reader deliveries."""
    db["enrollments"].create(
        {"id": int, "reader_id": int, "list_id": str, "status": str, "created_at": str,
         "updated_at": str, "confirmed_at": str, "paused_at": str, "unsubscribed_at": str},
        pk="id", not_null={"reader_id", "list_id", "status", "created_at"},
        foreign_keys=[("reader_id", "readers", "id")],
    )
    db["enrollments"].create_index(["reader_id", "list_id"], unique=True)
    db["enrollments"].create_index(["list_id", "status"])
    db["consents"].create(
        {"id": int, "reader_id": int, "list_id": str, "action": str, "at": str, "wording": str,
         "source": str, "ip": str, "method": str},
        pk="id", not_null={"reader_id", "list_id", "action", "at", "wording"},
        foreign_keys=[("reader_id", "readers", "id")],
    )
    db["consents"].create_index(["reader_id"])
    db["newsletter_issues"].create(
        {"id": int, "list_id": str, "number": int, "scheduled_for": str, "created_at": str,
         "sent_at": str, "slugs": str, "recipients": int},
        pk="id", not_null={"list_id", "number", "scheduled_for"},
    )
    db["newsletter_issues"].create_index(["list_id", "number"], unique=True)
    db["deliveries"].create(
        {"issue_id": int, "reader_id": int, "at": str, "outbox_id": int},
        pk=("issue_id", "reader_id"),
        foreign_keys=[("issue_id", "newsletter_issues", "id"), ("reader_id", "readers", "id")],
    )
    db["readers"].add_column("email_verified_at", str)


@migrations()
def m010_outbox_delivery(db):
    """When a message was handed to SMTP (null: outbox only)."""
    db["outbox"].add_column("delivered_at", str)


@migrations()
def m011_experiment_unit(db):
    """The id experiments assign a reader by: their first visitor id, so variants stick across login."""
    db["readers"].add_column("experiment_unit", str)


@migrations()
def m012_lifecycle_notices(db):
    """Lifecycle mail sent per subscription: the unique key that makes each one go out once."""
    db["notices"].create(
        {"subscription_id": int, "kind": str, "at": str, "outbox_id": int},
        pk=("subscription_id", "kind", "at"),
        foreign_keys=[("subscription_id", "subscriptions", "id")],
    )


@migrations()
def m013_synthetic_readers(db):
    """Accounts made by *Generate traffic*, so business numbers can leave them out."""
    db["readers"].add_column("synthetic", int, not_null_default=0)

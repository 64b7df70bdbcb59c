-- A gate database made by the sqlite-utils migrations m001-m013 (commit 11299a9), dumped by iterdump
-- with one reader, one article and one unlock. Its FTS5 table is written as the CREATE VIRTUAL TABLE
-- and 'rebuild' sqlite-utils ran: iterdump's writable_schema form of a virtual table cannot be replayed.
BEGIN TRANSACTION;
CREATE TABLE "_sqlite_migrations" (
   "id" INTEGER PRIMARY KEY,
   "migration_set" TEXT,
   "name" TEXT,
   "applied_at" TEXT
);
INSERT INTO "_sqlite_migrations" VALUES(1,'gate','m001_readers_and_visitors','2025-01-01 00:00:00.000000+00:00');
INSERT INTO "_sqlite_migrations" VALUES(2,'gate','m002_articles','2025-01-01 00:00:00.000000+00:00');
INSERT INTO "_sqlite_migrations" VALUES(3,'gate','m003_unlocks','2025-01-01 00:00:00.000000+00:00');
INSERT INTO "_sqlite_migrations" VALUES(4,'gate','m004_events','2025-01-01 00:00:00.000000+00:00');
INSERT INTO "_sqlite_migrations" VALUES(5,'gate','m005_site_state','2025-01-01 00:00:00.000000+00:00');
INSERT INTO "_sqlite_migrations" VALUES(6,'gate','m006_login_tokens','2025-01-01 00:00:00.000000+00:00');
INSERT INTO "_sqlite_migrations" VALUES(7,'gate','m007_subscriptions','2025-01-01 00:00:00.000000+00:00');
INSERT INTO "_sqlite_migrations" VALUES(8,'gate','m008_article_search','2025-01-01 00:00:00.000000+00:00');
INSERT INTO "_sqlite_migrations" VALUES(9,'gate','m009_newsletters','2025-01-01 00:00:00.000000+00:00');
INSERT INTO "_sqlite_migrations" VALUES(10,'gate','m010_outbox_delivery','2025-01-01 00:00:00.000000+00:00');
INSERT INTO "_sqlite_migrations" VALUES(11,'gate','m011_experiment_unit','2025-01-01 00:00:00.000000+00:00');
INSERT INTO "_sqlite_migrations" VALUES(12,'gate','m012_lifecycle_notices','2025-01-01 00:00:00.000000+00:00');
INSERT INTO "_sqlite_migrations" VALUES(13,'gate','m013_synthetic_readers','2025-01-01 00:00:00.000000+00:00');
CREATE TABLE "articles" (
   "id" INTEGER PRIMARY KEY,
   "slug" TEXT NOT NULL,
   "title" TEXT NOT NULL,
   "dek" TEXT DEFAULT '',
   "author" TEXT DEFAULT '',
   "section" TEXT NOT NULL,
   "published_at" TEXT NOT NULL,
   "access_class" TEXT NOT NULL,
   "body_md" TEXT NOT NULL,
   "word_count" INTEGER,
   "synthetic" INTEGER DEFAULT 0
);
INSERT INTO "articles" VALUES(1,'an-old-story','An old story','Kept across the upgrade','','news','2025-01-01T00:00:00.000000+00:00','metered','Body text about lighthouses.',NULL,0);
CREATE VIRTUAL TABLE "articles_fts" USING FTS5 (
    "title", "dek", "body_md",
    tokenize='porter',
    content="articles"
);
CREATE TABLE "checkouts" (
   "idempotency_key" TEXT PRIMARY KEY,
   "reader_id" INTEGER REFERENCES "readers"("id"),
   "subscription_id" INTEGER,
   "created_at" TEXT,
   "decline_code" TEXT
);
CREATE TABLE "clock" (
   "id" INTEGER PRIMARY KEY,
   "mode" TEXT,
   "offset_seconds" REAL,
   "frozen_at" TEXT
);
CREATE TABLE "consents" (
   "id" INTEGER PRIMARY KEY,
   "reader_id" INTEGER NOT NULL REFERENCES "readers"("id"),
   "list_id" TEXT NOT NULL,
   "action" TEXT NOT NULL,
   "at" TEXT NOT NULL,
   "wording" TEXT NOT NULL,
   "source" TEXT,
   "ip" TEXT,
   "method" TEXT
);
CREATE TABLE "deliveries" (
   "issue_id" INTEGER REFERENCES "newsletter_issues"("id"),
   "reader_id" INTEGER REFERENCES "readers"("id"),
   "at" TEXT,
   "outbox_id" INTEGER,
   PRIMARY KEY ("issue_id", "reader_id")
);
CREATE TABLE "enrollments" (
   "id" INTEGER PRIMARY KEY,
   "reader_id" INTEGER NOT NULL REFERENCES "readers"("id"),
   "list_id" TEXT NOT NULL,
   "status" TEXT NOT NULL,
   "created_at" TEXT NOT NULL,
   "updated_at" TEXT,
   "confirmed_at" TEXT,
   "paused_at" TEXT,
   "unsubscribed_at" TEXT
);
CREATE TABLE "events" (
   "id" INTEGER PRIMARY KEY,
   "at" TEXT NOT NULL,
   "type" TEXT NOT NULL,
   "reader_id" INTEGER,
   "visitor_id" TEXT,
   "slug" TEXT,
   "data" TEXT
);
CREATE TABLE "login_tokens" (
   "jti" TEXT PRIMARY KEY,
   "reader_id" INTEGER REFERENCES "readers"("id"),
   "created_at" TEXT,
   "used_at" TEXT
);
CREATE TABLE "newsletter_issues" (
   "id" INTEGER PRIMARY KEY,
   "list_id" TEXT NOT NULL,
   "number" INTEGER NOT NULL,
   "scheduled_for" TEXT NOT NULL,
   "created_at" TEXT,
   "sent_at" TEXT,
   "slugs" TEXT,
   "recipients" INTEGER
);
CREATE TABLE "notices" (
   "subscription_id" INTEGER REFERENCES "subscriptions"("id"),
   "kind" TEXT,
   "at" TEXT,
   "outbox_id" INTEGER,
   PRIMARY KEY ("subscription_id", "kind", "at")
);
CREATE TABLE "outbox" (
   "id" INTEGER PRIMARY KEY,
   "created_at" TEXT NOT NULL,
   "kind" TEXT,
   "to_addr" TEXT NOT NULL,
   "from_addr" TEXT,
   "subject" TEXT NOT NULL,
   "headers" TEXT,
   "body_text" TEXT,
   "body_html" TEXT
, "delivered_at" TEXT);
CREATE TABLE "payments" (
   "id" INTEGER PRIMARY KEY,
   "subscription_id" INTEGER REFERENCES "subscriptions"("id"),
   "reader_id" INTEGER NOT NULL REFERENCES "readers"("id"),
   "at" TEXT NOT NULL,
   "amount_cents" INTEGER NOT NULL,
   "currency" TEXT NOT NULL,
   "outcome" TEXT NOT NULL,
   "decline_code" TEXT,
   "kind" TEXT NOT NULL,
   "card_last4" TEXT
);
CREATE TABLE "readers" (
   "id" INTEGER PRIMARY KEY,
   "email" TEXT NOT NULL,
   "password_hash" TEXT,
   "is_admin" INTEGER DEFAULT '0',
   "session_token" TEXT NOT NULL,
   "created_at" TEXT NOT NULL,
   "comp_until" TEXT,
   "comp_by" TEXT
, "email_verified_at" TEXT, "experiment_unit" TEXT, "synthetic" INTEGER NOT NULL DEFAULT 0);
INSERT INTO "readers" VALUES(1,'old@example.com',NULL,0,'tok','2025-01-02T03:04:05.000000+00:00',NULL,NULL,NULL,NULL,0);
CREATE TABLE "settings" (
   "key" TEXT PRIMARY KEY,
   "value" TEXT
);
CREATE TABLE "subscriptions" (
   "id" INTEGER PRIMARY KEY,
   "reader_id" INTEGER NOT NULL REFERENCES "readers"("id"),
   "plan_id" TEXT NOT NULL,
   "status" TEXT NOT NULL,
   "card_last4" TEXT,
   "created_at" TEXT NOT NULL,
   "anchor" TEXT,
   "current_period_start" TEXT,
   "current_period_end" TEXT,
   "trial_end" TEXT,
   "cancel_at_period_end" INTEGER DEFAULT 0,
   "past_due_since" TEXT,
   "retry_count" INTEGER DEFAULT 0,
   "next_retry_at" TEXT,
   "ended_at" TEXT
);
CREATE TABLE "unlocks" (
   "id" INTEGER PRIMARY KEY,
   "meter_key" TEXT NOT NULL,
   "slug" TEXT NOT NULL,
   "window_key" TEXT NOT NULL,
   "unlocked_at" TEXT NOT NULL
);
INSERT INTO "unlocks" VALUES(1,'reader:1','an-old-story','2025-01','2025-01-02T03:04:05.000000+00:00');
CREATE TABLE "visitors" (
   "id" TEXT PRIMARY KEY,
   "created_at" TEXT,
   "reader_id" INTEGER REFERENCES "readers"("id")
);
CREATE UNIQUE INDEX "idx__sqlite_migrations_migration_set_name"
    ON "_sqlite_migrations" ("migration_set", "name");
CREATE UNIQUE INDEX "idx_articles_slug"
    ON "articles" ("slug");
CREATE INDEX "idx_articles_published_at"
    ON "articles" ("published_at");
CREATE INDEX "idx_articles_section_published_at"
    ON "articles" ("section", "published_at");
CREATE UNIQUE INDEX "idx_unlocks_meter_key_slug_window_key"
    ON "unlocks" ("meter_key", "slug", "window_key");
CREATE INDEX "idx_unlocks_meter_key_unlocked_at"
    ON "unlocks" ("meter_key", "unlocked_at");
CREATE INDEX "idx_events_type_at"
    ON "events" ("type", "at");
CREATE INDEX "idx_events_reader_id_at"
    ON "events" ("reader_id", "at");
CREATE INDEX "idx_outbox_to_addr_created_at"
    ON "outbox" ("to_addr", "created_at");
CREATE INDEX "idx_subscriptions_reader_id"
    ON "subscriptions" ("reader_id");
CREATE INDEX "idx_subscriptions_status_current_period_end"
    ON "subscriptions" ("status", "current_period_end");
CREATE INDEX "idx_payments_reader_id_at"
    ON "payments" ("reader_id", "at");
CREATE UNIQUE INDEX "idx_readers_session_token"
    ON "readers" ("session_token");
CREATE UNIQUE INDEX "idx_readers_email"
    ON "readers" ("email");
CREATE TRIGGER "articles_ai" AFTER INSERT ON "articles" BEGIN
  INSERT INTO "articles_fts" (rowid, "title", "dek", "body_md") VALUES (new.rowid, new."title", new."dek", new."body_md");
END;
CREATE TRIGGER "articles_ad" AFTER DELETE ON "articles" BEGIN
  INSERT INTO "articles_fts" ("articles_fts", rowid, "title", "dek", "body_md") VALUES('delete', old.rowid, old."title", old."dek", old."body_md");
END;
CREATE TRIGGER "articles_au" AFTER UPDATE ON "articles" BEGIN
  INSERT INTO "articles_fts" ("articles_fts", rowid, "title", "dek", "body_md") VALUES('delete', old.rowid, old."title", old."dek", old."body_md");
  INSERT INTO "articles_fts" (rowid, "title", "dek", "body_md") VALUES (new.rowid, new."title", new."dek", new."body_md");
END;
CREATE UNIQUE INDEX "idx_enrollments_reader_id_list_id"
    ON "enrollments" ("reader_id", "list_id");
CREATE INDEX "idx_enrollments_list_id_status"
    ON "enrollments" ("list_id", "status");
CREATE INDEX "idx_consents_reader_id"
    ON "consents" ("reader_id");
CREATE UNIQUE INDEX "idx_newsletter_issues_list_id_number"
    ON "newsletter_issues" ("list_id", "number");
INSERT INTO articles_fts(articles_fts) VALUES('rebuild');
COMMIT;

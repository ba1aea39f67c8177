-- 0006: a named holder for every API key (four eyes compares people, not keys), and the audit log:
-- append-only, each entry carrying the hash of the previous one, so an edited or deleted entry shows.
-- `brands` (JSON array) are the brands the action concerned: who may read the entry.
ALTER TABLE api_keys ADD COLUMN holder TEXT NOT NULL DEFAULT '';

CREATE TABLE audit_log (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    at            BIGINT NOT NULL,
    actor_key_id  TEXT NOT NULL,
    actor_holder  TEXT NOT NULL,
    action        TEXT NOT NULL,
    target        TEXT NOT NULL,
    brands        TEXT NOT NULL,
    detail        TEXT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE
);

-- 0001: API keys and the event log. The same number exists for PostgreSQL (../postgres/); a landed
-- migration is never edited.

-- API keys: only the sha256 of a key is stored; `brands` is a JSON array of brand ids.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    brands      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

-- The event log: the durable source of every profile. Idempotent on (brand_id, event_id); `body_hash`
-- tells a replay (same body) from a conflicting reuse of an id. `payload` holds no personal data.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    brand_id     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    player_id    TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    occurred_at  BIGINT NOT NULL,
    received_at  BIGINT NOT NULL,
    trace_id     TEXT,
    payload      TEXT NOT NULL,
    body_hash    TEXT NOT NULL,
    UNIQUE (brand_id, event_id)
);
CREATE INDEX events_by_player ON events (brand_id, player_id, seq);

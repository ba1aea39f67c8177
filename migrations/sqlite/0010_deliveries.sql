-- 0010: the outbox and what happens to each message. A delivery row is written — with the gate's
-- decision, its reasons and basis — before anything leaves; workers claim due rows (status and lease),
-- call the channel's provider with the delivery id as idempotency key, and record every step in
-- delivery_events. `counted_at` is when the gate allowed the message: from then on it counts against
-- the player's caps, dedup window and campaign cooldown (unless it ends suppressed or dead-lettered).
CREATE TABLE deliveries (
    delivery_id          TEXT PRIMARY KEY,
    brand_id             TEXT NOT NULL,
    player_id            TEXT NOT NULL,
    idempotency_key      TEXT NOT NULL,
    request_hash         TEXT NOT NULL,
    channel              TEXT NOT NULL,
    template_id          TEXT NOT NULL,
    locale               TEXT NOT NULL,
    class                TEXT NOT NULL,
    product              TEXT,
    bonus_offer          BIGINT NOT NULL,
    priority             TEXT NOT NULL,
    campaign_id          TEXT,
    frequency_policy     TEXT NOT NULL,
    subject              TEXT,
    body                 TEXT,
    status               TEXT NOT NULL,
    reasons              TEXT NOT NULL,
    basis                TEXT,
    counted_at           BIGINT,
    attempts             BIGINT NOT NULL,
    next_attempt_at      BIGINT,
    lease_until          BIGINT,
    provider_call_at     BIGINT,
    provider             TEXT,
    provider_message_id  TEXT,
    last_error           TEXT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    read_at              BIGINT,
    UNIQUE (brand_id, idempotency_key)
);
CREATE INDEX deliveries_by_player ON deliveries (brand_id, player_id, counted_at);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);

-- The status history of each delivery: gate decisions, attempts, provider answers, feedback.
CREATE TABLE delivery_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id  TEXT NOT NULL,
    at           BIGINT NOT NULL,
    status       TEXT NOT NULL,
    detail       TEXT NOT NULL
);
CREATE INDEX delivery_events_by_delivery ON delivery_events (delivery_id, seq);

-- Feedback from channels, once per (delivery, event, time): a repeated report changes nothing.
CREATE TABLE delivery_feedback (
    delivery_id  TEXT NOT NULL,
    event        TEXT NOT NULL,
    occurred_at  BIGINT NOT NULL,
    received_at  BIGINT NOT NULL,
    source       TEXT NOT NULL,
    PRIMARY KEY (delivery_id, event, occurred_at)
);

-- One row per player that was ever sent to; a send locks it, so that caps are counted and reserved by
-- one sender at a time (PostgreSQL; on SQLite the write transaction already serialises them).
CREATE TABLE send_locks (
    brand_id   TEXT NOT NULL,
    player_id  TEXT NOT NULL,
    sends      BIGINT NOT NULL,
    PRIMARY KEY (brand_id, player_id)
);

-- A hard bounce marks a contact invalid: nothing more is sent to it until it changes.
ALTER TABLE contacts ADD COLUMN invalid_since BIGINT;

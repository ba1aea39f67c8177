-- 0011: read the log in an order no transaction can still write below, and set aside what cannot be
-- applied.
--
-- On PostgreSQL concurrent requests commit in any order, so `seq` values become visible out of order: a
-- consumer that read "seq > offset" could pass over an event whose transaction committed after a higher
-- seq was read. Each event now records the id of the transaction that wrote it (`tx_id`), and consumers
-- read in (tx_id, seq) order and only below the oldest transaction still running (the snapshot's xmin):
-- no row can ever appear below a position already read. Rows written before this migration keep tx_id 0,
-- and so keep their place before everything new; offsets keep their seq with tx_id 0.
ALTER TABLE events ADD COLUMN tx_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ALTER COLUMN tx_id SET DEFAULT txid_current();
CREATE INDEX events_by_commit ON events (tx_id, seq);
-- "Has this player an event the profiles have not taken yet?", asked before each decision and send.
CREATE INDEX events_by_player_commit ON events (brand_id, player_id, tx_id, seq);
ALTER TABLE consumer_offsets ADD COLUMN tx_id BIGINT NOT NULL DEFAULT 0;

-- An event a consumer could not apply (an aggregate out of range, a payload it cannot read): kept with
-- its error, passed over, so one event never stops a consumer for every other player.
CREATE TABLE set_aside_events (
    consumer      TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    error         TEXT NOT NULL,
    set_aside_at  BIGINT NOT NULL,
    PRIMARY KEY (consumer, seq)
);

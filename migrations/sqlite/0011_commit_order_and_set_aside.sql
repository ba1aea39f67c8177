-- 0011: read the log in commit order, and set aside what cannot be applied. See the PostgreSQL
-- migration of the same number: there `tx_id` is the writing transaction's id. SQLite has one writer at
-- a time, so `seq` is already commit order and `tx_id` stays 0; the column keeps one query for both.
ALTER TABLE events ADD COLUMN tx_id BIGINT NOT NULL DEFAULT 0;
CREATE INDEX events_by_commit ON events (tx_id, seq);
-- "Has this player an event the profiles have not taken yet?", asked before each decision and send.
CREATE INDEX events_by_player_commit ON events (brand_id, player_id, tx_id, seq);
ALTER TABLE consumer_offsets ADD COLUMN tx_id BIGINT NOT NULL DEFAULT 0;

-- SQLite turns an integer sum that overflows into a floating-point value without a word; refuse it, as
-- PostgreSQL does, so that an aggregate never silently becomes a REAL nothing can read back.
CREATE TRIGGER player_days_stay_integers BEFORE UPDATE ON player_days
WHEN typeof(NEW.deposits) <> 'integer' OR typeof(NEW.deposit_sum) <> 'integer'
  OR typeof(NEW.stakes) <> 'integer' OR typeof(NEW.wins) <> 'integer'
  OR typeof(NEW.bets) <> 'integer' OR typeof(NEW.sessions) <> 'integer'
BEGIN
    SELECT RAISE(ABORT, 'integer overflow in player_days');
END;
CREATE TRIGGER player_stakes_stay_integers BEFORE UPDATE ON player_stakes
WHEN typeof(NEW.stake_sum) <> 'integer'
BEGIN
    SELECT RAISE(ABORT, 'integer overflow in player_stakes');
END;

CREATE TABLE set_aside_events (
    consumer      TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    error         TEXT NOT NULL,
    set_aside_at  BIGINT NOT NULL,
    PRIMARY KEY (consumer, seq)
);

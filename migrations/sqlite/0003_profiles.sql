-- 0003: profiles kept by the `profiles` consumer, and consumer offsets. `state` is the profile's own
-- state (JSON, no personal data); daily aggregates (in the player's own calendar days) and stake sums
-- per provider and category feed the windowed features computed at read time.
CREATE TABLE profiles (
    brand_id     TEXT NOT NULL,
    player_id    TEXT NOT NULL,
    state        TEXT NOT NULL,
    updated_seq  BIGINT NOT NULL,
    PRIMARY KEY (brand_id, player_id)
);

CREATE TABLE player_days (
    brand_id     TEXT NOT NULL,
    player_id    TEXT NOT NULL,
    day          BIGINT NOT NULL,
    deposits     BIGINT NOT NULL,
    deposit_sum  BIGINT NOT NULL,
    stakes       BIGINT NOT NULL,
    wins         BIGINT NOT NULL,
    bets         BIGINT NOT NULL,
    sessions     BIGINT NOT NULL,
    PRIMARY KEY (brand_id, player_id, day)
);

CREATE TABLE player_stakes (
    brand_id   TEXT NOT NULL,
    player_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    stake_sum  BIGINT NOT NULL,
    PRIMARY KEY (brand_id, player_id, kind, name)
);

-- How far each bus consumer got in the event log; moved in the same transaction as its writes.
CREATE TABLE consumer_offsets (
    consumer  TEXT PRIMARY KEY,
    position  BIGINT NOT NULL
);
-- The row exists from the start, so that consumers in several processes always find one to lock.
INSERT INTO consumer_offsets (consumer, position) VALUES ('profiles', 0);

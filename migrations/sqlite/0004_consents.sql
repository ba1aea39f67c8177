-- 0004: consents, versioned. A change never overwrites: each change of a player's preferences is a new
-- version holding the items it changed, with when and its source. The current state of an item is its
-- row of highest version. `scope` is channel, product or profiling.
CREATE TABLE consents (
    brand_id     TEXT NOT NULL,
    player_id    TEXT NOT NULL,
    version      BIGINT NOT NULL,
    scope        TEXT NOT NULL,
    name         TEXT NOT NULL,
    granted      BIGINT NOT NULL,
    source       TEXT NOT NULL,
    recorded_at  BIGINT NOT NULL,
    PRIMARY KEY (brand_id, player_id, version, scope, name)
);

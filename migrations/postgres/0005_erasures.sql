-- 0005: erased players, by the sha256 of brand and player id: events for them are refused afterwards, so
-- a late or re-sent event cannot bring an erased player back.
CREATE TABLE erased_players (
    brand_id     TEXT NOT NULL,
    player_hash  TEXT NOT NULL,
    erased_at    BIGINT NOT NULL,
    PRIMARY KEY (brand_id, player_hash)
);

-- 0018: events_by_player (brand, player, seq) duplicated events_by_player_commit (brand, player, tx_id,
-- seq), which serves every read of a player's events (on SQLite tx_id is always 0): one index less to
-- keep up for every event written.
DROP INDEX events_by_player;

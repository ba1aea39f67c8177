-- 0012: an e-mail dead-lettered because it may have reached the relay before a crash (`in_doubt`) may
-- have been delivered: it keeps its place under the player's caps, unlike other dead letters.
ALTER TABLE deliveries ADD COLUMN in_doubt BIGINT NOT NULL DEFAULT 0;

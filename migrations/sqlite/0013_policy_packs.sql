-- 0013: jurisdiction policy packs as data. Each version of a pack is kept (never edited): the body is
-- the pack as compliance wrote it, every value with its legal source. A version is in force once a
-- compliance officer other than its proposer approved it; the newest approved version of a pack is the
-- one the gate applies. The shipped packs (packs/*.toml) are the first versions of a fresh database.
CREATE TABLE policy_packs (
    pack         TEXT NOT NULL,
    version      TEXT NOT NULL,
    body         TEXT NOT NULL,
    proposed_by  TEXT NOT NULL,
    proposed_at  BIGINT NOT NULL,
    approved_by  TEXT,
    approved_at  BIGINT,
    PRIMARY KEY (pack, version)
);

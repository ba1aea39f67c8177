-- 0014: segments. A segment is a name per brand; the segment plugin bound for (brand, player's
-- jurisdiction, segment world, the segment's name) decides who is in it, so bindings gain a slot: the
-- segment's name for segment bindings, '' for the world's general binding.
--
-- Memberships are spans: a row per entry, closed when the player leaves (left_at), with what put them
-- there and what took them out (the plugin version, the event or sweep, the reason and score). At most
-- one open span per (segment, player).
ALTER TABLE bindings ADD COLUMN slot TEXT NOT NULL DEFAULT '';
DROP INDEX bindings_current;
CREATE INDEX bindings_current ON bindings (brand_id, jurisdiction, world, slot, replaced_at);

CREATE TABLE segments (
    id             TEXT PRIMARY KEY,
    brand_id       TEXT NOT NULL,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL,
    -- A marketing segment: a player whose RG state blocks marketing is never in it.
    marketing      BIGINT NOT NULL,
    sweep_minutes  BIGINT NOT NULL,
    next_sweep_at  BIGINT NOT NULL,
    -- The rule's live bindings when the last sweep was started: a change (swap, rollback) starts one.
    binding_mark   TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    UNIQUE (brand_id, name)
);

CREATE TABLE segment_members (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    segment_id     TEXT NOT NULL REFERENCES segments (id),
    brand_id       TEXT NOT NULL,
    player_id      TEXT NOT NULL,
    jurisdiction   TEXT NOT NULL,
    entered_at     BIGINT NOT NULL,
    -- What decided the entry: the plugin version and binding, the event (log seq) or the sweep.
    plugin_id      TEXT NOT NULL,
    binding_id     TEXT NOT NULL,
    via            TEXT NOT NULL,
    reason         TEXT,
    score          REAL,
    decision_seq   BIGINT,
    left_at        BIGINT,
    left_via       TEXT,
    left_reason    TEXT,
    left_decision_seq BIGINT
);
CREATE UNIQUE INDEX segment_members_open ON segment_members (segment_id, player_id) WHERE left_at IS NULL;
CREATE INDEX segment_members_by_player ON segment_members (brand_id, player_id);

CREATE TABLE segment_sweeps (
    id             TEXT PRIMARY KEY,
    segment_id     TEXT NOT NULL REFERENCES segments (id),
    cause          TEXT NOT NULL,
    requested_by   TEXT NOT NULL,
    state          TEXT NOT NULL,
    started_at     BIGINT NOT NULL,
    -- Moved while it runs: a sweep whose host died is taken up again.
    heartbeat_at   BIGINT,
    finished_at    BIGINT,
    figures        TEXT NOT NULL,
    error          TEXT
);
CREATE INDEX segment_sweeps_by_segment ON segment_sweeps (segment_id, started_at);

-- 0008: bindings of approved plugin versions to (brand, jurisdiction, world), '*' being the brand-wide
-- default; a change never edits a binding, it ends the current one (replaced_at) and adds the next, so
-- the table is also the history. And decision records: what ran, on which input, with what result.
CREATE TABLE bindings (
    id            TEXT PRIMARY KEY,
    brand_id      TEXT NOT NULL,
    jurisdiction  TEXT NOT NULL,
    world         TEXT NOT NULL,
    plugin_id     TEXT NOT NULL REFERENCES plugin_versions (id),
    config        TEXT NOT NULL,
    limits        TEXT NOT NULL,
    bound_at      BIGINT NOT NULL,
    bound_by      TEXT NOT NULL,
    replaced_at   BIGINT
);
CREATE INDEX bindings_current ON bindings (brand_id, jurisdiction, world, replaced_at);

CREATE TABLE decisions (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    at            BIGINT NOT NULL,
    brand_id      TEXT NOT NULL,
    player_id     TEXT NOT NULL,
    world         TEXT NOT NULL,
    plugin_id     TEXT NOT NULL,
    binding_id    TEXT NOT NULL,
    input_hash    TEXT NOT NULL,
    output        TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    fuel          BIGINT NOT NULL,
    duration_ns   BIGINT NOT NULL,
    trace_id      TEXT
);
CREATE INDEX decisions_by_player ON decisions (brand_id, player_id, seq);

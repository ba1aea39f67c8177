-- 0016: triggers and journeys. Both are versioned per brand: editing writes a new version, and the
-- active version is the one that runs (NULL: inactive). A version records who wrote it and who
-- activated it, for the four-eyes rule on sensitive triggers.
CREATE TABLE triggers (
    id             TEXT PRIMARY KEY,
    brand_id       TEXT NOT NULL,
    name           TEXT NOT NULL,
    latest_version INTEGER NOT NULL,
    active_version INTEGER,
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (brand_id, name)
);

CREATE TABLE trigger_versions (
    trigger_id     TEXT NOT NULL REFERENCES triggers (id),
    version        INTEGER NOT NULL,
    definition     TEXT NOT NULL,
    -- Sends marketing (inactive until activated) / worth more than the brand's threshold (four eyes).
    marketing      INTEGER NOT NULL,
    sensitive      INTEGER NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    activated_by   TEXT,
    activated_at   INTEGER,
    PRIMARY KEY (trigger_id, version)
);

-- What a trigger did with an event it matched: at most one row per (trigger, event), written in the
-- transaction that moves the consumer's offset, with the decision, delivery or journey run behind it.
CREATE TABLE trigger_fires (
    trigger_id     TEXT NOT NULL,
    version        INTEGER NOT NULL,
    brand_id       TEXT NOT NULL,
    player_id      TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    event_seq      INTEGER NOT NULL,
    event_type     TEXT NOT NULL,
    event_at       INTEGER NOT NULL,
    -- fired, suppressed, deduplicated, cooldown, not_entered, failed
    outcome        TEXT NOT NULL,
    reason         TEXT,
    dedup_value    TEXT,
    decision_seq   INTEGER,
    delivery_id    TEXT,
    run_id         TEXT,
    at             INTEGER NOT NULL,
    PRIMARY KEY (trigger_id, event_id)
);
CREATE INDEX trigger_fires_by_player ON trigger_fires (brand_id, player_id, trigger_id, at);

CREATE TABLE journeys (
    id             TEXT PRIMARY KEY,
    brand_id       TEXT NOT NULL,
    name           TEXT NOT NULL,
    latest_version INTEGER NOT NULL,
    active_version INTEGER,
    -- Paused: players stay where they are; no step runs.
    paused         INTEGER NOT NULL DEFAULT 0,
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (brand_id, name)
);

CREATE TABLE journey_versions (
    journey_id     TEXT NOT NULL REFERENCES journeys (id),
    version        INTEGER NOT NULL,
    definition     TEXT NOT NULL,
    marketing      INTEGER NOT NULL,
    sensitive      INTEGER NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    activated_by   TEXT,
    activated_at   INTEGER,
    PRIMARY KEY (journey_id, version)
);

-- A player's place in a journey, on the version they entered. `step` counts the steps taken: a step
-- moves the run only from the step it read, so that no step runs twice.
CREATE TABLE journey_runs (
    id             TEXT PRIMARY KEY,
    journey_id     TEXT NOT NULL,
    version        INTEGER NOT NULL,
    brand_id       TEXT NOT NULL,
    player_id      TEXT NOT NULL,
    node           TEXT NOT NULL,
    step           INTEGER NOT NULL,
    -- active, completed, exited
    state          TEXT NOT NULL,
    due_at         INTEGER,
    -- A wait for events: their types (JSON array); due_at is its timeout.
    waiting_for    TEXT,
    entered_at     INTEGER NOT NULL,
    entered_via    TEXT NOT NULL,
    -- The log position (tx, seq) of the event it entered on: earlier events (a replay) do not move it.
    entered_seq    INTEGER NOT NULL,
    entered_tx     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    ended_at       INTEGER,
    exit_reason    TEXT,
    lease_until    INTEGER
);
CREATE INDEX journey_runs_due ON journey_runs (state, due_at);
CREATE INDEX journey_runs_by_player ON journey_runs (brand_id, player_id, journey_id);

-- Each step taken: the node, what it did (delivery and the gate's answer, decision, branch, exit).
CREATE TABLE journey_steps (
    run_id         TEXT NOT NULL,
    step           INTEGER NOT NULL,
    node           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    at             INTEGER NOT NULL,
    delivery_id    TEXT,
    status         TEXT,
    reason         TEXT,
    detail         TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);

-- When the host accepted the event that caused a delivery (a trigger's send): event → provider latency.
ALTER TABLE deliveries ADD COLUMN caused_at INTEGER;

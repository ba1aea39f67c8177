-- 0016: triggers and journeys. Both are versioned per brand: editing writes a new version, and the
-- active version is the one that runs (NULL: inactive). A version records who wrote it and who
-- activated it, for the four-eyes rule on sensitive triggers.
CREATE TABLE triggers (
    id             TEXT PRIMARY KEY,
    brand_id       TEXT NOT NULL,
    name           TEXT NOT NULL,
    latest_version BIGINT NOT NULL,
    active_version BIGINT,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    UNIQUE (brand_id, name)
);

CREATE TABLE trigger_versions (
    trigger_id     TEXT NOT NULL REFERENCES triggers (id),
    version        BIGINT NOT NULL,
    definition     TEXT NOT NULL,
    -- Sends marketing (inactive until activated) / worth more than the brand's threshold (four eyes).
    marketing      BIGINT NOT NULL,
    sensitive      BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    activated_by   TEXT,
    activated_at   BIGINT,
    PRIMARY KEY (trigger_id, version)
);

-- What a trigger did with an event it matched: at most one row per (trigger, event), written in the
-- transaction that moves the consumer's offset, with the decision, delivery or journey run behind it.
CREATE TABLE trigger_fires (
    trigger_id     TEXT NOT NULL,
    version        BIGINT NOT NULL,
    brand_id       TEXT NOT NULL,
    player_id      TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    event_seq      BIGINT NOT NULL,
    event_type     TEXT NOT NULL,
    event_at       BIGINT NOT NULL,
    -- fired, suppressed, deduplicated, cooldown, not_entered, failed
    outcome        TEXT NOT NULL,
    reason         TEXT,
    dedup_value    TEXT,
    decision_seq   BIGINT,
    delivery_id    TEXT,
    run_id         TEXT,
    at             BIGINT NOT NULL,
    PRIMARY KEY (trigger_id, event_id)
);
CREATE INDEX trigger_fires_by_player ON trigger_fires (brand_id, player_id, trigger_id, at);

CREATE TABLE journeys (
    id             TEXT PRIMARY KEY,
    brand_id       TEXT NOT NULL,
    name           TEXT NOT NULL,
    latest_version BIGINT NOT NULL,
    active_version BIGINT,
    -- Paused: players stay where they are; no step runs.
    paused         BIGINT NOT NULL DEFAULT 0,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    UNIQUE (brand_id, name)
);

CREATE TABLE journey_versions (
    journey_id     TEXT NOT NULL REFERENCES journeys (id),
    version        BIGINT NOT NULL,
    definition     TEXT NOT NULL,
    marketing      BIGINT NOT NULL,
    sensitive      BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    activated_by   TEXT,
    activated_at   BIGINT,
    PRIMARY KEY (journey_id, version)
);

-- A player's place in a journey, on the version they entered. `step` counts the steps taken: a step
-- moves the run only from the step it read, so that no step runs twice.
CREATE TABLE journey_runs (
    id             TEXT PRIMARY KEY,
    journey_id     TEXT NOT NULL,
    version        BIGINT NOT NULL,
    brand_id       TEXT NOT NULL,
    player_id      TEXT NOT NULL,
    node           TEXT NOT NULL,
    step           BIGINT NOT NULL,
    -- active, completed, exited
    state          TEXT NOT NULL,
    due_at         BIGINT,
    -- A wait for events: their types (JSON array); due_at is its timeout.
    waiting_for    TEXT,
    entered_at     BIGINT NOT NULL,
    entered_via    TEXT NOT NULL,
    -- The log position (tx, seq) of the event it entered on: earlier events (a replay) do not move it.
    entered_seq    BIGINT NOT NULL,
    entered_tx     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    ended_at       BIGINT,
    exit_reason    TEXT,
    lease_until    BIGINT
);
CREATE INDEX journey_runs_due ON journey_runs (state, due_at);
CREATE INDEX journey_runs_by_player ON journey_runs (brand_id, player_id, journey_id);

-- Each step taken: the node, what it did (delivery and the gate's answer, decision, branch, exit).
CREATE TABLE journey_steps (
    run_id         TEXT NOT NULL,
    step           BIGINT NOT NULL,
    node           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    at             BIGINT NOT NULL,
    delivery_id    TEXT,
    status         TEXT,
    reason         TEXT,
    detail         TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);

-- When the host accepted the event that caused a delivery (a trigger's send): event → provider latency.
ALTER TABLE deliveries ADD COLUMN caused_at BIGINT;

-- 0017: offers and the bonus ledger. Offer templates are versioned per brand like triggers; an offer is
-- one generated proposal with its explanation; a bonus is an accepted offer in the ledger, moved only
-- forward, each move with its event, plugin version and reason; platform calls are the outbox of
-- signed webhooks that tell the platform's wallet what to grant or release.
CREATE TABLE offer_templates (
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

CREATE TABLE offer_template_versions (
    template_id    TEXT NOT NULL REFERENCES offer_templates (id),
    version        INTEGER NOT NULL,
    definition     TEXT NOT NULL,
    marketing      INTEGER NOT NULL,
    sensitive      INTEGER NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    activated_by   TEXT,
    activated_at   INTEGER,
    PRIMARY KEY (template_id, version)
);

CREATE TABLE offers (
    offer_id         TEXT PRIMARY KEY,
    brand_id         TEXT NOT NULL,
    player_id        TEXT NOT NULL,
    template_id      TEXT NOT NULL,
    template_version INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    params           TEXT NOT NULL,
    -- The offer's worth (what the player may get) and its cost to the operator, in minor units.
    value_minor      INTEGER NOT NULL,
    cost_minor       INTEGER NOT NULL,
    currency         TEXT NOT NULL,
    -- pending_approval | issued | accepted | declined | expired
    state            TEXT NOT NULL,
    channel          TEXT NOT NULL,
    intent           TEXT NOT NULL,
    explanation      TEXT NOT NULL,
    decision_seq     INTEGER,
    created_by       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    approved_by      TEXT,
    approved_at      INTEGER,
    updated_at       INTEGER NOT NULL,
    -- A message that carries the offer, sent once a compliance officer approves it.
    pending_send     TEXT
);
CREATE INDEX offers_by_player ON offers (brand_id, player_id, created_at);
CREATE INDEX offers_open ON offers (state, expires_at);

-- Economy counters per UTC day: brand budget, template budget, a player's daily maximum. A generation
-- adds its cost with one conditional upsert, so concurrent requests never overspend.
CREATE TABLE offer_spend (
    brand_id     TEXT NOT NULL,
    scope        TEXT NOT NULL,
    day          TEXT NOT NULL,
    spent_minor  INTEGER NOT NULL,
    PRIMARY KEY (brand_id, scope, day)
);

CREATE TABLE bonuses (
    bonus_id          TEXT PRIMARY KEY,
    brand_id          TEXT NOT NULL,
    player_id         TEXT NOT NULL,
    offer_id          TEXT NOT NULL UNIQUE,
    template_id       TEXT NOT NULL,
    template_version  INTEGER NOT NULL,
    kind              TEXT NOT NULL,
    conflict_group    TEXT,
    -- issued | active | locked | completed | forfeited | expired
    state             TEXT NOT NULL,
    terms             TEXT NOT NULL,
    currency          TEXT NOT NULL,
    granted_minor     INTEGER NOT NULL,
    wagering_required_minor INTEGER NOT NULL,
    wagering_done_minor     INTEGER NOT NULL,
    -- category -> minor units counted towards wagering
    contributions     TEXT NOT NULL,
    granted_at        INTEGER,
    expires_at        INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    -- Moves made: a move applies only to the revision it read, so two writers never undo each other.
    rev               INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX bonuses_by_player ON bonuses (brand_id, player_id, state);
-- One live bonus per conflict group and player, whatever races.
CREATE UNIQUE INDEX bonuses_live_group ON bonuses (brand_id, player_id, conflict_group)
    WHERE conflict_group IS NOT NULL AND state IN ('issued', 'active', 'locked');

CREATE TABLE bonus_moves (
    bonus_id      TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    action        TEXT NOT NULL,
    from_state    TEXT,
    to_state      TEXT NOT NULL,
    amount_minor  INTEGER,
    event_id      TEXT,
    plugin_id     TEXT,
    decision_seq  INTEGER,
    reason        TEXT NOT NULL,
    detail        TEXT,
    at            INTEGER NOT NULL,
    PRIMARY KEY (bonus_id, seq)
);

-- Events the bonus engine applied, so a replay of the log changes no ledger.
CREATE TABLE bonus_events (
    brand_id   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    PRIMARY KEY (brand_id, event_id)
);

CREATE TABLE platform_calls (
    call_id          TEXT PRIMARY KEY,
    brand_id         TEXT NOT NULL,
    player_id        TEXT NOT NULL,
    bonus_id         TEXT NOT NULL,
    kind             TEXT NOT NULL,
    body             TEXT NOT NULL,
    -- queued | sending | sent | dead
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    lease_until      INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    sent_at          INTEGER
);
CREATE INDEX platform_calls_due ON platform_calls (status, next_attempt_at);

-- 0007: the plugin registry. Component bytes live content-addressed outside the database (by sha256);
-- a version row holds its canonical manifest, and approvals hold compliance signatures over that
-- manifest plus the sha256, checked again whenever the version is loaded.
CREATE TABLE plugin_versions (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    version             TEXT NOT NULL,
    world               TEXT NOT NULL,
    wit_version         TEXT NOT NULL,
    sha256              TEXT NOT NULL UNIQUE,
    size_bytes          BIGINT NOT NULL,
    manifest            TEXT NOT NULL,
    brands              TEXT NOT NULL,
    uploaded_by_key     TEXT NOT NULL,
    uploaded_by_holder  TEXT NOT NULL,
    uploaded_at         BIGINT NOT NULL,
    UNIQUE (name, version)
);

-- Compliance public keys (ed25519), each tied to a named holder.
CREATE TABLE signing_keys (
    id             TEXT PRIMARY KEY,
    holder         TEXT NOT NULL,
    public_key     TEXT NOT NULL UNIQUE,
    brands         TEXT NOT NULL,
    registered_at  BIGINT NOT NULL,
    revoked_at     BIGINT
);

CREATE TABLE approvals (
    id               TEXT PRIMARY KEY,
    plugin_id        TEXT NOT NULL REFERENCES plugin_versions (id),
    signing_key_id   TEXT NOT NULL REFERENCES signing_keys (id),
    approver_key_id  TEXT NOT NULL,
    approver_holder  TEXT NOT NULL,
    signature        TEXT NOT NULL,
    approved_at      BIGINT NOT NULL,
    revoked_at       BIGINT,
    UNIQUE (plugin_id, signing_key_id)
);

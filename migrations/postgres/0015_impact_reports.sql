-- 0015: impact reports. Before compliance approves a version, the host runs it beside the version bound
-- today over the brand's population and keeps what it would change. One report per version (run again
-- while no approval exists); its sha256 is over the report's stored text, and an approval of a version
-- with a report signs that sha256 with the manifest and the bytes (payload v2), so an approval is of
-- "these bytes, this manifest, this observed impact".
CREATE TABLE impact_reports (
    plugin_id     TEXT PRIMARY KEY REFERENCES plugin_versions (id),
    request       TEXT NOT NULL,
    requested_by  TEXT NOT NULL,
    state         TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL,
    finished_at   BIGINT,
    report        TEXT,
    sha256        TEXT,
    error         TEXT
);
ALTER TABLE approvals ADD COLUMN impact_sha256 TEXT;

-- 0009: message templates per brand and locale ('default' is the brand's fallback). `topic` is what the
-- message is about: a product (marketing), 'transactional' or 'rg_informational'. `variables` (JSON) are
-- the placeholders the body and subject use, each required when the message is rendered.
CREATE TABLE templates (
    brand_id     TEXT NOT NULL,
    template_id  TEXT NOT NULL,
    locale       TEXT NOT NULL,
    topic        TEXT NOT NULL,
    subject      TEXT,
    body         TEXT NOT NULL,
    variables    TEXT NOT NULL,
    updated_at   BIGINT NOT NULL,
    updated_by   TEXT NOT NULL,
    PRIMARY KEY (brand_id, template_id, locale)
);

-- 0002: contacts (personal data), apart from profiles and encrypted at rest (AES-256-GCM, one nonce
-- per value). `kind` is email, phone or birth_date.
CREATE TABLE contacts (
    brand_id    TEXT NOT NULL,
    player_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (brand_id, player_id, kind)
);

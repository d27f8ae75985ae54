-- Run-time API keys: only the SHA-256 of each secret is kept.
CREATE TABLE IF NOT EXISTS loom_keys (
    id              TEXT PRIMARY KEY,
    consumer        TEXT NOT NULL,
    team            TEXT,
    name            TEXT,
    secret_hash     BYTEA NOT NULL UNIQUE,
    -- The secret a rotation replaced, valid until previous_until.
    previous_hash   BYTEA,
    previous_until  BIGINT,
    expires_at      BIGINT,
    models          TEXT[],
    tier            TEXT,
    metadata        JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    version         BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS loom_keys_consumer ON loom_keys (consumer);
CREATE INDEX IF NOT EXISTS loom_keys_team ON loom_keys (team);

-- Every admin change: who (the admin token's name), what, before and
-- after (never a secret), when.
CREATE TABLE IF NOT EXISTS loom_audit (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    before  JSONB,
    after   JSONB
);
CREATE INDEX IF NOT EXISTS loom_audit_at ON loom_audit (at);

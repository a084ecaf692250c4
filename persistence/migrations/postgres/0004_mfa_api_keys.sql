-- Second factor and machine credentials: TOTP secrets, backup codes, API keys.
-- Times are microseconds since the Unix epoch (BIGINT), as in the ledger.

-- One TOTP secret per user. `enabled_at` is NULL while the secret is pending (set up but not
-- yet confirmed with a code). `last_used_step` is the RFC 6238 time step of the last code
-- accepted: a code is accepted only for a later step, so each step's code works once.
-- The secret is stored as it is (it must be, to compute codes): see persistence/src/users/mfa.rs.
CREATE TABLE user_totp (
    user_id UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret BYTEA NOT NULL,
    enabled_at BIGINT,
    last_used_step BIGINT,
    created_at BIGINT NOT NULL
);

-- Single-use backup codes, stored as the hex SHA-256 of (user id, code) only.
CREATE TABLE user_backup_codes (
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- API keys, stored as the hex SHA-256 of the key only. `scopes` is a space-separated list.
CREATE TABLE api_keys (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX api_keys_by_user ON api_keys (user_id, created_at);

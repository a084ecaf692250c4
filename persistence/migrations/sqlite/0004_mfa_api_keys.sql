-- Second factor and machine credentials in SQLite, mirroring
-- migrations/postgres/0004_mfa_api_keys.sql. Ids are hyphenated lowercase UUID text, times
-- microseconds since the Unix epoch. Every table is STRICT.

-- One TOTP secret per user; `enabled_at` NULL while pending; `last_used_step` is the time
-- step of the last accepted code (each step's code works once).
CREATE TABLE user_totp (
    user_id TEXT NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret BLOB NOT NULL,
    enabled_at INTEGER,
    last_used_step INTEGER,
    created_at INTEGER NOT NULL
) STRICT;

-- Single-use backup codes, stored as the hex SHA-256 of (user id, code) only.
CREATE TABLE user_backup_codes (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at INTEGER,
    PRIMARY KEY (user_id, code_hash)
) STRICT;

-- API keys, stored as the hex SHA-256 of the key only. `scopes` is a space-separated list.
CREATE TABLE api_keys (
    id TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX api_keys_by_user ON api_keys (user_id, created_at);

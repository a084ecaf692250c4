-- Identity: users, their admin permission actions, JWT signing keys, refresh tokens.
-- Times are microseconds since the Unix epoch (BIGINT), as in the ledger.

-- `email` keeps what the user wrote; `email_normalized` (trimmed, lowercased by the
-- application with full Unicode rules, which SQL's lower() does not share across databases)
-- makes addresses that differ only in case one user.
CREATE TABLE users (
    id UUID PRIMARY KEY,
    email TEXT NOT NULL,
    email_normalized TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'blocked')),
    created_at BIGINT NOT NULL
);

-- Admin permission actions (`transfers:execute`, ...), one row per grant.
CREATE TABLE user_permissions (
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    action TEXT NOT NULL,
    PRIMARY KEY (user_id, action)
);

-- RS256 signing keys. The highest generation signs; all verify and are published as JWKS.
-- The generation is the primary key so that two servers starting at once on an empty
-- database cannot both create generation 1.
CREATE TABLE jwt_signing_keys (
    generation INTEGER PRIMARY KEY CHECK (generation > 0),
    kid TEXT NOT NULL UNIQUE,
    algorithm TEXT NOT NULL CHECK (algorithm = 'RS256'),
    private_key_pkcs8 BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- Opaque refresh tokens, stored as the hex SHA-256 of the token only. A token is spent once
-- (`used_at`); reuse of a spent token revokes its family (`revoked_at` on every member).
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id UUID NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);

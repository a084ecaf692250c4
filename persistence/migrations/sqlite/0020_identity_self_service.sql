-- Identity a bank's users expect (issue 14), mirroring
-- migrations/postgres/0020_identity_self_service.sql: profile and verification fields on
-- users, emailed one-time codes, roles, and the hash-chained audit log. Ids are hyphenated
-- lowercase UUID text, times microseconds since the Unix epoch. Every new table is STRICT.

ALTER TABLE users ADD COLUMN phone TEXT;
ALTER TABLE users ADD COLUMN email_verified_at INTEGER;
ALTER TABLE users ADD COLUMN verification_level TEXT NOT NULL DEFAULT 'none'
    CHECK (verification_level IN ('none', 'basic', 'verified', 'enhanced'));

-- One live emailed code per user and purpose (argon2id hash only; see the Postgres file).
CREATE TABLE email_codes (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL CHECK (purpose IN ('password_reset', 'email_verification')),
    code_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    used_at INTEGER,
    PRIMARY KEY (user_id, purpose)
) STRICT;

CREATE TABLE roles (
    id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    name_normalized TEXT NOT NULL UNIQUE,
    description TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE role_actions (
    role_id TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    action TEXT NOT NULL,
    PRIMARY KEY (role_id, action)
) STRICT;

CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES roles (id),
    assigned_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, role_id)
) STRICT;
CREATE INDEX user_roles_by_role ON user_roles (role_id);

-- The audit log, hash-chained (see the Postgres file and persistence/src/audit/mod.rs).
CREATE TABLE audit_log (
    seq INTEGER NOT NULL PRIMARY KEY CHECK (seq > 0),
    id TEXT NOT NULL UNIQUE,
    at INTEGER NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT,
    action TEXT NOT NULL,
    target_type TEXT,
    target_id TEXT,
    subject_user_id TEXT,
    request_id TEXT NOT NULL,
    ip TEXT,
    user_agent TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
) STRICT;
CREATE INDEX audit_log_by_actor ON audit_log (actor_id, seq);
CREATE INDEX audit_log_by_target ON audit_log (target_id, seq);
CREATE INDEX audit_log_by_subject ON audit_log (subject_user_id, seq);

-- The head of the chain. SQLite has no row locks: a writer begins its transaction
-- IMMEDIATE (the database's one write lock), which serialises appends the same way.
CREATE TABLE audit_head (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
) STRICT;
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

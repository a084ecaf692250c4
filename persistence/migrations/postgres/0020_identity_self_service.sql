-- Identity a bank's users expect (issue 14): profile and verification fields on users,
-- emailed one-time codes, roles, and the hash-chained audit log.
-- Times are microseconds since the Unix epoch (BIGINT), as everywhere else.

-- `phone` is optional profile data. `email_verified_at` is set once the user proves the
-- address with an emailed code. `verification_level` is what an admin verified of the person
-- (API.md "Verification levels and limits"); the limits it unlocks belong to another issue.
ALTER TABLE users ADD COLUMN phone TEXT;
ALTER TABLE users ADD COLUMN email_verified_at BIGINT;
ALTER TABLE users ADD COLUMN verification_level TEXT NOT NULL DEFAULT 'none'
    CHECK (verification_level IN ('none', 'basic', 'verified', 'enhanced'));

-- One live emailed code per user and purpose; a new request replaces it. Only an argon2id
-- hash of the code is stored (a 6-digit code under a fast hash would be read back by trying
-- all million). `attempts` counts tries, taken before each check, so concurrent guesses
-- cannot exceed the bound; `used_at` makes a code single-use.
CREATE TABLE email_codes (
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL CHECK (purpose IN ('password_reset', 'email_verification')),
    code_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    used_at BIGINT,
    PRIMARY KEY (user_id, purpose)
);

-- Named sets of admin permission actions. `name_normalized` (trimmed, lowercased by the
-- application) keeps two roles from differing only in case.
CREATE TABLE roles (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    name_normalized TEXT NOT NULL UNIQUE,
    description TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE role_actions (
    role_id UUID NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    action TEXT NOT NULL,
    PRIMARY KEY (role_id, action)
);

-- Who holds which role. No cascade from roles: a role in use cannot be deleted (the
-- application answers 409 first; the foreign key is the backstop).
CREATE TABLE user_roles (
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id UUID NOT NULL REFERENCES roles (id),
    assigned_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, role_id)
);
CREATE INDEX user_roles_by_role ON user_roles (role_id);

-- The audit log: every admin change and every security event, hash-chained. Entry `seq`
-- has `hash` = SHA-256(prev_hash bytes || canonical entry) (persistence/src/audit/mod.rs
-- defines the canonical form; docs/audit.md shows how to recompute it). `details` is JSON
-- text kept byte for byte (TEXT, not JSONB, which would reformat it and break the hash).
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY CHECK (seq > 0),
    id UUID NOT NULL UNIQUE,
    at BIGINT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT,
    action TEXT NOT NULL,
    target_type TEXT,
    target_id TEXT,
    subject_user_id UUID,
    request_id TEXT NOT NULL,
    ip TEXT,
    user_agent TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
-- The documented filters: by actor, by target, and a user's own activity (newest first).
CREATE INDEX audit_log_by_actor ON audit_log (actor_id, seq);
CREATE INDEX audit_log_by_target ON audit_log (target_id, seq);
CREATE INDEX audit_log_by_subject ON audit_log (subject_user_id, seq);

-- The head of the chain: one row, locked FOR UPDATE by every writer inside its own
-- transaction, so entries are appended one at a time in commit order whatever the number of
-- writers (nodes included). Deleting the newest entries leaves the head pointing past them,
-- which `tally verify` reports.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

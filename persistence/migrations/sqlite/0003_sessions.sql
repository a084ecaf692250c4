-- Login sessions in SQLite, mirroring migrations/postgres/0003_sessions.sql. A session's id is
-- also the family id of its refresh tokens. A terminated session keeps its row with
-- `revoked_at` and `revoked_reason`, so a restart never revives it; `last_activity_at` is
-- written behind. Ids are hyphenated lowercase UUID text, times microseconds since the epoch.
CREATE TABLE sessions (
    id TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_ip TEXT,
    user_agent TEXT,
    created_at INTEGER NOT NULL,
    last_activity_at INTEGER NOT NULL,
    revoked_at INTEGER,
    revoked_reason TEXT,
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
) STRICT;
-- A user's live sessions, oldest first: what listing and the per-user bound read.
CREATE INDEX sessions_live_by_user ON sessions (user_id, created_at) WHERE revoked_at IS NULL;

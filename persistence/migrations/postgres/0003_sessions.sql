-- Login sessions (DESIGN.md §7). A session's id is also the family id of its refresh tokens,
-- so rotating, reusing or revoking a refresh token names its session without another column.
-- A terminated session keeps its row with `revoked_at` and why (`revoked_reason`), so a
-- restart never revives it; `last_activity_at` is written behind (at most one write-behind
-- interval stale), which is enough to expire an idle session after a restart.
CREATE TABLE sessions (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_ip TEXT,
    user_agent TEXT,
    created_at BIGINT NOT NULL,
    last_activity_at BIGINT NOT NULL,
    revoked_at BIGINT,
    revoked_reason TEXT,
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);
-- A user's live sessions, oldest first: what listing and the per-user bound read.
CREATE INDEX sessions_live_by_user ON sessions (user_id, created_at) WHERE revoked_at IS NULL;

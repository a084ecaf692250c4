-- Pending expiry, as migrations/postgres/0051_pending_expiry.sql: a pending transfer's
-- deadline (Unix microseconds; NULL: none) and a transfer type's default time to expiry in
-- seconds (NULL: never).
ALTER TABLE transfers ADD COLUMN pending_expires_at INTEGER;

ALTER TABLE transfer_type_settings ADD COLUMN pending_timeout_secs INTEGER
    CHECK (pending_timeout_secs BETWEEN 60 AND 2592000);

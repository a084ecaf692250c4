-- Pending expiry (issue 15 item 6, docs/ledger-views.md "Pending expiry").
-- A pending transfer's deadline, in Unix microseconds as every other instant here: stored with
-- the transfer's row (written by the same batch as its `pending` state), so a restart finds
-- every deadline by reading the pending transfers recovery already reads. NULL: no deadline.
ALTER TABLE transfers ADD COLUMN pending_expires_at BIGINT;

-- A transfer type's default time to expiry, in seconds (60 … 2,592,000); NULL: never.
ALTER TABLE transfer_type_settings ADD COLUMN pending_timeout_secs INTEGER
    CHECK (pending_timeout_secs BETWEEN 60 AND 2592000);

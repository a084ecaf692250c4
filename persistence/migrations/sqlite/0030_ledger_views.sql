-- Ledger views a customer asks for (issue 15), as migrations/postgres/0030_ledger_views.sql;
-- ids and amounts are TEXT as in 0001 (amounts never become floats).

-- Saved payees of external transfers. A deletion keeps the row (`deleted_at`): a transfer made
-- by `beneficiary_id` and retried under its Idempotency-Key after the beneficiary was deleted
-- still resolves to the payee it paid, so the retry replays instead of failing (see
-- docs/ledger-views.md). Everything a customer sees filters on `deleted_at IS NULL`.
CREATE TABLE beneficiaries (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- The IBAN's electronic form (no spaces, upper case), as checked by the API.
    iban TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    deleted_at INTEGER
) STRICT;
-- The listing (newest first) and the per-user bound: one range of live rows per user.
CREATE INDEX beneficiaries_live_by_user ON beneficiaries (user_id, created_at, id) WHERE deleted_at IS NULL;
-- One live beneficiary per IBAN per user: a second would only be a confusing duplicate.
CREATE UNIQUE INDEX beneficiaries_live_iban ON beneficiaries (user_id, iban) WHERE deleted_at IS NULL;

-- The maxima of each verification level per currency; a missing row, or a NULL maximum, is no
-- bound. Amounts at the currency's scale, as text.
CREATE TABLE verification_limits (
    level TEXT NOT NULL CHECK (level IN ('none', 'basic', 'verified', 'enhanced')),
    currency TEXT NOT NULL,
    per_transfer_max TEXT CHECK (per_transfer_max NOT LIKE '-%' AND per_transfer_max GLOB '*[1-9]*'),
    daily_max TEXT CHECK (daily_max NOT LIKE '-%' AND daily_max GLOB '*[1-9]*'),
    monthly_max TEXT CHECK (monthly_max NOT LIKE '-%' AND monthly_max GLOB '*[1-9]*'),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (level, currency),
    CHECK (per_transfer_max IS NOT NULL OR daily_max IS NOT NULL OR monthly_max IS NOT NULL)
) STRICT;

-- The crypto histories page newest first by (created_at, id) within one owner: each page is
-- one range scan of its own partial index.
CREATE INDEX crypto_orders_by_owner ON crypto_ops (owner_id, created_at, id) WHERE kind IN ('buy', 'sell');
CREATE INDEX crypto_withdrawals_by_owner ON crypto_ops (owner_id, created_at, id) WHERE kind = 'withdrawal';

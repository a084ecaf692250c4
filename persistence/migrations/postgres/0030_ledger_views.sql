-- Ledger views a customer asks for (issue 15): saved beneficiaries, the limits of each
-- verification level, and the indexes behind the crypto histories. Times are microseconds
-- since the Unix epoch (BIGINT), as everywhere else.

-- Saved payees of external transfers. A deletion keeps the row (`deleted_at`): a transfer made
-- by `beneficiary_id` and retried under its Idempotency-Key after the beneficiary was deleted
-- still resolves to the payee it paid, so the retry replays instead of failing (see
-- docs/ledger-views.md). Everything a customer sees filters on `deleted_at IS NULL`.
CREATE TABLE beneficiaries (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- The IBAN's electronic form (no spaces, upper case), as checked by the API.
    iban TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);
-- The listing (newest first) and the per-user bound: one range of live rows per user.
CREATE INDEX beneficiaries_live_by_user ON beneficiaries (user_id, created_at, id) WHERE deleted_at IS NULL;
-- One live beneficiary per IBAN per user: a second would only be a confusing duplicate.
CREATE UNIQUE INDEX beneficiaries_live_iban ON beneficiaries (user_id, iban) WHERE deleted_at IS NULL;

-- The maxima of each verification level per currency (API.md "Verification levels and
-- limits"); a missing row, or a NULL maximum, is no bound. Amounts at the currency's scale.
-- Loaded into memory at start and replaced whole per level by `PUT /v1/admin/limits/{level}`.
CREATE TABLE verification_limits (
    level TEXT NOT NULL CHECK (level IN ('none', 'basic', 'verified', 'enhanced')),
    currency TEXT NOT NULL,
    per_transfer_max NUMERIC CHECK (per_transfer_max > 0),
    daily_max NUMERIC CHECK (daily_max > 0),
    monthly_max NUMERIC CHECK (monthly_max > 0),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (level, currency),
    CHECK (per_transfer_max IS NOT NULL OR daily_max IS NOT NULL OR monthly_max IS NOT NULL)
);

-- The crypto histories (`GET /v1/crypto/orders`, `GET /v1/crypto/withdrawals`) page newest
-- first by (created_at, id) within one owner: each page is one range scan of its own partial
-- index. Wallet transactions walk `wallet_postings_by_wallet (wallet_id, booked_at, shard, seq)` of 0021.
CREATE INDEX crypto_orders_by_owner ON crypto_ops (owner_id, created_at, id) WHERE kind IN ('buy', 'sell');
CREATE INDEX crypto_withdrawals_by_owner ON crypto_ops (owner_id, created_at, id) WHERE kind = 'withdrawal';

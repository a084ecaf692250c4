-- Tally's ledger in Postgres. Amounts are NUMERIC (exact, unbounded scale: 18-decimal ETH
-- round-trips). Times are microseconds since the Unix epoch (BIGINT), as the engine keeps them.
-- Every row written by the journal carries the journal sequence number (`seq`) of the record
-- that last wrote it, so a reader can tell which records a row already reflects.

-- The journal's high-water mark: the last sequence number committed. The writer advances it
-- only from the value it expects, which also fences off a second writer.
CREATE TABLE journal_state (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    committed_seq BIGINT NOT NULL
);
INSERT INTO journal_state (id, committed_seq) VALUES (1, 0);

-- Accounts with their balance snapshot (written behind, coalesced per commit batch).
CREATE TABLE accounts (
    id UUID PRIMARY KEY,
    owner_id UUID,
    currency TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    balance NUMERIC NOT NULL,
    held NUMERIC NOT NULL,
    credit_limit NUMERIC NOT NULL,
    created_at BIGINT NOT NULL,
    snapshot_seq BIGINT NOT NULL
);
CREATE INDEX accounts_by_owner ON accounts (owner_id);

-- Holds still placed: money reserved for unfinished transfers.
CREATE TABLE holds (
    account_id UUID NOT NULL,
    transfer_id UUID NOT NULL,
    amount NUMERIC NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (account_id, transfer_id)
);
CREATE INDEX holds_by_transfer ON holds (transfer_id);

-- Double-entry postings, append only. A debit lowers a balance, a credit raises it.
CREATE TABLE postings (
    seq BIGINT PRIMARY KEY,
    transfer_id UUID NOT NULL,
    account_id UUID NOT NULL,
    currency TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount NUMERIC NOT NULL CHECK (amount > 0),
    balance_after NUMERIC NOT NULL
);
CREATE INDEX postings_by_account ON postings (account_id, seq);
CREATE INDEX postings_by_transfer ON postings (transfer_id);

-- Transfers, one row each, updated as the saga records each transition.
CREATE TABLE transfers (
    id UUID PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    step TEXT NOT NULL,
    source_id UUID NOT NULL,
    destination_id UUID NOT NULL,
    amount NUMERIC NOT NULL,
    currency TEXT NOT NULL,
    fee NUMERIC NOT NULL,
    fx_rate NUMERIC,
    destination_amount NUMERIC NOT NULL,
    destination_currency TEXT NOT NULL,
    pending_reason TEXT,
    failure_reason TEXT,
    reference TEXT,
    description TEXT,
    beneficiary_name TEXT,
    beneficiary_iban TEXT,
    initiated_by UUID,
    idempotency_scope UUID,
    idempotency_key TEXT,
    idempotency_fingerprint TEXT,
    created_at BIGINT NOT NULL,
    completed_at BIGINT,
    seq BIGINT NOT NULL
);
-- One transfer per caller and key: the engine never writes two, and this proves it.
CREATE UNIQUE INDEX transfers_by_idempotency ON transfers (idempotency_scope, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX transfers_not_terminal ON transfers (status) WHERE status IN ('processing', 'pending');
CREATE INDEX transfers_by_source ON transfers (source_id, created_at);

-- Multi-asset wallets: one row per wallet, one per asset held, one per live hold.
CREATE TABLE wallets (
    id UUID PRIMARY KEY,
    owner_id UUID NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    snapshot_seq BIGINT NOT NULL
);
CREATE TABLE wallet_assets (
    wallet_id UUID NOT NULL,
    asset TEXT NOT NULL,
    balance NUMERIC NOT NULL,
    held NUMERIC NOT NULL,
    -- The record that first brought this asset to the wallet: assets keep arrival order.
    first_seq BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (wallet_id, asset)
);
CREATE TABLE wallet_holds (
    wallet_id UUID NOT NULL,
    asset TEXT NOT NULL,
    transfer_id UUID NOT NULL,
    amount NUMERIC NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (wallet_id, asset, transfer_id)
);

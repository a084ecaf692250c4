-- Customer wallets and crypto operations (issue 5, item 6).

-- What the API knows of a wallet beyond its ledger positions: one wallet per asset per user,
-- and the deterministic deposit address the custodian reports deposits to. Written once,
-- after the wallet's opening record is durable, so a wallet shown here always exists.
CREATE TABLE wallet_profiles (
    wallet_id UUID PRIMARY KEY,
    owner_id UUID NOT NULL,
    asset TEXT NOT NULL,
    deposit_address TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX wallet_profiles_by_owner_asset ON wallet_profiles (owner_id, asset);
CREATE UNIQUE INDEX wallet_profiles_by_address ON wallet_profiles (deposit_address);

-- Wallet postings: every credit and debit of a wallet asset, append only, like `postings`
-- for accounts. Recovery reads them to learn whether a wallet credit happened; `tally check`
-- and the tests sum them.
CREATE TABLE wallet_postings (
    seq BIGINT PRIMARY KEY,
    transfer_id UUID NOT NULL,
    wallet_id UUID NOT NULL,
    asset TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount NUMERIC NOT NULL CHECK (amount > 0),
    balance_after NUMERIC NOT NULL
);
CREATE INDEX wallet_postings_by_transfer ON wallet_postings (transfer_id);
CREATE INDEX wallet_postings_by_wallet ON wallet_postings (wallet_id, seq);

-- Deposits, withdrawals, buy and sell orders: one row each, its last recorded state.
CREATE TABLE crypto_ops (
    id UUID PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    step INTEGER NOT NULL,
    owner_id UUID NOT NULL,
    wallet_id UUID NOT NULL,
    asset TEXT NOT NULL,
    asset_amount NUMERIC NOT NULL,
    fiat_account_id UUID,
    fiat_currency TEXT,
    fiat_amount NUMERIC NOT NULL,
    fee NUMERIC NOT NULL,
    price NUMERIC,
    address TEXT,
    tx_hash TEXT,
    idempotency_scope UUID,
    idempotency_key TEXT,
    idempotency_fingerprint TEXT,
    failure_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
-- One credit per chain transaction: the engine decides it before crediting (in memory and
-- against this table) and this index proves it.
CREATE UNIQUE INDEX crypto_deposits_by_tx_hash ON crypto_ops (tx_hash) WHERE kind = 'deposit';
CREATE UNIQUE INDEX crypto_ops_by_idempotency ON crypto_ops (kind, idempotency_scope, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX crypto_ops_not_terminal ON crypto_ops (status) WHERE status IN ('processing', 'pending');

-- Customer wallets and crypto operations, as migrations/postgres/0008_wallets.sql; ids,
-- amounts and hashes are TEXT as in 0001.

-- What the API knows of a wallet beyond its ledger positions: one wallet per asset per user,
-- and the deterministic deposit address the custodian reports deposits to. Written once,
-- after the wallet's opening record is durable, so a wallet shown here always exists.
CREATE TABLE wallet_profiles (
    wallet_id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL,
    asset TEXT NOT NULL,
    deposit_address TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX wallet_profiles_by_owner_asset ON wallet_profiles (owner_id, asset);
CREATE UNIQUE INDEX wallet_profiles_by_address ON wallet_profiles (deposit_address);

-- Wallet postings: every credit and debit of a wallet asset, append only, like `postings`
-- for accounts. Recovery reads them to learn whether a wallet credit happened; `tally check`
-- and the tests sum them.
CREATE TABLE wallet_postings (
    seq INTEGER PRIMARY KEY,
    transfer_id TEXT NOT NULL,
    wallet_id TEXT NOT NULL,
    asset TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount TEXT NOT NULL CHECK (amount NOT LIKE '-%' AND amount GLOB '*[1-9]*'),
    balance_after TEXT NOT NULL
) STRICT;
CREATE INDEX wallet_postings_by_transfer ON wallet_postings (transfer_id);
CREATE INDEX wallet_postings_by_wallet ON wallet_postings (wallet_id, seq);

-- Deposits, withdrawals, buy and sell orders: one row each, its last recorded state.
CREATE TABLE crypto_ops (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    step INTEGER NOT NULL,
    owner_id TEXT NOT NULL,
    wallet_id TEXT NOT NULL,
    asset TEXT NOT NULL,
    asset_amount TEXT NOT NULL,
    fiat_account_id TEXT,
    fiat_currency TEXT,
    fiat_amount TEXT NOT NULL,
    fee TEXT NOT NULL,
    price TEXT,
    address TEXT,
    tx_hash TEXT,
    idempotency_scope TEXT,
    idempotency_key TEXT,
    idempotency_fingerprint TEXT,
    failure_reason TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    seq INTEGER NOT NULL
) STRICT;
-- One credit per chain transaction: the engine decides it before crediting (in memory and
-- against this table) and this index proves it.
CREATE UNIQUE INDEX crypto_deposits_by_tx_hash ON crypto_ops (tx_hash) WHERE kind = 'deposit';
CREATE UNIQUE INDEX crypto_ops_by_idempotency ON crypto_ops (kind, idempotency_scope, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX crypto_ops_not_terminal ON crypto_ops (status) WHERE status IN ('processing', 'pending');

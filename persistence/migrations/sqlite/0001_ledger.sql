-- Tally's ledger in SQLite, mirroring migrations/postgres/0001_ledger.sql.
--
-- Amounts are TEXT holding `Decimal::to_string()`: SQLite has no exact decimal type, and a
-- NUMERIC column would turn an 18-decimal ETH amount into an 8-byte float. Ids are hyphenated
-- lowercase UUID text. Times are microseconds since the Unix epoch (INTEGER), as the engine
-- keeps them. Every table is STRICT, so a value of the wrong type (a float amount, a blob id)
-- is refused at write time instead of being stored and misread later.
-- Every row written by the journal carries the journal sequence number (`seq`) of the record
-- that last wrote it, so a reader can tell which records a row already reflects.

-- The journal's high-water mark: the last sequence number committed. The writer advances it
-- only from the value it expects, which also fences off a second writer.
CREATE TABLE journal_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    committed_seq INTEGER NOT NULL
) STRICT;
INSERT INTO journal_state (id, committed_seq) VALUES (1, 0);

-- Accounts with their balance snapshot (written behind, coalesced per commit batch).
CREATE TABLE accounts (
    id TEXT NOT NULL PRIMARY KEY,
    owner_id TEXT,
    currency TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    balance TEXT NOT NULL,
    held TEXT NOT NULL,
    credit_limit TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    snapshot_seq INTEGER NOT NULL
) STRICT;
CREATE INDEX accounts_by_owner ON accounts (owner_id);

-- Holds still placed: money reserved for unfinished transfers.
CREATE TABLE holds (
    account_id TEXT NOT NULL,
    transfer_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (account_id, transfer_id)
) STRICT;
CREATE INDEX holds_by_transfer ON holds (transfer_id);

-- Double-entry postings, append only. A debit lowers a balance, a credit raises it. `seq` is
-- the rowid, so postings are stored in journal order. The amount check is textual (no leading
-- minus sign, some non-zero digit) because comparing the text to 0 numerically would go
-- through a float.
CREATE TABLE postings (
    seq INTEGER PRIMARY KEY,
    transfer_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount TEXT NOT NULL CHECK (amount NOT LIKE '-%' AND amount GLOB '*[1-9]*'),
    balance_after TEXT NOT NULL
) STRICT;
CREATE INDEX postings_by_account ON postings (account_id, seq);
CREATE INDEX postings_by_transfer ON postings (transfer_id, seq);

-- Transfers, one row each, updated as the saga records each transition.
CREATE TABLE transfers (
    id TEXT NOT NULL PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    step TEXT NOT NULL,
    source_id TEXT NOT NULL,
    destination_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    fee TEXT NOT NULL,
    fx_rate TEXT,
    destination_amount TEXT NOT NULL,
    destination_currency TEXT NOT NULL,
    pending_reason TEXT,
    failure_reason TEXT,
    reference TEXT,
    description TEXT,
    beneficiary_name TEXT,
    beneficiary_iban TEXT,
    initiated_by TEXT,
    idempotency_scope TEXT,
    idempotency_key TEXT,
    idempotency_fingerprint TEXT,
    created_at INTEGER NOT NULL,
    completed_at INTEGER,
    seq INTEGER NOT NULL
) STRICT;
-- One transfer per caller and key: the engine never writes two, and this proves it.
CREATE UNIQUE INDEX transfers_by_idempotency ON transfers (idempotency_scope, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX transfers_not_terminal ON transfers (status) WHERE status IN ('processing', 'pending');
CREATE INDEX transfers_by_source ON transfers (source_id, created_at);

-- Multi-asset wallets: one row per wallet, one per asset held, one per live hold.
CREATE TABLE wallets (
    id TEXT NOT NULL PRIMARY KEY,
    owner_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    snapshot_seq INTEGER NOT NULL
) STRICT;
-- `ordinal` numbers assets in the order they first arrived in their wallet, which is the order
-- of `Wallet.assets`. An upsert keeps it; `seq` cannot serve, since it moves on every change.
-- It is an INTEGER PRIMARY KEY (an explicit rowid), so VACUUM never renumbers it.
CREATE TABLE wallet_assets (
    ordinal INTEGER PRIMARY KEY,
    wallet_id TEXT NOT NULL,
    asset TEXT NOT NULL,
    balance TEXT NOT NULL,
    held TEXT NOT NULL,
    seq INTEGER NOT NULL,
    UNIQUE (wallet_id, asset)
) STRICT;
CREATE TABLE wallet_holds (
    wallet_id TEXT NOT NULL,
    asset TEXT NOT NULL,
    transfer_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (wallet_id, asset, transfer_id)
) STRICT;

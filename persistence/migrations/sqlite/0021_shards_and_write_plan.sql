-- The hot path's write plan (issue 12), as migrations/postgres/0021_shards_and_write_plan.sql.

-- `booked_at`: the latest booking time the shard committed (see the Postgres migration).
CREATE TABLE journal_shards (
    shard INTEGER PRIMARY KEY,
    committed_seq INTEGER NOT NULL,
    booked_at INTEGER NOT NULL DEFAULT 0
) STRICT;
INSERT INTO journal_shards (shard, committed_seq) SELECT 0, committed_seq FROM journal_state WHERE id = 1 AND committed_seq > 0;
DROP TABLE journal_state;

CREATE TABLE postings_new (
    account_id TEXT NOT NULL,
    booked_at INTEGER NOT NULL,
    version INTEGER NOT NULL,
    transfer_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount TEXT NOT NULL CHECK (amount NOT LIKE '-%' AND amount GLOB '*[1-9]*'),
    balance_after TEXT NOT NULL,
    shard INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (account_id, booked_at, version)
) STRICT, WITHOUT ROWID;
INSERT INTO postings_new
SELECT p.account_id,
       max(COALESCE(t.created_at, 0)) OVER (PARTITION BY p.account_id ORDER BY p.seq ROWS UNBOUNDED PRECEDING),
       row_number() OVER (PARTITION BY p.account_id ORDER BY p.seq),
       p.transfer_id, p.currency, p.direction, p.amount, p.balance_after, 0, p.seq
FROM postings p LEFT JOIN transfers t ON t.id = p.transfer_id;
DROP TABLE postings;
ALTER TABLE postings_new RENAME TO postings;
UPDATE journal_shards SET booked_at = (SELECT COALESCE(max(booked_at), 0) FROM postings);
-- SQLite is the embedded default, not the hot path: its postings keep an index by transfer,
-- which makes reading a transfer's postings one lookup.
CREATE INDEX postings_by_transfer ON postings (transfer_id);

ALTER TABLE accounts ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN booked_at INTEGER NOT NULL DEFAULT 0;
UPDATE accounts SET
    version = COALESCE((SELECT max(version) FROM postings p WHERE p.account_id = accounts.id), 0),
    booked_at = COALESCE((SELECT max(booked_at) FROM postings p WHERE p.account_id = accounts.id), 0);
ALTER TABLE accounts DROP COLUMN snapshot_seq;

DROP INDEX transfers_not_terminal;
DROP INDEX transfers_by_source;
DROP INDEX transfers_by_destination;
DROP INDEX transfers_by_created;
DROP INDEX transfers_by_status_created;
-- SQLite has no arrays: the legs of a `processing` row as text, "account:version" by commas.
ALTER TABLE transfers ADD COLUMN legs TEXT;
CREATE INDEX transfers_open ON transfers (status) WHERE status IN ('processing', 'pending');
CREATE INDEX transfers_not_completed_by_status ON transfers (status, id) WHERE status <> 'completed';
CREATE INDEX transfers_by_source ON transfers (source_id, id);
CREATE INDEX transfers_by_destination ON transfers (destination_id, id);

CREATE TABLE wallet_postings_by_shard (
    shard INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    booked_at INTEGER NOT NULL,
    transfer_id TEXT NOT NULL,
    wallet_id TEXT NOT NULL,
    asset TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount TEXT NOT NULL CHECK (amount NOT LIKE '-%' AND amount GLOB '*[1-9]*'),
    balance_after TEXT NOT NULL,
    PRIMARY KEY (shard, seq)
) STRICT;
INSERT INTO wallet_postings_by_shard
SELECT 0, seq, 0, transfer_id, wallet_id, asset, direction, amount, balance_after FROM wallet_postings;
DROP TABLE wallet_postings;
ALTER TABLE wallet_postings_by_shard RENAME TO wallet_postings;
CREATE INDEX wallet_postings_by_transfer ON wallet_postings (transfer_id);
CREATE INDEX wallet_postings_by_wallet ON wallet_postings (wallet_id, booked_at, shard, seq);

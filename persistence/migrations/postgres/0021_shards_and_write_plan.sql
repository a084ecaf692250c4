-- The hot path's write plan (issue 12): per-shard journals, each fact written once.
--
-- A shard's journal numbers its own records and its writer advances its own committed
-- sequence, fenced as the single journal's was. Nothing durable depends on how many shards
-- there are: an account's state is its snapshot plus the postings after it, by the account's
-- own posting number, whichever journals the records came through.

-- `booked_at` is the latest booking time committed by any batch of the shard: a restarted
-- engine books no earlier, so an account's postings stay in booking order even if the wall
-- clock went back across the restart.
CREATE TABLE journal_shards (
    shard SMALLINT PRIMARY KEY,
    committed_seq BIGINT NOT NULL,
    booked_at BIGINT NOT NULL DEFAULT 0
);
-- A store written by the single journal keeps that history as shard 0's; a fresh one has no
-- shards until the engine opens as many as it runs.
INSERT INTO journal_shards (shard, committed_seq) SELECT 0, committed_seq FROM journal_state WHERE id = 1 AND committed_seq > 0;
DROP TABLE journal_state;

-- Postings: one row per balance change, append only, keyed by account, the time its batch was
-- booked (monotonic per account) and the account's posting number (`version`: 1, 2, 3, … in
-- the order the account applied them). The key is the only index: an account's history, a
-- statement's period, a point-in-time balance and the postings after a snapshot are each one
-- range of it. `shard` and `seq` say which journal batch wrote the row.
CREATE TABLE postings_new (
    account_id UUID NOT NULL,
    booked_at BIGINT NOT NULL,
    version BIGINT NOT NULL,
    transfer_id UUID NOT NULL,
    currency TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount NUMERIC NOT NULL CHECK (amount > 0),
    balance_after NUMERIC NOT NULL,
    shard SMALLINT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (account_id, booked_at, version)
);
-- Existing postings keep their order (journal sequence) as their versions, booked at their
-- transfer's creation time, made monotonic per account.
INSERT INTO postings_new
SELECT p.account_id,
       max(COALESCE(t.created_at, 0)) OVER (PARTITION BY p.account_id ORDER BY p.seq ROWS UNBOUNDED PRECEDING),
       row_number() OVER (PARTITION BY p.account_id ORDER BY p.seq),
       p.transfer_id, p.currency, p.direction, p.amount, p.balance_after, 0, p.seq
FROM postings p LEFT JOIN transfers t ON t.id = p.transfer_id;
DROP TABLE postings;
ALTER TABLE postings_new RENAME TO postings;
ALTER TABLE postings RENAME CONSTRAINT postings_new_pkey TO postings_pkey;
UPDATE journal_shards SET booked_at = (SELECT COALESCE(max(booked_at), 0) FROM postings);

-- Accounts: the balance snapshot is written behind, coalesced over seconds. `version` is the
-- posting number it includes and `booked_at` when that posting was booked; a reader adds the
-- postings after it. The journal sequence the snapshot carried no longer orders an account.
ALTER TABLE accounts ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN booked_at BIGINT NOT NULL DEFAULT 0;
UPDATE accounts AS a SET version = p.version, booked_at = p.booked_at
FROM (SELECT account_id, max(version) AS version, max(booked_at) AS booked_at FROM postings GROUP BY account_id) AS p
WHERE a.id = p.account_id;
ALTER TABLE accounts DROP COLUMN snapshot_seq;

-- Transfers: one row each, written once in its final state when its saga ends inside one
-- commit (a saga cut by a commit after a posting is written `processing` with the legs it
-- made, in `leg_accounts`/`leg_versions`, and replaced by its final state). Only the indexes a
-- documented query needs: the primary key (ids are time-ordered UUIDv7 made from the creation
-- time, so inserts append and the admin listing pages by the key alone), the idempotency key
-- (0001), a customer's transfers by source and by destination account (the customer listing,
-- newest first), and partial indexes that a completed transfer, the common case, never
-- enters: the open ones (recovery, the pending queue) and the others by status (the admin
-- listing's status filter).
DROP INDEX transfers_not_terminal;
DROP INDEX transfers_by_source;
DROP INDEX transfers_by_destination;
DROP INDEX transfers_by_created;
DROP INDEX transfers_by_status_created;
ALTER TABLE transfers ADD COLUMN leg_accounts UUID[];
ALTER TABLE transfers ADD COLUMN leg_versions BIGINT[];
CREATE INDEX transfers_open ON transfers (status) WHERE status IN ('processing', 'pending');
CREATE INDEX transfers_not_completed_by_status ON transfers (status, id) WHERE status <> 'completed';
CREATE INDEX transfers_by_source ON transfers (source_id, id);
CREATE INDEX transfers_by_destination ON transfers (destination_id, id);

-- Wallet postings: numbered per shard's journal now.
ALTER TABLE wallet_postings ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE wallet_postings ADD COLUMN booked_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE wallet_postings DROP CONSTRAINT wallet_postings_pkey;
ALTER TABLE wallet_postings ADD PRIMARY KEY (shard, seq);
DROP INDEX wallet_postings_by_wallet;
CREATE INDEX wallet_postings_by_wallet ON wallet_postings (wallet_id, booked_at, shard, seq);

-- Events out and the journal's hash chain, as migrations/postgres/0040_events_and_ledger_chain.sql.
CREATE TABLE events (
    shard INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    data TEXT,
    PRIMARY KEY (shard, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE journal_batches (
    shard INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (shard, last_seq)
) STRICT, WITHOUT ROWID;

-- Events out (issue 16; persistence/src/events/mod.rs, docs/events.md).
--
-- One row per event, written by the journal batch that writes its change (binary COPY), keyed
-- by the position of the record that made it: per shard, increasing in commit order, so the
-- key is also the feed's order and its only index (inserts append at each shard's right
-- edge). `data` is the object after the change as JSON text, written once and served byte
-- for byte (a webhook's signature is over it); NULL only when no encoder was installed.
CREATE TABLE events (
    shard SMALLINT NOT NULL,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    object_id UUID NOT NULL,
    occurred_at BIGINT NOT NULL,
    data TEXT,
    PRIMARY KEY (shard, seq)
);

-- The journal's hash chain (API.md "Tamper evidence"): one row per committed batch of
-- records, `hash = SHA-256(previous batch's hash of the shard ‖ digest of the batch's
-- postings and events)`, 32 zero bytes before a shard's first batch
-- (persistence/src/events/chain.rs). `tally verify` recomputes it.
CREATE TABLE journal_batches (
    shard SMALLINT NOT NULL,
    last_seq BIGINT NOT NULL,
    first_seq BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    PRIMARY KEY (shard, last_seq)
);

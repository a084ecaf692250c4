-- Where each shard's hash chain begins (persistence/src/events/chain.rs, `tally verify`).
--
-- Migration 0040 began the journal's chain without recording where: a shard's first batch
-- after it linked to 32 zero bytes, and the batches before it have no links. `tally verify`
-- took the first link it found as the start, so a shard whose links were all deleted had
-- "no chain" and verified intact whatever its postings said. The start is recorded here once:
-- a shard's first linked seq, or for a shard with no link yet the seq after its committed one
-- (its next batch is its first link). A shard with no row here (every shard opened after this
-- migration) starts at seq 1. A store whose links were deleted before this migration ran
-- cannot be told apart from one that never had them; that is the one case it cannot catch.
CREATE TABLE journal_chain_starts (
    shard SMALLINT PRIMARY KEY,
    first_seq BIGINT NOT NULL
);

INSERT INTO journal_chain_starts (shard, first_seq)
SELECT s.shard, COALESCE((SELECT min(b.first_seq) FROM journal_batches AS b WHERE b.shard = s.shard), s.committed_seq + 1)
FROM journal_shards AS s;

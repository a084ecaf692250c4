-- Where each shard's hash chain begins, as migrations/postgres/0069_journal_chain_starts.sql.
CREATE TABLE journal_chain_starts (
    shard INTEGER PRIMARY KEY,
    first_seq INTEGER NOT NULL
) STRICT;

INSERT INTO journal_chain_starts (shard, first_seq)
SELECT s.shard, COALESCE((SELECT min(b.first_seq) FROM journal_batches AS b WHERE b.shard = s.shard), s.committed_seq + 1)
FROM journal_shards AS s;

-- A Tally cluster (issue 13, DESIGN.md §10): nodes register here, and each shard's row of
-- `journal_shards` is also its lease. No advisory locks: leases are rows taken and renewed by
-- conditional UPDATEs, which work alike on Postgres, CockroachDB, YugabyteDB and Citus.
--
-- Times are microseconds since the Unix epoch on the database's clock (one clock for every
-- node, so no node's clock decides whether a lease has run out).

CREATE TABLE cluster_nodes (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    -- Journal commits of this node the fence refused, over all its incarnations (a node that
    -- lost its leases adds its count here before it restarts as a standby).
    fenced_commits BIGINT NOT NULL DEFAULT 0
);

-- `owner` names the node that holds the shard's lease (NULL: nobody, a cluster of one);
-- `epoch` rises by one at every take, so a commit fenced by (owner, epoch) can tell a former
-- incarnation of the same node from the current one.
ALTER TABLE journal_shards
    ADD COLUMN owner TEXT,
    ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN lease_expires_at BIGINT;

-- The fence. A journal writer of a cluster node connects with `tally.owner` and `tally.epoch`
-- set to the lease it holds (`PgStore::fence_journal_writers`); every commit of a journal
-- batch moves its shard's `committed_seq`, and this trigger refuses that move unless the row
-- still names that owner and epoch. The move is an UPDATE of the same row the lease lives
-- in, so a take waits for a batch that is committing and a batch after the take sees the new
-- owner: a paused or partitioned former owner can never commit again. SQLSTATE `TL001` tells
-- the store the refusal is the fence (counted: `tally_cluster_fenced_commits_total`).
--
-- A server that is not a cluster node sets neither, and the WHEN clause skips the trigger
-- without entering PL/pgSQL (nothing added to a cluster of one's commits).
CREATE FUNCTION tally_lease_fence() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.owner IS DISTINCT FROM current_setting('tally.owner', true)
       OR OLD.epoch::TEXT IS DISTINCT FROM current_setting('tally.epoch', true) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TL001',
            MESSAGE = format('shard %s is leased to %s (epoch %s), not to %s (epoch %s): commit fenced',
                             OLD.shard, COALESCE(OLD.owner, '(nobody)'), OLD.epoch,
                             current_setting('tally.owner', true), current_setting('tally.epoch', true));
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER journal_shards_lease_fence
    BEFORE UPDATE OF committed_seq ON journal_shards
    FOR EACH ROW
    WHEN (COALESCE(current_setting('tally.epoch', true), '') <> '')
    EXECUTE FUNCTION tally_lease_fence();

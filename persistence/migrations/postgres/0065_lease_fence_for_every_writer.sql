-- The lease fence of 0064 held only for writers that opted in (a cluster node's, which set
-- `tally.epoch`). A writer that set nothing (a server that is not a cluster node, a tool)
-- skipped it even on a shard a cluster node owns. Now the fence applies to every move of a
-- shard's `committed_seq` whose row names an owner: only that owner, at that epoch, may move
-- it. A row that names no owner (a cluster of one, or a cluster's lease cleared by a server
-- that is not a cluster node once it had run out: `PgStore::open_shards`) is still skipped by
-- the WHEN clause without entering PL/pgSQL.
CREATE OR REPLACE FUNCTION tally_lease_fence() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.owner IS DISTINCT FROM current_setting('tally.owner', true)
       OR (OLD.owner IS NOT NULL AND OLD.epoch::TEXT IS DISTINCT FROM current_setting('tally.epoch', true)) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TL001',
            MESSAGE = format('shard %s is leased to %s (epoch %s), not to %s (epoch %s): commit fenced',
                             OLD.shard, COALESCE(OLD.owner, '(nobody)'), OLD.epoch,
                             COALESCE(current_setting('tally.owner', true), '(no cluster node)'),
                             COALESCE(current_setting('tally.epoch', true), '-'));
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER journal_shards_lease_fence ON journal_shards;
CREATE TRIGGER journal_shards_lease_fence
    BEFORE UPDATE OF committed_seq ON journal_shards
    FOR EACH ROW
    WHEN (OLD.owner IS NOT NULL OR COALESCE(current_setting('tally.epoch', true), '') <> '')
    EXECUTE FUNCTION tally_lease_fence();

-- A transfer's final record writes its idempotency key too (actors/src/saga.rs `give_key_back`).
--
-- A transfer refused as unavailable (an account's mailbox full, an actor quarantined) after
-- its saga started is recorded `failed`, and its caller is answered `503 OVERLOADED`: retry
-- later. Its final record carries no key, so that the retry under the same key runs afresh
-- instead of replaying the `503` for ever. SQLite and the in-memory store write a transfer's
-- record as its full state already; here the update of a stored row (a saga a commit cut
-- between its start and its end) left the key as the start wrote it. Every other final record
-- carries the key its start did, so for them nothing changes.
--
-- `tally_write_batch` (migration 0061) as it was, but for the key columns in its update.
CREATE OR REPLACE FUNCTION tally_write_batch(
    f_shard SMALLINT, f_before BIGINT, f_last BIGINT, f_booked_at BIGINT, f_first BIGINT,
    f_digest BYTEA, f_genesis BYTEA,
    p_account UUID[], p_booked_at BIGINT[], p_version BIGINT[], p_transfer UUID[], p_currency TEXT[],
    p_direction TEXT[], p_amount NUMERIC[], p_balance_after NUMERIC[], p_shard SMALLINT[], p_seq BIGINT[],
    t_id UUID[], t_kind TEXT[], t_status TEXT[], t_step TEXT[], t_source UUID[], t_destination UUID[],
    t_amount NUMERIC[], t_currency TEXT[], t_fee NUMERIC[], t_fx_rate NUMERIC[], t_destination_amount NUMERIC[],
    t_destination_currency TEXT[], t_pending_reason TEXT[], t_failure_reason TEXT[], t_reference TEXT[],
    t_description TEXT[], t_beneficiary_name TEXT[], t_beneficiary_iban TEXT[], t_initiated_by UUID[],
    t_idempotency_scope UUID[], t_idempotency_key TEXT[], t_idempotency_fingerprint TEXT[],
    t_created_at BIGINT[], t_completed_at BIGINT[], t_seq BIGINT[], t_metadata TEXT[],
    t_pending_expires_at BIGINT[], t_leg_from INT[], t_leg_to INT[], t_upsert BOOLEAN[],
    t_leg_accounts UUID[], t_leg_versions BIGINT[],
    e_shard SMALLINT, e_occurred_at BIGINT, e_seq BIGINT[], e_type TEXT[], e_object UUID[], e_data TEXT[],
    h_removed_account UUID[], h_removed_transfer UUID[],
    h_placed_account UUID[], h_placed_transfer UUID[], h_placed_amount NUMERIC[], h_placed_seq BIGINT[]
) RETURNS VOID LANGUAGE plpgsql
-- Tally's connections plan every statement afresh (`plan_cache_mode = force_custom_plan`,
-- postgres.rs `connect_options`: a generic plan costed on an empty table would keep scanning
-- it when it is large). Planning these inserts from 30 arrays took longer than running them
-- (pg_stat_statements with track_planning: 66 µs per call for the transfers' insert, 26 for
-- the postings'), and no plan of an insert from arrays depends on a table's size, so the
-- function keeps one plan per statement. The holds' delete, a join whose best plan depends on
-- the table's size, goes through EXECUTE, planned each time; the fence reads `journal_shards`
-- (one row per shard) and the link one row of `journal_batches` by its whole primary key.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_committed BIGINT;
BEGIN
    IF f_shard IS NOT NULL THEN
        UPDATE journal_shards SET committed_seq = f_last, booked_at = GREATEST(booked_at, f_booked_at)
        WHERE shard = f_shard AND committed_seq = f_before;
        IF NOT FOUND THEN
            SELECT committed_seq INTO v_committed FROM journal_shards WHERE shard = f_shard;
            RAISE EXCEPTION 'journal batch %..=% of shard % does not follow the committed sequence % (a gap, or a second writer)',
                f_first, f_last, f_shard, COALESCE(v_committed::TEXT, '(none)');
        END IF;
    END IF;

    IF cardinality(p_account) > 0 THEN
        INSERT INTO postings (account_id, booked_at, version, transfer_id, currency, direction, amount,
                              balance_after, shard, seq)
        SELECT * FROM UNNEST(p_account, p_booked_at, p_version, p_transfer, p_currency, p_direction, p_amount,
                             p_balance_after, p_shard, p_seq);
    END IF;

    IF cardinality(e_seq) > 0 THEN
        -- The batch's events, one row (migration 0061): the arrays as they came, in seq order.
        INSERT INTO event_batches (shard, last_seq, first_seq, occurred_at, seqs, types, objects, data)
        VALUES (e_shard, e_seq[cardinality(e_seq)], e_seq[1], e_occurred_at, e_seq, e_type, e_object, e_data);
    END IF;

    IF cardinality(t_id) > 0 THEN
        INSERT INTO transfers (id, kind, status, step, source_id, destination_id, amount, currency, fee, fx_rate,
            destination_amount, destination_currency, pending_reason, failure_reason, reference, description,
            beneficiary_name, beneficiary_iban, initiated_by, idempotency_scope, idempotency_key,
            idempotency_fingerprint, created_at, completed_at, seq, metadata, pending_expires_at,
            leg_accounts, leg_versions)
        SELECT u.id, u.kind, u.status, u.step, u.source_id, u.destination_id, u.amount, u.currency, u.fee,
            u.fx_rate, u.destination_amount, u.destination_currency, u.pending_reason, u.failure_reason,
            u.reference, u.description, u.beneficiary_name, u.beneficiary_iban, u.initiated_by,
            u.idempotency_scope, u.idempotency_key, u.idempotency_fingerprint, u.created_at, u.completed_at,
            u.seq, u.metadata::JSONB, u.pending_expires_at,
            CASE WHEN u.leg_to >= u.leg_from THEN t_leg_accounts[u.leg_from:u.leg_to] END,
            CASE WHEN u.leg_to >= u.leg_from THEN t_leg_versions[u.leg_from:u.leg_to] END
        FROM UNNEST(t_id, t_kind, t_status, t_step, t_source, t_destination, t_amount, t_currency, t_fee,
            t_fx_rate, t_destination_amount, t_destination_currency, t_pending_reason, t_failure_reason,
            t_reference, t_description, t_beneficiary_name, t_beneficiary_iban, t_initiated_by,
            t_idempotency_scope, t_idempotency_key, t_idempotency_fingerprint, t_created_at, t_completed_at,
            t_seq, t_metadata, t_pending_expires_at, t_leg_from, t_leg_to, t_upsert)
            AS u(id, kind, status, step, source_id, destination_id, amount, currency, fee, fx_rate,
                 destination_amount, destination_currency, pending_reason, failure_reason, reference,
                 description, beneficiary_name, beneficiary_iban, initiated_by, idempotency_scope,
                 idempotency_key, idempotency_fingerprint, created_at, completed_at, seq, metadata,
                 pending_expires_at, leg_from, leg_to, upsert)
        WHERE NOT u.upsert;
    END IF;

    IF cardinality(h_removed_account) > 0 THEN
        -- Planned afresh (EXECUTE): a join whose best plan depends on the table's size.
        EXECUTE 'DELETE FROM holds AS h USING UNNEST($1, $2) AS d(account_id, transfer_id)
                 WHERE h.account_id = d.account_id AND h.transfer_id = d.transfer_id'
            USING h_removed_account, h_removed_transfer;
    END IF;
    IF cardinality(h_placed_account) > 0 THEN
        INSERT INTO holds (account_id, transfer_id, amount, seq)
        SELECT * FROM UNNEST(h_placed_account, h_placed_transfer, h_placed_amount, h_placed_seq);
    END IF;

    IF true = ANY (t_upsert) THEN
        INSERT INTO transfers (id, kind, status, step, source_id, destination_id, amount, currency, fee, fx_rate,
            destination_amount, destination_currency, pending_reason, failure_reason, reference, description,
            beneficiary_name, beneficiary_iban, initiated_by, idempotency_scope, idempotency_key,
            idempotency_fingerprint, created_at, completed_at, seq, metadata, pending_expires_at,
            leg_accounts, leg_versions)
        SELECT u.id, u.kind, u.status, u.step, u.source_id, u.destination_id, u.amount, u.currency, u.fee,
            u.fx_rate, u.destination_amount, u.destination_currency, u.pending_reason, u.failure_reason,
            u.reference, u.description, u.beneficiary_name, u.beneficiary_iban, u.initiated_by,
            u.idempotency_scope, u.idempotency_key, u.idempotency_fingerprint, u.created_at, u.completed_at,
            u.seq, u.metadata::JSONB, u.pending_expires_at,
            CASE WHEN u.leg_to >= u.leg_from THEN t_leg_accounts[u.leg_from:u.leg_to] END,
            CASE WHEN u.leg_to >= u.leg_from THEN t_leg_versions[u.leg_from:u.leg_to] END
        FROM UNNEST(t_id, t_kind, t_status, t_step, t_source, t_destination, t_amount, t_currency, t_fee,
            t_fx_rate, t_destination_amount, t_destination_currency, t_pending_reason, t_failure_reason,
            t_reference, t_description, t_beneficiary_name, t_beneficiary_iban, t_initiated_by,
            t_idempotency_scope, t_idempotency_key, t_idempotency_fingerprint, t_created_at, t_completed_at,
            t_seq, t_metadata, t_pending_expires_at, t_leg_from, t_leg_to, t_upsert)
            AS u(id, kind, status, step, source_id, destination_id, amount, currency, fee, fx_rate,
                 destination_amount, destination_currency, pending_reason, failure_reason, reference,
                 description, beneficiary_name, beneficiary_iban, initiated_by, idempotency_scope,
                 idempotency_key, idempotency_fingerprint, created_at, completed_at, seq, metadata,
                 pending_expires_at, leg_from, leg_to, upsert)
        WHERE u.upsert
        ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, step = EXCLUDED.step,
            pending_reason = EXCLUDED.pending_reason, failure_reason = EXCLUDED.failure_reason,
            completed_at = EXCLUDED.completed_at, seq = EXCLUDED.seq, fee = EXCLUDED.fee,
            fx_rate = EXCLUDED.fx_rate, destination_amount = EXCLUDED.destination_amount,
            leg_accounts = EXCLUDED.leg_accounts, leg_versions = EXCLUDED.leg_versions,
            pending_expires_at = EXCLUDED.pending_expires_at, idempotency_scope = EXCLUDED.idempotency_scope,
            idempotency_key = EXCLUDED.idempotency_key, idempotency_fingerprint = EXCLUDED.idempotency_fingerprint;
    END IF;

    IF f_shard IS NOT NULL THEN
        -- The previous link is the one ending where this batch follows on (the fence above
        -- checked that): a look-up of the whole primary key, whatever the table's size.
        INSERT INTO journal_batches (shard, last_seq, first_seq, hash)
        SELECT f_shard, f_last, f_first, sha256(COALESCE(
            (SELECT hash FROM journal_batches WHERE shard = f_shard AND last_seq = f_before),
            f_genesis) || f_digest);
    END IF;
END
$$;

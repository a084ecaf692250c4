//! The Postgres store (sqlx 0.8.6).
//!
//! A shard's journal batch (its `BatchPlan`) is written in one transaction by `write_plan`.
//! A small batch of transfers is one call of a function (`write_batch.rs`, migration 0060)
//! that takes every table's rows as whole columns (arrays): one round trip. A larger one (or
//! one with accounts, snapshots, wallets, ...) writes new rows by binary `COPY` (`copy.rs`) and
//! changed rows by one statement per table taking whole columns as arrays through `UNNEST`, so
//! a batch of 8,192 records is a dozen round trips, not thousands. Either way it advances the
//! shard's `journal_shards.committed_seq` from the value it expects (the fence); a gap in the
//! sequence, or a second writer on the same database, finds a different value and the batch
//! is refused as `Corrupt`, rolled back.
//!
//! Journal writers commit on connections of their own, driven on the shard's thread (see
//! `PgJournalWriter`). Every other query runs on the store's own small runtime, so its
//! connections' I/O never depends on which runtime the caller is on (actix arbiters, HTTP).

pub(crate) mod copy;
mod key_lookups;
mod write_batch;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use rust_decimal::Decimal;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Row, Transaction};

use copy::CopyRows;

use tally_engine::{AccountId, Currency, ErrorCode, PendingReason, Posting, Transfer, TransferId};
use uuid::Uuid;

use crate::aml::sql::AmlFlagWrites;
use crate::audit::AppendAudit;
use crate::batch::{BatchPlan, DirectCommits};
use crate::crypto_sql::CryptoWrites;
use crate::runtime::StoreRuntime;
use crate::sql::{seq_of, seq_to_db};
use crate::store::corrupt;
use crate::store::{JournalWriter, Loaded, PipelineTurn, SequencedRecord, Store, StoreError, StoreReads};

/// Connections in the pool: activations, recovery, key look-ups and reads (journal writers
/// have connections of their own). Eight is far more than two cores can keep busy.
const POOL_CONNECTIONS_MAX: u32 = 8;

/// How long a query waits for a connection before the store reports itself unavailable. Short,
/// so that during an outage the journal's retry loop, not a hidden wait, decides what happens.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct PgStore {
    pool: PgPool,
    runtime: StoreRuntime,
    key_lookups: key_lookups::KeyLookups,
    /// Where the journal writers open their own connections.
    options: PgConnectOptions,
    direct: DirectCommits,
    /// Set on a cluster node before its engine starts: the leases its journal writers' commits
    /// are fenced by (`fence_journal_writers`).
    fence: std::sync::OnceLock<WriterFence>,
}

/// What a cluster node's journal writers connect with: the node, the epoch of each shard's
/// lease, and how long a transaction may sit idle (a paused node's open transaction must not
/// keep a shard's row locked past its lease).
#[derive(Clone, Debug)]
struct WriterFence {
    node: String,
    epochs: std::collections::HashMap<u16, i64>,
    lease: Duration,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects (without migrating). `url` is a `postgres://` URL.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let runtime = StoreRuntime::new("tally-postgres")?;
        let pool = connect_pool(&runtime, url, POOL_CONNECTIONS_MAX).await?;
        let key_lookups = key_lookups::KeyLookups::start(&runtime, pool.clone());
        let options = connect_options(url)?;
        Ok(PgStore {
            pool,
            runtime,
            key_lookups,
            options,
            direct: DirectCommits::default(),
            fence: std::sync::OnceLock::new(),
        })
    }

    /// Makes this store's journal writers commit only while `node` holds `leases` (migrations
    /// 0064 and 0065's trigger): their connections carry the node and each shard's epoch, and
    /// an idle-in-transaction timeout of the lease time, so a node paused between its fence
    /// and its `COMMIT` cannot keep a shard's row locked after its lease has run out. Call
    /// once, before the engine starts.
    pub fn fence_journal_writers(&self, node: &str, leases: &[crate::cluster::Lease], lease: Duration) {
        let epochs = leases.iter().map(|lease| (lease.shard, lease.epoch)).collect();
        let _ = self.fence.set(WriterFence { node: node.to_owned(), epochs, lease });
    }

    /// The connection settings of shard `shard`'s journal writers.
    ///
    /// A writer runs the same few statements on every commit, each a keyed write: rows added,
    /// or rows changed or removed by their primary key. Planning them afresh each time
    /// (`force_custom_plan`, which the readers keep) was 8-9 % of Postgres's CPU per transfer
    /// (`pg_stat_statements`' plan time, `perf` on the backends). So a writer plans each
    /// statement once and keeps the plan (`force_generic_plan`). A plan kept is made on the
    /// tables as they were then, and on a new ledger's tiny tables a hash join over a whole
    /// table's scan is the cheapest plan for a keyed write, which kept would scan the table on
    /// every commit as it grows. With sequential scans, hash joins and merge joins off, the
    /// only plans left are those a keyed write wants at any size: nested loops over the
    /// primary keys. Every writer statement has its key's index: the ledger's writes are
    /// tested (`the_journal_writer_never_scans_a_table_even_with_plans_made_on_empty_tables`),
    /// and the wallet, crypto, AML and audit writes touch single rows by primary key.
    fn writer_options(&self, shard: u16) -> Result<PgConnectOptions, StoreError> {
        let options = self.options.clone().options([
            ("plan_cache_mode", "force_generic_plan"),
            ("enable_seqscan", "off"),
            ("enable_hashjoin", "off"),
            ("enable_mergejoin", "off"),
        ]);
        let Some(fence) = self.fence.get() else {
            return Ok(options);
        };
        let epoch = fence
            .epochs
            .get(&shard)
            .ok_or_else(|| StoreError::Unavailable(format!("this node holds no lease on shard {shard}")))?;
        // No statement timeout: a statement in flight holds no lease row until the batch's
        // fence, which is its last, and a large `COPY` may rightly take long.
        Ok(options.options([
            ("tally.owner", fence.node.clone()),
            ("tally.epoch", epoch.to_string()),
            ("idle_in_transaction_session_timeout", fence.lease.as_millis().to_string()),
        ]))
    }

    /// Applies the versioned migrations in `persistence/migrations/postgres` not yet applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::sql::migrate(self).await
    }

    /// Runs `work` on the store's runtime.
    pub(crate) async fn run<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(PgPool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.runtime.run(work(self.pool.clone())).await
    }
}

/// Connections in each shard journal's pipeline. With two, the next batch writes its new rows
/// while the previous one commits (`PipelineTurn`). Measured with `scripts/bench` uniform on
/// the 2-core machine (2026-12-02, adjacent runs of the same binary): one connection cost
/// 12-30 % less Postgres CPU per transfer (75.7-77.5 against 86.3-108.8 µs) at the same or a
/// higher rate, with larger batches (40 against 31 transfers) and half the backends taking
/// turns on the cores. Records still gather in the queue while a batch commits, so each commit
/// carries all of them. The writer still pipelines if this is raised (a disk whose fsync is
/// slow may want two).
const JOURNAL_PIPELINE_DEPTH: usize = 1;

/// Opens a pool of `connections` to `url` on `runtime`, set up the way every Tally store wants.
pub(crate) async fn connect_pool(runtime: &StoreRuntime, url: &str, connections: u32) -> Result<PgPool, StoreError> {
    let options = connect_options(url)?;
    runtime
        .run(async move {
            PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                // sqlx pings every connection it hands out by default: a second round trip
                // for every point read and commit. `scripts/bench`'s flamegraph showed that
                // ping at 24 % of the server's samples in a batched run. A connection that
                // died (Postgres restarted) fails its next query instead, is dropped by the
                // pool, and the journal retries the commit, as it does for any outage.
                .test_before_acquire(false)
                .connect_with(options)
                .await
                .map_err(classify)
        })
        .await
}

/// The connection settings every Tally connection uses.
pub(crate) fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    Ok(PgConnectOptions::from_str(url)
        .map_err(|error| StoreError::Corrupt(format!("bad url: {error}")))?
        // A fresh database's tables grow from empty by orders of magnitude while the server
        // runs. With the default plan cache, a statement's sixth execution caches a generic
        // plan costed on the tables as they were then: a hash join over a sequential scan of
        // a 5-row table, still used when it holds a million rows (seen in `scripts/bench`:
        // Postgres at 135 % CPU scanning `transfers` and `accounts` on every group commit and
        // key look-up until autovacuum's first ANALYZE). A custom plan is costed on each
        // execution against the relation's current size; planning these keyed statements
        // costs microseconds. (The journal's writers, whose statements are all keyed writes,
        // keep their plans instead: `PgStore::writer_options`.)
        .options([("plan_cache_mode", "force_custom_plan")]))
}

/// A shard journal's writer: a connection of its own, driven on the shard's thread. A failed
/// commit drops the connection (it may be dead: Postgres restarted, or the network cut it), and
/// the next attempt connects afresh, so the journal's retries outlive an outage.
struct PgJournalWriter {
    connection: Option<PgConnection>,
    options: PgConnectOptions,
    shard: i16,
}

impl PgJournalWriter {
    async fn connection(&mut self) -> Result<&mut PgConnection, StoreError> {
        match &mut self.connection {
            Some(connection) => Ok(connection),
            slot => Ok(slot.insert(PgConnection::connect_with(&self.options).await.map_err(classify)?)),
        }
    }

    /// Keeps the connection after a success, drops it after a failure.
    fn settle<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            self.connection = None;
        }
        result
    }
}

#[async_trait]
impl JournalWriter for PgJournalWriter {
    async fn commit(&mut self, plan: &BatchPlan, mut turn: PipelineTurn) -> Result<(), StoreError> {
        let result = match self.connection().await {
            Ok(connection) => write_plan(connection, plan, turn).await,
            Err(error) => {
                // Pass the turn on only once the batch before has ended, as a commit would:
                // the batch behind this one must not fence ahead of it.
                turn.wait().await;
                Err(error)
            }
        };
        self.settle(result)
    }

    /// The shard's committed sequence, which tells whether a batch whose answer was lost is in.
    /// On a cluster node only while the shard's row still names this writer's lease: once
    /// another node took it, that node carries the sequence on from the committed prefix, and
    /// a number at or past this batch's would wrongly say it committed (refused as fenced).
    /// The same for a server that is not a cluster node (no fence values): only while no node
    /// holds the shard. It used to be answered whatever the row named, so such a server whose
    /// batch lost its answer while a node took the shards could count the node's commits as
    /// its own and acknowledge records the store never held.
    async fn committed_seq(&mut self) -> Result<u64, StoreError> {
        let shard = self.shard;
        let result = match self.connection().await {
            Ok(connection) => sqlx::query_as::<_, (i64, bool)>(
                "SELECT committed_seq,
                        (COALESCE(current_setting('tally.epoch', true), '') = '' AND owner IS NULL)
                        OR (owner IS NOT DISTINCT FROM current_setting('tally.owner', true)
                            AND epoch::TEXT = current_setting('tally.epoch', true))
                 FROM journal_shards WHERE shard = $1",
            )
            .bind(shard)
            .fetch_one(connection)
            .await
            .map_err(classify)
            .and_then(|(committed, ours)| {
                if ours {
                    seq_of(committed)
                } else {
                    // A refusal by the fence like a commit's (`TL001`): the retry of a batch
                    // whose first attempt's answer was lost ends here, not at the trigger.
                    crate::cluster::count_fenced_commit();
                    Err(corrupt(format!("shard {shard} is leased to another node: this writer is fenced")))
                }
            }),
            Err(error) => Err(error),
        };
        self.settle(result)
    }

    async fn holds(&mut self, plan: &BatchPlan) -> Result<bool, StoreError> {
        let shard = i16::try_from(plan.shard).map_err(|_| corrupt("shard beyond SMALLINT"))?;
        let (last, before) = (seq_to_db(plan.last_seq)?, seq_to_db(plan.first_seq.saturating_sub(1))?);
        let result = match self.connection().await {
            Ok(connection) => {
                sqlx::query_as::<_, (i64, Vec<u8>, Option<Vec<u8>>)>(crate::events::chain::BATCH_LINK_SQL)
                    .bind(shard)
                    .bind(last)
                    .bind(before)
                    .fetch_optional(connection)
                    .await
                    .map_err(classify)
                    .map(|row| {
                        row.is_some_and(|(first, hash, prev)| {
                            crate::events::chain::is_link_of(plan, first, &hash, prev.as_deref())
                        })
                    })
            }
            Err(error) => Err(error),
        };
        self.settle(result)
    }
}

impl crate::sql::LedgerSql for PgStore {}

impl crate::sql::SqlStore for PgStore {
    fn sql_pool(&self) -> crate::sql::SqlPool {
        crate::sql::SqlPool::Postgres(self.pool.clone())
    }

    fn sql_runtime(&self) -> &StoreRuntime {
        &self.runtime
    }
}

/// Sorts a database error into "retry later" and "something is wrong with the data or code".
pub(crate) fn classify(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(database) => {
            let code = database.code().map(|code| code.to_string()).unwrap_or_default();
            if code == crate::cluster::FENCED_SQLSTATE {
                crate::cluster::count_fenced_commit();
            }
            // 08: connection exception; 40: transaction rollback (serialization, deadlock);
            // 53: insufficient resources; 57: operator intervention (shutdown, cancel);
            // 25P03/25P04: the server ended the session for sitting idle in a transaction (a
            // cluster node's writers set that timeout: a node paused mid-commit; the
            // transaction rolled back, and the retry meets the fence if the lease moved);
            // 25006: the server takes no writes (reached during a failover, or a primary made
            // a standby); 58: a system error on the server (an I/O error). None says the data
            // is wrong: the journal waits and tries again on a fresh connection, as through
            // an outage, instead of stopping for good.
            if ["08", "40", "53", "57", "58", "25P03", "25P04", "25006"].iter().any(|class| code.starts_with(class)) {
                StoreError::Unavailable(error.to_string())
            } else {
                StoreError::Corrupt(error.to_string())
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Corrupt(error.to_string()),
    }
}

/// Rows of a batch (postings, transfer rows, events, holds) up to which it is written as one
/// call (`write_batch.rs`) rather than by `COPY`: about four transfers. The call is one round
/// trip where `COPY` and the statements around it are about a dozen, each of which wakes the
/// backend and then this writer; but Postgres spends more on a row taken apart from arrays
/// than on a `COPY` row (and logs each row on its own where `COPY` logs a page of them).
/// Measured (2026-12-03, `README.md` "Benchmarks"): at 1,000 transfers/s (two or three
/// transfers per batch) the call cut Tally's CPU per transfer by about a third; at saturation
/// (`scripts/bench` `uniform`, ~40 transfers per batch) with the limit at 64 rows, a quarter of
/// the batches took the call and both Tally's and Postgres's CPU per transfer were ~15 % worse
/// in interleaved runs (not explained yet; likeliest, cheaper small commits make batches
/// smaller and so more of them). So only the small batches of a lightly loaded node take it.
pub(crate) const ONE_CALL_ROWS_MAX: usize = 16;

/// Writes one batch plan in one transaction on `connection` (a journal writer's own, or one
/// from the pool for a direct commit).
///
/// A small batch that writes only what `write_batch` writes (the common case at a moderate
/// rate: transfers alone) is that one call, in a transaction of its own: one round trip.
/// Otherwise a pipelined batch writes its new rows (the bulk of it) by `COPY` while the batch
/// before it commits, waits for that commit to end (`PipelineTurn`), then makes the changes to
/// existing rows and advances the shard's fence, last.
pub(crate) async fn write_plan(
    connection: &mut PgConnection,
    plan: &BatchPlan,
    mut turn: PipelineTurn,
) -> Result<(), StoreError> {
    if one_call(plan) {
        // The call's fence and link read what the batch before committed.
        turn.wait().await;
        return write_batch::write(connection, plan).await;
    }
    let mut transaction = connection.begin().await.map_err(classify)?;
    open_accounts(&mut transaction, plan).await?;
    write_postings(&mut transaction, plan).await?;
    write_new_transfers(&mut transaction, plan).await?;
    crate::events::postgres::write_events(&mut transaction, plan).await?;
    turn.wait().await;
    update_accounts(&mut transaction, plan).await?;
    write_keyed_amounts(&mut transaction, "holds", &plan.holds_removed, &plan.holds_placed).await?;
    write_keyed_amounts(&mut transaction, "credit_admissions", &plan.admissions_removed, &plan.admissions_placed)
        .await?;
    upsert_transfers(&mut transaction, plan).await?;
    transaction.insert_aml_flags(&plan.aml_flags).await?;
    commit_wallets(&mut transaction, plan).await?;
    transaction.commit_crypto(plan).await?;
    fence_and_link(&mut transaction, plan).await?;
    // Last, so the audit head row (locked `FOR UPDATE` by the append) is held only from here to
    // the commit, and never while this transaction waits for another lock.
    for record in &plan.audits {
        transaction.append_audit(record).await?;
    }
    transaction.commit().await.map_err(classify)
}

/// Whether `plan` is written as one call: small, and nothing in it that the call does not
/// write.
pub(crate) fn one_call(plan: &BatchPlan) -> bool {
    let rows = plan.postings.len()
        + plan.transfers_new.len()
        + plan.transfers_upsert.len()
        + plan.events.len()
        + plan.holds_placed.len()
        + plan.holds_removed.len();
    rows <= ONE_CALL_ROWS_MAX && !writes_more_than_the_call(plan)
}

/// Whether `plan` has rows that `write_batch` does not write. Every field is named, so a field
/// added to `BatchPlan` does not compile until it is placed on one side or the other.
fn writes_more_than_the_call(plan: &BatchPlan) -> bool {
    let BatchPlan {
        // Written by the call.
        records: _,
        shard: _,
        first_seq: _,
        last_seq: _,
        booked_at: _,
        holds_placed: _,
        holds_removed: _,
        postings: _,
        transfers_new: _,
        transfers_upsert: _,
        events: _,
        // Not written at all: what the journal keeps back from the store.
        holds_kept: _,
        holds_settled: _,
        // Written around it.
        accounts_opened,
        account_settings,
        snapshots,
        wallets_opened,
        wallet_statuses,
        wallet_assets,
        admissions_placed,
        admissions_removed,
        wallet_holds_placed,
        wallet_holds_removed,
        aml_flags,
        wallet_postings,
        crypto_ops,
        audits,
    } = plan;
    !(accounts_opened.is_empty()
        && account_settings.is_empty()
        && snapshots.is_empty()
        && wallets_opened.is_empty()
        && wallet_statuses.is_empty()
        && wallet_assets.is_empty()
        && admissions_placed.is_empty()
        && admissions_removed.is_empty()
        && wallet_holds_placed.is_empty()
        && wallet_holds_removed.is_empty()
        && aml_flags.is_empty()
        && wallet_postings.is_empty()
        && crypto_ops.is_empty()
        && audits.is_empty())
}

/// The batch's fence and its link of the journal's hash chain, in one statement (one round
/// trip fewer per batch than two: each one waits for the writer's next turn on the shard's
/// thread). After the pipeline turn, so the shard's previous batch has committed and its link
/// is visible here: the link ending at `first - 1`, read by its whole primary key (none before
/// a shard's first link: the genesis value). A snapshot flush alone advances nothing and
/// writes neither.
///
/// The fence: a refused batch sets -1 - (what is there): the value stays readable, cannot be
/// taken for `last`, and is rolled back with the rest of the transaction (the link with it).
async fn fence_and_link(transaction: &mut Transaction<'_, Postgres>, plan: &BatchPlan) -> Result<(), StoreError> {
    if plan.records.is_empty() {
        return Ok(());
    }
    let shard = i16::try_from(plan.shard).map_err(|_| corrupt("shard beyond SMALLINT"))?;
    let (before, last) = (seq_to_db(plan.first_seq.saturating_sub(1))?, seq_to_db(plan.last_seq)?);
    let digest = crate::events::chain::batch_digest(plan);
    let now: Option<i64> = sqlx::query_scalar(
        "WITH link AS (
             INSERT INTO journal_batches (shard, last_seq, first_seq, hash)
             SELECT $1, $3, $5, sha256(COALESCE(
                 (SELECT hash FROM journal_batches WHERE shard = $1 AND last_seq = $2),
                 $7) || $6)
         )
         UPDATE journal_shards
         SET committed_seq = CASE WHEN committed_seq = $2 THEN $3 ELSE -1 - committed_seq END,
             booked_at = GREATEST(booked_at, $4)
         WHERE shard = $1 RETURNING committed_seq",
    )
    .bind(shard)
    .bind(before)
    .bind(last)
    .bind(plan.booked_at.as_micros())
    .bind(seq_to_db(plan.first_seq)?)
    .bind(digest.as_slice())
    .bind(crate::events::chain::GENESIS.as_slice())
    .fetch_optional(&mut **transaction)
    .await
    .map_err(classify)?;
    if now != Some(last) {
        return Err(corrupt(format!(
            "journal batch {}..={} of shard {} does not follow the committed sequence {} (a gap, or a second writer)",
            plan.first_seq,
            plan.last_seq,
            plan.shard,
            now.map_or_else(|| "(none)".to_owned(), |refused| (-1 - refused).to_string())
        )));
    }
    Ok(())
}

/// Accounts opened: new rows.
async fn open_accounts(transaction: &mut Transaction<'_, Postgres>, plan: &BatchPlan) -> Result<(), StoreError> {
    if !plan.accounts_opened.is_empty() {
        let rows = &plan.accounts_opened;
        sqlx::query(
            "INSERT INTO accounts (id, owner_id, currency, kind, status, balance, held, credit_limit, created_at, version, booked_at)
             SELECT *, 0, 0 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::numeric[],
                                  $7::numeric[], $8::numeric[], $9::int8[])",
        )
        .bind(rows.iter().map(|(_, a)| a.id.as_uuid()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, a)| a.owner.map(|owner| owner.as_uuid())).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, a)| a.currency.code()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, a)| a.kind.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, a)| a.status.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, a)| a.balance()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, a)| a.held()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, a)| a.credit_limit()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, a)| a.created_at.as_micros()).collect::<Vec<_>>())
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

/// Status and credit-limit changes, and (on a flush) balance snapshots.
async fn update_accounts(transaction: &mut Transaction<'_, Postgres>, plan: &BatchPlan) -> Result<(), StoreError> {
    if !plan.account_settings.is_empty() {
        let rows = &plan.account_settings;
        let updated = sqlx::query(
            "UPDATE accounts AS a SET status = u.status, credit_limit = u.credit_limit
             FROM UNNEST($1::uuid[], $2::text[], $3::numeric[]) AS u(id, status, credit_limit)
             WHERE a.id = u.id",
        )
        .bind(rows.iter().map(|(id, _, _, _)| id.as_uuid()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, status, _, _)| status.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, _, limit, _)| *limit).collect::<Vec<_>>())
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
        if updated.rows_affected() != rows.len() as u64 {
            return Err(corrupt("journal record for an account the store does not have"));
        }
    }
    if !plan.snapshots.is_empty() {
        // An account's postings can come through several shards' journals, and each writer
        // flushes what it saw: the newest (highest version) wins.
        let rows = &plan.snapshots;
        sqlx::query(
            "UPDATE accounts AS a SET balance = u.balance, held = u.held, version = u.version, booked_at = u.booked_at
             FROM UNNEST($1::uuid[], $2::numeric[], $3::numeric[], $4::int8[], $5::int8[])
                  AS u(id, balance, held, version, booked_at)
             WHERE a.id = u.id AND a.version < u.version",
        )
        .bind(rows.iter().map(|s| s.account.as_uuid()).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.balance).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.held).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| version_to_db(s.version)).collect::<Result<Vec<_>, _>>()?)
        .bind(rows.iter().map(|s| s.booked_at.as_micros()).collect::<Vec<_>>())
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

/// The rows of `holds` or `credit_admissions` (the same columns: an amount an account set aside
/// or promised for a transfer). Removals before placements: a hold removed and placed again in
/// one batch (see `BatchPlan`) must end placed.
async fn write_keyed_amounts(
    transaction: &mut Transaction<'_, Postgres>,
    table: &'static str,
    removed: &[(AccountId, TransferId)],
    placed: &[(AccountId, TransferId, Decimal, u64)],
) -> Result<(), StoreError> {
    if !removed.is_empty() {
        sqlx::query(&format!(
            "DELETE FROM {table} AS h USING UNNEST($1::uuid[], $2::uuid[]) AS d(account_id, transfer_id)
             WHERE h.account_id = d.account_id AND h.transfer_id = d.transfer_id"
        ))
        .bind(removed.iter().map(|(a, _)| a.as_uuid()).collect::<Vec<_>>())
        .bind(removed.iter().map(|(_, t)| t.as_uuid()).collect::<Vec<_>>())
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }
    if !placed.is_empty() {
        sqlx::query(&format!(
            "INSERT INTO {table} (account_id, transfer_id, amount, seq)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::numeric[], $4::int8[])"
        ))
        .bind(placed.iter().map(|(a, _, _, _)| a.as_uuid()).collect::<Vec<_>>())
        .bind(placed.iter().map(|(_, t, _, _)| t.as_uuid()).collect::<Vec<_>>())
        .bind(placed.iter().map(|(_, _, amount, _)| *amount).collect::<Vec<_>>())
        .bind(placed.iter().map(|(_, _, _, seq)| seq_to_db(*seq)).collect::<Result<Vec<_>, _>>()?)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

async fn write_postings(transaction: &mut Transaction<'_, Postgres>, plan: &BatchPlan) -> Result<(), StoreError> {
    let mut rows = CopyRows::new();
    for posting in &plan.postings {
        rows.row(10);
        rows.uuid(posting.account.as_uuid());
        rows.int8(posting.booked_at.as_micros());
        rows.int8(version_to_db(posting.version)?);
        rows.uuid(posting.transfer.as_uuid());
        rows.text(posting.currency.code());
        rows.text(posting.direction.as_str());
        rows.numeric(posting.amount);
        rows.numeric(posting.balance_after);
        rows.int2(i16::try_from(posting.shard).map_err(|_| corrupt("shard beyond SMALLINT"))?);
        rows.int8(seq_to_db(posting.seq)?);
    }
    rows.send(
        transaction,
        "COPY postings (account_id, booked_at, version, transfer_id, currency, direction, amount, balance_after, shard, seq)
         FROM STDIN (FORMAT BINARY)",
    )
    .await
}

const TRANSFER_COLUMNS: &str = "id, kind, status, step, source_id, destination_id, amount, currency, fee, fx_rate,
    destination_amount, destination_currency, pending_reason, failure_reason, reference, description, beneficiary_name,
    beneficiary_iban, initiated_by, idempotency_scope, idempotency_key, idempotency_fingerprint, created_at,
    completed_at, seq, metadata, pending_expires_at";

/// New transfer rows, by binary COPY: transfers written once in their final state, and the
/// `processing` rows (with their legs) of sagas a commit cut after money moved.
async fn write_new_transfers(transaction: &mut Transaction<'_, Postgres>, plan: &BatchPlan) -> Result<(), StoreError> {
    let mut rows = CopyRows::new();
    for row in &plan.transfers_new {
        let t = &row.transfer;
        let (leg_accounts, leg_versions) = legs_of(row)?;
        rows.row(29);
        rows.uuid(t.id.as_uuid());
        rows.text(t.kind.as_str());
        rows.text(t.status.as_str());
        rows.text(t.step.as_str());
        rows.uuid(t.source.as_uuid());
        rows.uuid(t.destination.as_uuid());
        rows.numeric(t.amount);
        rows.text(t.currency.code());
        rows.numeric(t.fee);
        rows.optional_numeric(t.fx_rate);
        rows.numeric(t.destination_amount);
        rows.text(t.destination_currency.code());
        rows.optional_text(t.pending_reason.map(PendingReason::as_str));
        rows.optional_text(t.failure_reason.map(ErrorCode::as_str));
        rows.optional_text(t.reference.as_deref());
        rows.optional_text(t.description.as_deref());
        rows.optional_text(t.beneficiary.as_ref().map(|b| b.name.as_str()));
        rows.optional_text(t.beneficiary.as_ref().map(|b| b.iban.as_str()));
        rows.optional_uuid(t.initiated_by.map(|user| user.as_uuid()));
        rows.optional_uuid(t.idempotency.as_ref().map(|i| i.scope));
        rows.optional_text(t.idempotency.as_ref().map(|i| &*i.key));
        rows.optional_text(t.idempotency.as_ref().map(|i| &*i.fingerprint));
        rows.int8(t.created_at.as_micros());
        rows.optional_int8(t.completed_at.map(|at| at.as_micros()));
        rows.int8(seq_to_db(row.seq)?);
        // NULL for a transfer without metadata: one field, nothing else (migration 0050).
        rows.optional_jsonb(crate::metadata::to_db(&t.metadata).as_deref());
        rows.optional_int8(t.pending_expires_at.map(|at| at.as_micros()));
        rows.uuid_array_or_null(&leg_accounts);
        rows.int8_array_or_null(&leg_versions);
    }
    rows.send(
        transaction,
        &format!("COPY transfers ({TRANSFER_COLUMNS}, leg_accounts, leg_versions) FROM STDIN (FORMAT BINARY)"),
    )
    .await
}

/// A transfer row's legs as two columns.
fn legs_of(row: &crate::batch::TransferRow) -> Result<(Vec<Uuid>, Vec<i64>), StoreError> {
    Ok(row
        .legs
        .iter()
        .map(|(account, version)| Ok((account.as_uuid(), version_to_db(*version)?)))
        .collect::<Result<Vec<_>, StoreError>>()?
        .into_iter()
        .unzip())
}

/// The columns an upsert replaces in a stored transfer row: what a state change can change,
/// the idempotency key included (a transfer refused as unavailable gives it back: saga.rs
/// `give_key_back`).
const TRANSFER_UPDATED: &str = "status = EXCLUDED.status, step = EXCLUDED.step,
    pending_reason = EXCLUDED.pending_reason, failure_reason = EXCLUDED.failure_reason,
    completed_at = EXCLUDED.completed_at, seq = EXCLUDED.seq, fee = EXCLUDED.fee, fx_rate = EXCLUDED.fx_rate,
    destination_amount = EXCLUDED.destination_amount, leg_accounts = EXCLUDED.leg_accounts,
    leg_versions = EXCLUDED.leg_versions, pending_expires_at = EXCLUDED.pending_expires_at,
    idempotency_scope = EXCLUDED.idempotency_scope, idempotency_key = EXCLUDED.idempotency_key,
    idempotency_fingerprint = EXCLUDED.idempotency_fingerprint";

/// The other transfer rows: state changes of stored transfers (the final state of a saga a
/// commit cut, an admin's decision on a pending one), an atomic batch's intent, and the rows of
/// still-running sagas cut again after more money moved, with their legs: all of a batch's in
/// one `UNNEST` upsert. A row's legs travel as a slice of two flat arrays (`leg_accounts`,
/// `leg_versions`) given by its `leg_from`/`leg_to` (1-based, inclusive; `leg_to < leg_from`
/// for a row without legs, whose columns are then NULL), because `UNNEST` of an array of arrays
/// would flatten them. Before, each row with legs was a statement of its own: a round trip
/// each, 6,344 of them in a 20 s `scripts/bench` batch run.
async fn upsert_transfers(transaction: &mut Transaction<'_, Postgres>, plan: &BatchPlan) -> Result<(), StoreError> {
    let rows = &plan.transfers_upsert;
    if rows.is_empty() {
        return Ok(());
    }
    let columns = write_batch::Transfers::of(&[], rows)?;
    sqlx::query(&format!(
        "INSERT INTO transfers ({TRANSFER_COLUMNS}, leg_accounts, leg_versions)
         SELECT {TRANSFER_COLUMNS},
             CASE WHEN leg_to >= leg_from THEN ($28::uuid[])[leg_from:leg_to] END,
             CASE WHEN leg_to >= leg_from THEN ($29::int8[])[leg_from:leg_to] END
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[],
             $6::uuid[], $7::numeric[], $8::text[], $9::numeric[], $10::numeric[], $11::numeric[], $12::text[],
             $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::uuid[], $20::uuid[],
             $21::text[], $22::text[], $23::int8[], $24::int8[], $25::int8[], $26::text[]::jsonb[], $27::int8[],
             $30::int4[], $31::int4[]) AS u({TRANSFER_COLUMNS}, leg_from, leg_to)
         ON CONFLICT (id) DO UPDATE SET {TRANSFER_UPDATED}"
    ))
    .bind(columns.id)
    .bind(columns.kind)
    .bind(columns.status)
    .bind(columns.step)
    .bind(columns.source)
    .bind(columns.destination)
    .bind(columns.amount)
    .bind(columns.currency)
    .bind(columns.fee)
    .bind(columns.fx_rate)
    .bind(columns.destination_amount)
    .bind(columns.destination_currency)
    .bind(columns.pending_reason)
    .bind(columns.failure_reason)
    .bind(columns.reference)
    .bind(columns.description)
    .bind(columns.beneficiary_name)
    .bind(columns.beneficiary_iban)
    .bind(columns.initiated_by)
    .bind(columns.key_scope)
    .bind(columns.key)
    .bind(columns.fingerprint)
    .bind(columns.created_at)
    .bind(columns.completed_at)
    .bind(columns.seq)
    .bind(columns.metadata)
    .bind(columns.pending_expires_at)
    .bind(columns.leg_accounts)
    .bind(columns.leg_versions)
    .bind(columns.leg_from)
    .bind(columns.leg_to)
    .execute(&mut **transaction)
    .await
    .map_err(classify)?;
    Ok(())
}

/// A 1-based position in a batch's flat leg arrays, as Postgres's `int4` subscripts take it.
fn leg_position(position: usize) -> Result<i32, StoreError> {
    i32::try_from(position).map_err(|_| corrupt("a batch's transfer legs beyond int4 positions"))
}

/// Wallet writes are few next to account writes, so they go row by row.
async fn commit_wallets(transaction: &mut Transaction<'_, Postgres>, plan: &BatchPlan) -> Result<(), StoreError> {
    for (seq, wallet) in &plan.wallets_opened {
        sqlx::query("INSERT INTO wallets (id, owner_id, status, created_at, snapshot_seq) VALUES ($1, $2, $3, $4, $5)")
            .bind(wallet.id.as_uuid())
            .bind(wallet.owner.as_uuid())
            .bind(wallet.status.as_str())
            .bind(wallet.created_at.as_micros())
            .bind(seq_to_db(*seq)?)
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
    }
    for (wallet, status, seq) in &plan.wallet_statuses {
        let updated = sqlx::query("UPDATE wallets SET status = $2, snapshot_seq = $3 WHERE id = $1")
            .bind(wallet.as_uuid())
            .bind(status.as_str())
            .bind(seq_to_db(*seq)?)
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
        if updated.rows_affected() != 1 {
            return Err(corrupt(format!("journal record for unknown wallet {wallet}")));
        }
    }
    // `ordinal` is left to its sequence on insert and kept by the update, so assets keep the
    // order they first arrived in (migration 0063; the plan lists a batch's new assets in it).
    for (wallet, asset, balance, held, seq) in &plan.wallet_assets {
        sqlx::query(
            "INSERT INTO wallet_assets (wallet_id, asset, balance, held, seq) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (wallet_id, asset) DO UPDATE SET balance = EXCLUDED.balance, held = EXCLUDED.held, seq = EXCLUDED.seq",
        )
        .bind(wallet.as_uuid())
        .bind(asset.code())
        .bind(*balance)
        .bind(*held)
        .bind(seq_to_db(*seq)?)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }
    for (wallet, asset, transfer) in &plan.wallet_holds_removed {
        sqlx::query("DELETE FROM wallet_holds WHERE wallet_id = $1 AND asset = $2 AND transfer_id = $3")
            .bind(wallet.as_uuid())
            .bind(asset.code())
            .bind(transfer.as_uuid())
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
    }
    for (wallet, asset, transfer, amount, seq) in &plan.wallet_holds_placed {
        sqlx::query(
            "INSERT INTO wallet_holds (wallet_id, asset, transfer_id, amount, seq) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(wallet.as_uuid())
        .bind(asset.code())
        .bind(transfer.as_uuid())
        .bind(*amount)
        .bind(seq_to_db(*seq)?)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

fn version_to_db(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| corrupt(format!("posting version {version} beyond BIGINT")))
}

/// How far before a transfer's creation its postings may be booked: booking times come from
/// the same clock, made monotonic, so never earlier; a minute covers a wall clock stepped back.
const BOOKING_SLACK_MICROS: i64 = 60_000_000;

#[async_trait]
impl Store for PgStore {
    async fn holds_batch(&self, plan: &BatchPlan) -> Result<bool, StoreError> {
        crate::ledger_sql::holds_batch(self, plan).await
    }

    async fn commit_plan(&self, plan: &BatchPlan) -> Result<(), StoreError> {
        if plan.records.is_empty() && plan.snapshots.is_empty() {
            return Ok(());
        }
        // The plan is shared with its journal; the store's runtime needs one it owns.
        let plan = plan.clone();
        self.run(|pool| async move {
            let mut connection = pool.acquire().await.map_err(classify)?;
            write_plan(&mut connection, &plan, PipelineTurn::alone()).await
        })
        .await
    }

    async fn commit(&self, shard: u16, records: &[SequencedRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let plan = self.direct.plan(shard, records, crate::batch::now());
        self.commit_plan(&plan).await
    }

    async fn open_shards(&self, wanted: u16) -> Result<Vec<u64>, StoreError> {
        let wanted = i16::try_from(wanted.max(1)).map_err(|_| corrupt("more shards than SMALLINT"))?;
        let cluster_node = self.fence.get().is_some();
        self.run(move |pool| async move {
            // A server that is not a cluster node would write beside the node that holds the
            // shards: refused at start. Leases that ran out are cleared, so its own commits pass
            // the fence (a row that names an owner admits only that owner's); should a cluster
            // node take a shard later, the fence refuses this server's next commit to it.
            if !cluster_node && crate::cluster::live_lease_exists_clearing_the_rest(&pool).await? {
                return Err(corrupt(
                    "this store's shards are leased to a running cluster node (journal_shards.owner); \
                     start this server as a cluster node (TALLY_NODE_ID) or stop the cluster first",
                ));
            }
            sqlx::query(
                "INSERT INTO journal_shards (shard, committed_seq) SELECT generate_series(0, $1 - 1), 0
                 ON CONFLICT (shard) DO NOTHING",
            )
            .bind(wanted)
            .execute(&pool)
            .await
            .map_err(classify)?;
            Ok(())
        })
        .await?;
        let mut seqs = self.committed_seqs().await?;
        seqs.truncate(usize::try_from(wanted).unwrap_or(1));
        Ok(seqs)
    }

    async fn journal_writers(self: Arc<Self>, shard: u16) -> Result<Vec<Box<dyn JournalWriter>>, StoreError> {
        let options = self.writer_options(shard)?;
        let shard = i16::try_from(shard).map_err(|_| corrupt("shard beyond SMALLINT"))?;
        let mut writers: Vec<Box<dyn JournalWriter>> = Vec::with_capacity(JOURNAL_PIPELINE_DEPTH);
        for _ in 0..JOURNAL_PIPELINE_DEPTH {
            // Connected on the caller's runtime (the shard's thread), which drives its I/O.
            let connection = PgConnection::connect_with(&options).await.map_err(classify)?;
            writers.push(Box::new(PgJournalWriter { connection: Some(connection), options: options.clone(), shard }));
        }
        Ok(writers)
    }

    async fn transfer_by_idempotency(&self, scope: Uuid, key: &str) -> Result<Option<Loaded<Transfer>>, StoreError> {
        // Grouped with the other look-ups in flight (key_lookups.rs).
        self.key_lookups.find(scope, key.to_owned()).await
    }

    async fn postings_of_transfer(&self, transfer: TransferId) -> Result<Vec<Posting>, StoreError> {
        self.run(|pool| async move {
            // The accounts its postings can be on, and when: postings have no index by
            // transfer (a write per posting no query on the hot path needs).
            let row = sqlx::query(
                "SELECT source_id AS account, destination_id AS other, currency, destination_currency AS other_currency,
                        created_at
                 FROM transfers WHERE id = $1
                 UNION ALL
                 SELECT fiat_account_id, NULL, COALESCE(fiat_currency, asset), asset, created_at
                 FROM crypto_ops WHERE id = $1",
            )
            .bind(transfer.as_uuid())
            .fetch_optional(&pool)
            .await
            .map_err(classify)?;
            let Some(row) = row else {
                // Every posting the engine makes belongs to a transfer or crypto operation
                // with a row (a saga that moved money is written `processing` at least), so
                // this scan serves only postings written without one (tools, tests).
                let rows = sqlx::query("SELECT * FROM postings WHERE transfer_id = $1 ORDER BY booked_at, shard, seq")
                    .bind(transfer.as_uuid())
                    .fetch_all(&pool)
                    .await
                    .map_err(classify)?;
                return rows.iter().map(crate::ledger_sql::posting_from_row).collect();
            };
            let mut accounts: Vec<Uuid> = Vec::new();
            for column in ["account", "other"] {
                let account: Option<Uuid> = row.try_get(column).map_err(classify)?;
                accounts.extend(account);
            }
            for column in ["currency", "other_currency"] {
                let code: Option<String> = row.try_get(column).map_err(classify)?;
                if let Some(currency) = code.as_deref().and_then(Currency::from_code) {
                    accounts.extend(
                        tally_engine::system_accounts::SYSTEM_KINDS
                            .iter()
                            .map(|kind| tally_engine::system_accounts::system_account_id(*kind, currency).as_uuid()),
                    );
                }
            }
            let created_at: i64 = row.try_get("created_at").map_err(classify)?;
            let rows = sqlx::query(
                "SELECT * FROM postings WHERE account_id = ANY($1) AND booked_at >= $2 AND transfer_id = $3
                 ORDER BY booked_at, shard, seq",
            )
            .bind(&accounts)
            .bind(created_at.saturating_sub(BOOKING_SLACK_MICROS))
            .bind(transfer.as_uuid())
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(crate::ledger_sql::posting_from_row).collect()
        })
        .await
    }

    async fn posting_sums(&self) -> Result<std::collections::HashMap<AccountId, Decimal>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query(
                "SELECT account_id, SUM(CASE WHEN direction = 'credit' THEN amount ELSE -amount END) AS sum
                 FROM postings GROUP BY account_id",
            )
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter()
                .map(|row| {
                    let account = AccountId::from_uuid(row.try_get("account_id").map_err(classify)?);
                    Ok((account, row.try_get("sum").map_err(classify)?))
                })
                .collect()
        })
        .await
    }

    async fn all_postings(&self) -> Result<Vec<Posting>, StoreError> {
        crate::ledger_sql::all_postings(self).await
    }

    async fn all_transfers(&self) -> Result<Vec<Transfer>, StoreError> {
        crate::ledger_sql::all_transfers(self).await
    }

    async fn all_wallet_postings(&self) -> Result<Vec<crate::batch::WalletPosting>, StoreError> {
        crate::crypto_sql::all_wallet_postings(self).await
    }

    fn aml(&self) -> Option<&dyn crate::aml::AmlStore> {
        Some(self)
    }
}

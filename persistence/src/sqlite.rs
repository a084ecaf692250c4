//! The SQLite store (sqlx 0.8.6): the embedded default of `tally serve`, so Tally runs with no
//! database to set up.
//!
//! Exactness. SQLite has no exact decimal type and its NUMERIC affinity turns `1.000000000000000001`
//! into an 8-byte float, so every amount is stored as TEXT (`Decimal::to_string`, read back
//! with `Decimal::from_str_exact`): an 18-decimal ETH amount round-trips digit for digit. Ids
//! are hyphenated UUID text, enums their `as_str` names, times `i64` microseconds.
//!
//! Durability. WAL journal mode with `synchronous=FULL`: a commit is fsynced before `commit`
//! returns, so an acknowledged transfer survives a power cut, not only a process crash.
//!
//! Commits. `commit` writes one journal batch (as a `BatchPlan`) in one `BEGIN IMMEDIATE`
//! transaction, one prepared statement per row (SQLite has no `UNNEST`; statements are cached
//! per connection, so each is prepared once). Its first statement advances the shard's
//! `journal_shards.committed_seq` from the value it expects; a gap in the sequence, or a
//! second writer on the same file, finds a different value and the batch is refused as
//! `Corrupt` before anything is written.
//!
//! Runtimes. The store runs every query on its own small runtime, so its pool's I/O and
//! background tasks never depend on which runtime the caller is on (the journal writer's
//! current-thread runtime, actix arbiters, the HTTP runtime).

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;
use rust_decimal::Decimal;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};
use tally_engine::{AccountId, ErrorCode, PendingReason, Posting, Transfer, TransferId};
use uuid::Uuid;

use crate::aml::sql::AmlFlagWrites;
use crate::audit::AppendAudit;
use crate::batch::{BatchPlan, DirectCommits, TransferRow};
use crate::crypto_sql::CryptoWrites;
use crate::runtime::StoreRuntime;
use crate::sql::seq_to_db;
use crate::store::corrupt;
use crate::store::{JournalWriter, Loaded, SequencedRecord, Store, StoreError, StoreReads, plan_writer};

/// Connections in each pool (the ledger store's and the identity store's). SQLite takes one
/// writer at a time; the rest serve activations, recovery and reads, which WAL lets run beside
/// the writer.
const POOL_CONNECTIONS_MAX: u32 = 4;

/// How long a query waits for a pooled connection before the store reports itself unavailable.
/// Short, so that the journal's retry loop, not a hidden wait, decides what happens.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long SQLite itself waits on a locked database (the other pool's writer, another process,
/// a checkpoint) before answering `SQLITE_BUSY`, which the caller then retries. A commit takes
/// milliseconds; two seconds is a stall.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens (creating if missing, with its parent directories) a pool on the database at `url`, a
/// `sqlite://path/to/file.db` URL (`sqlite:///abs/path.db` for an absolute path), on a runtime
/// of its own named `thread_name`: WAL, `synchronous=FULL`, foreign keys on. Both SQLite stores
/// open their pools here, so the two share one set of durability settings.
pub(crate) async fn open_pool(url: &str, thread_name: &str) -> Result<(SqlitePool, StoreRuntime), StoreError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|error| StoreError::Corrupt(format!("bad sqlite url {url:?}: {error}")))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    if let Some(parent) = options.get_filename().parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|error| {
            StoreError::Unavailable(format!("cannot create directory {}: {error}", parent.display()))
        })?;
    }
    let runtime = StoreRuntime::new(thread_name)?;
    let pool = runtime
        .run(async move {
            SqlitePoolOptions::new()
                .max_connections(POOL_CONNECTIONS_MAX)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(classify)
        })
        .await?;
    Ok((pool, runtime))
}

pub struct SqliteStore {
    pool: SqlitePool,
    runtime: StoreRuntime,
    direct: DirectCommits,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing, with its parent directories) the database at `url`, a
    /// `sqlite://path/to/file.db` URL (`sqlite:///abs/path.db` for an absolute path), and
    /// applies the migrations not yet applied.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let (pool, runtime) = open_pool(url, "tally-sqlite").await?;
        let store = SqliteStore { pool, runtime, direct: DirectCommits::default() };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the versioned migrations in `persistence/migrations/sqlite` not yet applied.
    /// Idempotent: applied migrations are recorded in `_sqlx_migrations` and skipped.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::sql::migrate(self).await
    }

    /// Runs `work` on the store's runtime.
    pub(crate) async fn run<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(SqlitePool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.runtime.run(work(self.pool.clone())).await
    }
}

/// SQLite's primary result codes (the low byte of an extended code) that mean "try again
/// later": BUSY, LOCKED, NOMEM, IOERR, FULL, CANTOPEN.
const RETRYABLE_CODES: [i32; 6] = [5, 6, 7, 10, 13, 14];

impl crate::sql::LedgerSql for SqliteStore {}

impl crate::sql::SqlStore for SqliteStore {
    fn sql_pool(&self) -> crate::sql::SqlPool {
        crate::sql::SqlPool::Sqlite(self.pool.clone())
    }

    fn sql_runtime(&self) -> &StoreRuntime {
        &self.runtime
    }
}

/// Sorts a database error into "retry later" and "something is wrong with the data or code".
pub(crate) fn classify(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(database) => {
            let primary = database.code().and_then(|code| code.parse::<i32>().ok()).map(|code| code & 0xff);
            if primary.is_some_and(|code| RETRYABLE_CODES.contains(&code)) {
                StoreError::Unavailable(error.to_string())
            } else {
                StoreError::Corrupt(error.to_string())
            }
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable(error.to_string())
        }
        _ => StoreError::Corrupt(error.to_string()),
    }
}

/// The stored form of an amount: its exact decimal text, scale included.
fn amount_to_db(amount: Decimal) -> String {
    amount.to_string()
}

/// The stored form of an id: hyphenated lowercase UUID text.
fn id_to_db(id: Uuid) -> String {
    id.hyphenated().to_string()
}

pub(crate) fn decimal_from_db(text: &str, column: &str) -> Result<Decimal, StoreError> {
    Decimal::from_str_exact(text)
        .map_err(|error| corrupt(format!("{column} {text:?} is not an exact decimal: {error}")))
}

/// The rows of `holds` or `credit_admissions` (the same columns: an amount an account set aside
/// or promised for a transfer). Removals before placements: a hold removed and placed again in
/// one batch is in both lists (see `BatchPlan`), and its new row must replace the old one.
async fn write_keyed_amounts(
    transaction: &mut Transaction<'_, Sqlite>,
    table: &'static str,
    removed: &[(AccountId, TransferId)],
    placed: &[(AccountId, TransferId, Decimal, u64)],
) -> Result<(), StoreError> {
    for (account, transfer) in removed {
        sqlx::query(&format!("DELETE FROM {table} WHERE account_id = ?1 AND transfer_id = ?2"))
            .bind(id_to_db(account.as_uuid()))
            .bind(id_to_db(transfer.as_uuid()))
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
    }
    for (account, transfer, amount, seq) in placed {
        sqlx::query(&format!("INSERT INTO {table} (account_id, transfer_id, amount, seq) VALUES (?1, ?2, ?3, ?4)"))
            .bind(id_to_db(account.as_uuid()))
            .bind(id_to_db(transfer.as_uuid()))
            .bind(amount_to_db(*amount))
            .bind(seq_to_db(*seq)?)
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
    }
    Ok(())
}

async fn write_plan(transaction: &mut Transaction<'_, Sqlite>, plan: &BatchPlan) -> Result<(), StoreError> {
    // First statement of the transaction, and a write: it fences the batch against a gap or a
    // second writer before anything else is written (SQLite has one writer at a time, so
    // nothing pipelines behind it).
    if !plan.records.is_empty() {
        let advanced = sqlx::query(
            "UPDATE journal_shards SET committed_seq = ?1, booked_at = max(booked_at, ?4)
                 WHERE shard = ?3 AND committed_seq = ?2",
        )
        .bind(seq_to_db(plan.last_seq)?)
        .bind(seq_to_db(plan.first_seq.saturating_sub(1))?)
        .bind(i64::from(plan.shard))
        .bind(plan.booked_at.as_micros())
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
        if advanced.rows_affected() != 1 {
            return Err(corrupt(format!(
                "journal batch {}..={} of shard {} does not follow the committed sequence (a gap, or a second writer)",
                plan.first_seq, plan.last_seq, plan.shard
            )));
        }
    }

    for (_, account) in &plan.accounts_opened {
        sqlx::query(
            "INSERT INTO accounts (id, owner_id, currency, kind, status, balance, held, credit_limit, created_at, version, booked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, 0)",
        )
        .bind(id_to_db(account.id.as_uuid()))
        .bind(account.owner.map(|owner| id_to_db(owner.as_uuid())))
        .bind(account.currency.code())
        .bind(account.kind.as_str())
        .bind(account.status.as_str())
        .bind(amount_to_db(account.balance()))
        .bind(amount_to_db(account.held()))
        .bind(amount_to_db(account.credit_limit()))
        .bind(account.created_at.as_micros())
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }

    for (account, status, credit_limit, _) in &plan.account_settings {
        let updated = sqlx::query("UPDATE accounts SET status = ?2, credit_limit = ?3 WHERE id = ?1")
            .bind(id_to_db(account.as_uuid()))
            .bind(status.as_str())
            .bind(amount_to_db(*credit_limit))
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
        if updated.rows_affected() != 1 {
            return Err(corrupt(format!("journal record for account {account}, which the store does not have")));
        }
    }

    write_keyed_amounts(transaction, "holds", &plan.holds_removed, &plan.holds_placed).await?;
    write_keyed_amounts(transaction, "credit_admissions", &plan.admissions_removed, &plan.admissions_placed).await?;

    for posting in &plan.postings {
        sqlx::query(
            "INSERT INTO postings (account_id, booked_at, version, transfer_id, currency, direction, amount, balance_after, shard, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .bind(id_to_db(posting.account.as_uuid()))
        .bind(posting.booked_at.as_micros())
        .bind(seq_to_db(posting.version)?)
        .bind(id_to_db(posting.transfer.as_uuid()))
        .bind(posting.currency.code())
        .bind(posting.direction.as_str())
        .bind(amount_to_db(posting.amount))
        .bind(amount_to_db(posting.balance_after))
        .bind(i64::from(posting.shard))
        .bind(seq_to_db(posting.seq)?)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }

    for row in plan.transfers_new.iter().chain(&plan.transfers_upsert) {
        upsert_transfer(transaction, row).await?;
    }

    // Newest (highest version) wins: an account's postings can come through several journals.
    for snapshot in &plan.snapshots {
        sqlx::query(
            "UPDATE accounts SET balance = ?2, held = ?3, version = ?4, booked_at = ?5 WHERE id = ?1 AND version < ?4",
        )
        .bind(id_to_db(snapshot.account.as_uuid()))
        .bind(amount_to_db(snapshot.balance))
        .bind(amount_to_db(snapshot.held))
        .bind(seq_to_db(snapshot.version)?)
        .bind(snapshot.booked_at.as_micros())
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }
    transaction.insert_aml_flags(&plan.aml_flags).await?;
    commit_wallets(transaction, plan).await?;
    transaction.commit_crypto(plan).await?;
    crate::events::sqlite::write_events(transaction, plan).await?;
    crate::events::sqlite::link_batch(transaction, plan).await?;
    // Last, as in every audited transaction (the transaction began `IMMEDIATE`, which is what
    // serialises appends to the chain here).
    for record in &plan.audits {
        transaction.append_audit(record).await?;
    }
    Ok(())
}

/// Writes a transfer's whole state: a transfer record is the transfer's full state after a
/// transition, so every column but the id follows the latest record.
async fn upsert_transfer(transaction: &mut Transaction<'_, Sqlite>, row: &TransferRow) -> Result<(), StoreError> {
    let (transfer, seq) = (&row.transfer, row.seq);
    // The legs of a `processing` row as "account:version" joined by commas (SQLite has no
    // arrays); none for every other row.
    let legs = (!row.legs.is_empty()).then(|| {
        row.legs.iter().map(|(account, version)| format!("{account}:{version}")).collect::<Vec<_>>().join(",")
    });
    sqlx::query(
        "INSERT INTO transfers (id, kind, status, step, source_id, destination_id, amount, currency, fee, fx_rate,
                                destination_amount, destination_currency, pending_reason, failure_reason, reference,
                                description, beneficiary_name, beneficiary_iban, initiated_by, created_at, completed_at, seq,
                                idempotency_scope, idempotency_key, idempotency_fingerprint, legs, metadata, pending_expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22,
                 ?23, ?24, ?25, ?26, ?27, ?28)
         ON CONFLICT (id) DO UPDATE SET
             kind = excluded.kind, status = excluded.status, step = excluded.step, source_id = excluded.source_id,
             destination_id = excluded.destination_id, amount = excluded.amount, currency = excluded.currency,
             fee = excluded.fee, fx_rate = excluded.fx_rate, destination_amount = excluded.destination_amount,
             destination_currency = excluded.destination_currency, pending_reason = excluded.pending_reason,
             failure_reason = excluded.failure_reason, reference = excluded.reference,
             description = excluded.description, beneficiary_name = excluded.beneficiary_name,
             beneficiary_iban = excluded.beneficiary_iban, initiated_by = excluded.initiated_by,
             created_at = excluded.created_at, completed_at = excluded.completed_at, seq = excluded.seq,
             idempotency_scope = excluded.idempotency_scope, idempotency_key = excluded.idempotency_key,
             idempotency_fingerprint = excluded.idempotency_fingerprint, legs = excluded.legs,
             metadata = excluded.metadata, pending_expires_at = excluded.pending_expires_at",
    )
    .bind(id_to_db(transfer.id.as_uuid()))
    .bind(transfer.kind.as_str())
    .bind(transfer.status.as_str())
    .bind(transfer.step.as_str())
    .bind(id_to_db(transfer.source.as_uuid()))
    .bind(id_to_db(transfer.destination.as_uuid()))
    .bind(amount_to_db(transfer.amount))
    .bind(transfer.currency.code())
    .bind(amount_to_db(transfer.fee))
    .bind(transfer.fx_rate.map(amount_to_db))
    .bind(amount_to_db(transfer.destination_amount))
    .bind(transfer.destination_currency.code())
    .bind(transfer.pending_reason.map(PendingReason::as_str))
    .bind(transfer.failure_reason.map(ErrorCode::as_str))
    .bind(transfer.reference.as_deref())
    .bind(transfer.description.as_deref())
    .bind(transfer.beneficiary.as_ref().map(|beneficiary| beneficiary.name.clone()))
    .bind(transfer.beneficiary.as_ref().map(|beneficiary| beneficiary.iban.clone()))
    .bind(transfer.initiated_by.map(|user| id_to_db(user.as_uuid())))
    .bind(transfer.created_at.as_micros())
    .bind(transfer.completed_at.map(|at| at.as_micros()))
    .bind(seq_to_db(seq)?)
    .bind(transfer.idempotency.as_ref().map(|i| id_to_db(i.scope)))
    .bind(transfer.idempotency.as_ref().map(|i| &*i.key))
    .bind(transfer.idempotency.as_ref().map(|i| &*i.fingerprint))
    .bind(legs)
    .bind(crate::metadata::to_db(&transfer.metadata))
    .bind(transfer.pending_expires_at.map(|at| at.as_micros()))
    .execute(&mut **transaction)
    .await
    .map_err(classify)?;
    Ok(())
}

async fn commit_wallets(transaction: &mut Transaction<'_, Sqlite>, plan: &BatchPlan) -> Result<(), StoreError> {
    for (seq, wallet) in &plan.wallets_opened {
        sqlx::query("INSERT INTO wallets (id, owner_id, status, created_at, snapshot_seq) VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(id_to_db(wallet.id.as_uuid()))
            .bind(id_to_db(wallet.owner.as_uuid()))
            .bind(wallet.status.as_str())
            .bind(wallet.created_at.as_micros())
            .bind(seq_to_db(*seq)?)
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
    }
    for (wallet, status, seq) in &plan.wallet_statuses {
        let updated = sqlx::query("UPDATE wallets SET status = ?2, snapshot_seq = ?3 WHERE id = ?1")
            .bind(id_to_db(wallet.as_uuid()))
            .bind(status.as_str())
            .bind(seq_to_db(*seq)?)
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
        if updated.rows_affected() != 1 {
            return Err(corrupt(format!("journal record for wallet {wallet}, which the store does not have")));
        }
    }
    // `ordinal` is left to SQLite on insert and kept by the update, so assets keep the order
    // they first arrived in (the plan lists a batch's new assets in that order).
    for (wallet, asset, balance, held, seq) in &plan.wallet_assets {
        sqlx::query(
            "INSERT INTO wallet_assets (wallet_id, asset, balance, held, seq) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (wallet_id, asset) DO UPDATE SET balance = excluded.balance, held = excluded.held, seq = excluded.seq",
        )
        .bind(id_to_db(wallet.as_uuid()))
        .bind(asset.code())
        .bind(amount_to_db(*balance))
        .bind(amount_to_db(*held))
        .bind(seq_to_db(*seq)?)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }
    // Removals before placements, as for account holds.
    for (wallet, asset, transfer) in &plan.wallet_holds_removed {
        sqlx::query("DELETE FROM wallet_holds WHERE wallet_id = ?1 AND asset = ?2 AND transfer_id = ?3")
            .bind(id_to_db(wallet.as_uuid()))
            .bind(asset.code())
            .bind(id_to_db(transfer.as_uuid()))
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
    }
    for (wallet, asset, transfer, amount, seq) in &plan.wallet_holds_placed {
        sqlx::query(
            "INSERT INTO wallet_holds (wallet_id, asset, transfer_id, amount, seq) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(id_to_db(wallet.as_uuid()))
        .bind(asset.code())
        .bind(id_to_db(transfer.as_uuid()))
        .bind(amount_to_db(*amount))
        .bind(seq_to_db(*seq)?)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

const POSTING_COLUMNS: &str = "transfer_id, account_id, currency, direction, amount";

#[async_trait]
impl Store for SqliteStore {
    async fn holds_batch(&self, plan: &BatchPlan) -> Result<bool, StoreError> {
        crate::ledger_sql::holds_batch(self, plan).await
    }

    async fn commit_plan(&self, plan: &BatchPlan) -> Result<(), StoreError> {
        if plan.records.is_empty() && plan.snapshots.is_empty() {
            return Ok(());
        }
        let plan = plan.clone();
        self.run(|pool| async move {
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            match write_plan(&mut transaction, &plan).await {
                Ok(()) => transaction.commit().await.map_err(classify),
                Err(error) => {
                    // The batch's error is the one to report; a failed rollback leaves the
                    // transaction to be rolled back when the connection is next used.
                    let _ = transaction.rollback().await;
                    Err(error)
                }
            }
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

    async fn journal_writers(self: Arc<Self>, shard: u16) -> Result<Vec<Box<dyn JournalWriter>>, StoreError> {
        Ok(vec![plan_writer(self, shard)])
    }

    async fn open_shards(&self, wanted: u16) -> Result<Vec<u64>, StoreError> {
        let wanted = i64::from(wanted.max(1));
        self.run(|pool| async move {
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            for shard in 0..wanted {
                sqlx::query(
                    "INSERT INTO journal_shards (shard, committed_seq) VALUES (?1, 0) ON CONFLICT (shard) DO NOTHING",
                )
                .bind(shard)
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            }
            transaction.commit().await.map_err(classify)
        })
        .await?;
        let mut seqs = self.committed_seqs().await?;
        seqs.truncate(usize::try_from(wanted).unwrap_or(1));
        Ok(seqs)
    }

    async fn transfer_by_idempotency(&self, scope: Uuid, key: &str) -> Result<Option<Loaded<Transfer>>, StoreError> {
        crate::ledger_sql::transfer_by_idempotency(self, scope, key).await
    }

    async fn postings_of_transfer(&self, transfer: TransferId) -> Result<Vec<Posting>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query(&format!(
                "SELECT {POSTING_COLUMNS} FROM postings WHERE transfer_id = ?1 ORDER BY booked_at, shard, seq"
            ))
            .bind(id_to_db(transfer.as_uuid()))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(crate::ledger_sql::posting_from_row).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_io_errors_are_retryable_and_the_rest_are_not() {
        assert!(matches!(classify(sqlx::Error::PoolTimedOut), StoreError::Unavailable(_)));
        assert!(matches!(classify(sqlx::Error::RowNotFound), StoreError::Corrupt(_)));
    }

    #[test]
    fn amounts_are_stored_as_their_exact_text() {
        let wei = Decimal::from_str_exact("1.000000000000000001").unwrap();
        assert_eq!(amount_to_db(wei), "1.000000000000000001");
        assert_eq!(decimal_from_db(&amount_to_db(wei), "amount").unwrap(), wei);
        let kwd = Decimal::from_str_exact("0.125").unwrap();
        assert_eq!(decimal_from_db(&amount_to_db(kwd), "amount").unwrap().scale(), 3, "the scale survives");
        assert!(matches!(decimal_from_db("1.5e3", "amount"), Err(StoreError::Corrupt(_))));
    }
}

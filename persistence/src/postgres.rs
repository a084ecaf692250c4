//! The Postgres store (sqlx 0.8.6).
//!
//! `commit` writes one journal batch in one transaction with one statement per table, each
//! taking whole columns as arrays through `UNNEST`: a batch of 8,192 records is a dozen round
//! trips, not thousands. The transaction first advances `journal_state.committed_seq` from the
//! value it expects; a gap in the sequence, or a second writer on the same database, finds a
//! different value and the batch is refused as `Corrupt` before anything is written.
//!
//! The store runs every query on its own small runtime, so its connections' I/O never depends
//! on which runtime the caller is on (the journal writer, actix arbiters, the HTTP runtime).

mod crypto;
mod key_lookups;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use rust_decimal::Decimal;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tally_engine::transfer::{Beneficiary, SagaStep};
use tally_engine::{
    Account, AccountId, AccountKind, AccountStatus, Currency, Direction, ErrorCode, PendingReason, Position, Posting,
    Timestamp, Transfer, TransferId, TransferKind, TransferStatus, UserId, Wallet, WalletId,
};
use uuid::Uuid;

#[path = "aml_postgres.rs"]
mod aml_postgres;

use crate::batch::BatchPlan;
use crate::runtime::StoreRuntime;
use crate::store::{LiveHold, Loaded, SequencedRecord, Store, StoreError};

/// Connections in the pool. The journal writer uses one at a time; activations, recovery and
/// reads use the rest. Eight is far more than two cores can keep busy.
const POOL_CONNECTIONS_MAX: u32 = 8;

/// How long a query waits for a connection before the store reports itself unavailable. Short,
/// so that during an outage the journal's retry loop, not a hidden wait, decides what happens.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct PgStore {
    pool: PgPool,
    runtime: StoreRuntime,
    key_lookups: key_lookups::KeyLookups,
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
        Ok(PgStore { pool, runtime, key_lookups })
    }

    /// Applies the versioned migrations in `persistence/migrations/postgres` not yet applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.run(|pool| async move {
            sqlx::migrate!("./migrations/postgres")
                .run(&pool)
                .await
                .map_err(|error| StoreError::Unavailable(format!("migration: {error}")))
        })
        .await
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

/// Opens a pool of `connections` to `url` on `runtime`, set up the way every Tally store wants.
pub(crate) async fn connect_pool(runtime: &StoreRuntime, url: &str, connections: u32) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|error| StoreError::Corrupt(format!("bad url: {error}")))?
        // A fresh database's tables grow from empty by orders of magnitude while the server
        // runs. With the default plan cache, a statement's sixth execution caches a generic
        // plan costed on the tables as they were then: a hash join over a sequential scan of
        // a 5-row table, still used when it holds a million rows (seen in `scripts/bench`:
        // Postgres at 135 % CPU scanning `transfers` and `accounts` on every group commit and
        // key look-up until autovacuum's first ANALYZE). A custom plan is costed on each
        // execution against the relation's current size; planning these keyed statements
        // costs microseconds.
        .options([("plan_cache_mode", "force_custom_plan")]);
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

/// Sorts a database error into "retry later" and "something is wrong with the data or code".
pub(crate) fn classify(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(database) => {
            let code = database.code().map(|code| code.to_string()).unwrap_or_default();
            // 08: connection exception; 40: transaction rollback (serialization, deadlock);
            // 53: insufficient resources; 57: operator intervention (shutdown, cancel).
            if ["08", "40", "53", "57"].iter().any(|class| code.starts_with(class)) {
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

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn parse<T>(text: &str, parse: impl Fn(&str) -> Option<T>, what: &str) -> Result<T, StoreError> {
    parse(text).ok_or_else(|| corrupt(format!("unknown {what} {text:?}")))
}

fn seq_of(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("negative sequence number {value}")))
}

fn seq_to_db(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| corrupt(format!("sequence number {seq} beyond BIGINT")))
}

async fn commit_plan(transaction: &mut Transaction<'_, Postgres>, plan: &BatchPlan) -> Result<(), StoreError> {
    let advanced = sqlx::query("UPDATE journal_state SET committed_seq = $2 WHERE id = 1 AND committed_seq = $1")
        .bind(seq_to_db(plan.first_seq.saturating_sub(1))?)
        .bind(seq_to_db(plan.last_seq)?)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    if advanced.rows_affected() != 1 {
        return Err(corrupt(format!(
            "journal batch {}..={} does not follow the committed sequence (a gap, or a second writer)",
            plan.first_seq, plan.last_seq
        )));
    }

    if !plan.accounts_opened.is_empty() {
        let rows = &plan.accounts_opened;
        sqlx::query(
            "INSERT INTO accounts (id, owner_id, currency, kind, status, balance, held, credit_limit, created_at, snapshot_seq)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::numeric[],
                                  $7::numeric[], $8::numeric[], $9::int8[], $10::int8[])",
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
        .bind(rows.iter().map(|(seq, _)| seq_to_db(*seq)).collect::<Result<Vec<_>, _>>()?)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }

    if !plan.account_snapshots.is_empty() {
        let rows = &plan.account_snapshots;
        let updated = sqlx::query(
            "UPDATE accounts AS a
             SET balance = u.balance, held = u.held, credit_limit = u.credit_limit, status = u.status, snapshot_seq = u.seq
             FROM UNNEST($1::uuid[], $2::numeric[], $3::numeric[], $4::numeric[], $5::text[], $6::int8[])
                  AS u(id, balance, held, credit_limit, status, seq)
             WHERE a.id = u.id",
        )
        .bind(rows.iter().map(|(id, _, _)| id.as_uuid()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, s, _)| s.balance).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, s, _)| s.held).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, s, _)| s.credit_limit).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, s, _)| s.status.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, _, seq)| seq_to_db(*seq)).collect::<Result<Vec<_>, _>>()?)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
        if updated.rows_affected() != rows.len() as u64 {
            return Err(corrupt("journal record for an account the store does not have"));
        }
    }

    // Removals before placements: a hold removed and placed again in one batch (see
    // `BatchPlan`) must end placed.
    if !plan.holds_removed.is_empty() {
        let rows = &plan.holds_removed;
        sqlx::query(
            "DELETE FROM holds AS h USING UNNEST($1::uuid[], $2::uuid[]) AS d(account_id, transfer_id)
             WHERE h.account_id = d.account_id AND h.transfer_id = d.transfer_id",
        )
        .bind(rows.iter().map(|(a, _)| a.as_uuid()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, t)| t.as_uuid()).collect::<Vec<_>>())
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }

    if !plan.holds_placed.is_empty() {
        let rows = &plan.holds_placed;
        sqlx::query(
            "INSERT INTO holds (account_id, transfer_id, amount, seq)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::numeric[], $4::int8[])",
        )
        .bind(rows.iter().map(|(a, _, _, _)| a.as_uuid()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, t, _, _)| t.as_uuid()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, _, amount, _)| *amount).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, _, _, seq)| seq_to_db(*seq)).collect::<Result<Vec<_>, _>>()?)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }

    if !plan.postings.is_empty() {
        let rows = &plan.postings;
        sqlx::query(
            "INSERT INTO postings (seq, transfer_id, account_id, currency, direction, amount, balance_after)
             SELECT * FROM UNNEST($1::int8[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::numeric[], $7::numeric[])",
        )
        .bind(rows.iter().map(|(seq, _, _)| seq_to_db(*seq)).collect::<Result<Vec<_>, _>>()?)
        .bind(rows.iter().map(|(_, p, _)| p.transfer.as_uuid()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, p, _)| p.account.as_uuid()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, p, _)| p.currency.code()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, p, _)| p.direction.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, p, _)| p.amount).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, _, after)| *after).collect::<Vec<_>>())
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }

    if !plan.transfers.is_empty() {
        upsert_transfers(transaction, &plan.transfers).await?;
    }
    aml_postgres::insert_flags(transaction, &plan.aml_flags).await?;
    commit_wallets(transaction, plan).await?;
    crypto::commit(transaction, plan).await
}

async fn upsert_transfers(
    transaction: &mut Transaction<'_, Postgres>,
    rows: &[(u64, Transfer)],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO transfers (id, kind, status, step, source_id, destination_id, amount, currency, fee, fx_rate,
                                destination_amount, destination_currency, pending_reason, failure_reason, reference,
                                description, beneficiary_name, beneficiary_iban, initiated_by, created_at, completed_at, seq,
                                idempotency_scope, idempotency_key, idempotency_fingerprint)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::uuid[], $7::numeric[],
                              $8::text[], $9::numeric[], $10::numeric[], $11::numeric[], $12::text[], $13::text[],
                              $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::uuid[], $20::int8[],
                              $21::int8[], $22::int8[], $23::uuid[], $24::text[], $25::text[])
         ON CONFLICT (id) DO UPDATE SET
             kind = EXCLUDED.kind, status = EXCLUDED.status, step = EXCLUDED.step, source_id = EXCLUDED.source_id,
             destination_id = EXCLUDED.destination_id, amount = EXCLUDED.amount, currency = EXCLUDED.currency,
             fee = EXCLUDED.fee, fx_rate = EXCLUDED.fx_rate, destination_amount = EXCLUDED.destination_amount,
             destination_currency = EXCLUDED.destination_currency, pending_reason = EXCLUDED.pending_reason,
             failure_reason = EXCLUDED.failure_reason, reference = EXCLUDED.reference,
             description = EXCLUDED.description, beneficiary_name = EXCLUDED.beneficiary_name,
             beneficiary_iban = EXCLUDED.beneficiary_iban, initiated_by = EXCLUDED.initiated_by,
             created_at = EXCLUDED.created_at, completed_at = EXCLUDED.completed_at, seq = EXCLUDED.seq,
             idempotency_scope = EXCLUDED.idempotency_scope, idempotency_key = EXCLUDED.idempotency_key,
             idempotency_fingerprint = EXCLUDED.idempotency_fingerprint",
    )
    .bind(rows.iter().map(|(_, t)| t.id.as_uuid()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.kind.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.status.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.step.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.source.as_uuid()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.destination.as_uuid()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.amount).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.currency.code()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.fee).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.fx_rate).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.destination_amount).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.destination_currency.code()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.pending_reason.map(PendingReason::as_str)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.failure_reason.map(ErrorCode::as_str)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.reference.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.description.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.beneficiary.as_ref().map(|b| b.name.clone())).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.beneficiary.as_ref().map(|b| b.iban.clone())).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.initiated_by.map(|user| user.as_uuid())).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.created_at.as_micros()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.completed_at.map(|at| at.as_micros())).collect::<Vec<_>>())
    .bind(rows.iter().map(|(seq, _)| seq_to_db(*seq)).collect::<Result<Vec<_>, _>>()?)
    .bind(rows.iter().map(|(_, t)| t.idempotency.as_ref().map(|i| i.scope)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.idempotency.as_ref().map(|i| i.key.clone())).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, t)| t.idempotency.as_ref().map(|i| i.fingerprint.clone())).collect::<Vec<_>>())
    .execute(&mut **transaction)
    .await
    .map_err(classify)?;
    Ok(())
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
    for (wallet, asset, balance, held, seq) in &plan.wallet_assets {
        sqlx::query(
            "INSERT INTO wallet_assets (wallet_id, asset, balance, held, first_seq, seq) VALUES ($1, $2, $3, $4, $5, $5)
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

fn account_from_row(row: &PgRow, holds: &[PgRow]) -> Result<Loaded<Account>, StoreError> {
    let id = AccountId::from_uuid(row.try_get("id").map_err(classify)?);
    let kind = parse(row.try_get("kind").map_err(classify)?, AccountKind::parse, "account kind")?;
    let balance: Decimal = row.try_get("balance").map_err(classify)?;
    let held: Decimal = row.try_get("held").map_err(classify)?;
    let mut position = Position::new(balance, row.try_get("credit_limit").map_err(classify)?, kind.is_system());
    for hold in holds {
        let transfer = TransferId::from_uuid(hold.try_get("transfer_id").map_err(classify)?);
        position
            .restore_hold(transfer, hold.try_get("amount").map_err(classify)?)
            .map_err(|_| corrupt("hold overflow"))?;
    }
    // Pair assertion across the boundary: the snapshot's `held` must equal its holds.
    if position.held != held {
        return Err(corrupt(format!("account {id}: held {held} but its holds sum to {}", position.held)));
    }
    // Equal in value; keep the stored figure, written as the engine wrote it.
    position.held = held;
    let owner: Option<Uuid> = row.try_get("owner_id").map_err(classify)?;
    let account = Account {
        id,
        owner: owner.map(UserId::from_uuid),
        currency: parse(row.try_get("currency").map_err(classify)?, Currency::from_code, "currency")?,
        kind,
        status: parse(row.try_get("status").map_err(classify)?, AccountStatus::parse, "account status")?,
        position,
        created_at: Timestamp::from_micros(row.try_get("created_at").map_err(classify)?),
    };
    Ok(Loaded { value: account, seq: seq_of(row.try_get("snapshot_seq").map_err(classify)?)? })
}

fn transfer_from_row(row: &PgRow) -> Result<Loaded<Transfer>, StoreError> {
    let get_text = |column: &str| -> Result<String, StoreError> { row.try_get(column).map_err(classify) };
    let optional_text = |column: &str| -> Result<Option<String>, StoreError> { row.try_get(column).map_err(classify) };
    let beneficiary = match (optional_text("beneficiary_name")?, optional_text("beneficiary_iban")?) {
        (Some(name), Some(iban)) => Some(Beneficiary { name, iban }),
        _ => None,
    };
    let initiated_by: Option<Uuid> = row.try_get("initiated_by").map_err(classify)?;
    let idempotency_scope: Option<Uuid> = row.try_get("idempotency_scope").map_err(classify)?;
    let idempotency =
        match (idempotency_scope, optional_text("idempotency_key")?, optional_text("idempotency_fingerprint")?) {
            (Some(scope), Some(key), Some(fingerprint)) => Some(tally_engine::Idempotency { scope, key, fingerprint }),
            (None, None, None) => None,
            _ => return Err(corrupt("transfer with half an idempotency key")),
        };
    let completed_at: Option<i64> = row.try_get("completed_at").map_err(classify)?;
    let transfer = Transfer {
        id: TransferId::from_uuid(row.try_get("id").map_err(classify)?),
        kind: parse(&get_text("kind")?, TransferKind::parse, "transfer kind")?,
        status: parse(&get_text("status")?, TransferStatus::parse, "transfer status")?,
        step: parse(&get_text("step")?, SagaStep::parse, "saga step")?,
        source: AccountId::from_uuid(row.try_get("source_id").map_err(classify)?),
        destination: AccountId::from_uuid(row.try_get("destination_id").map_err(classify)?),
        amount: row.try_get("amount").map_err(classify)?,
        currency: parse(&get_text("currency")?, Currency::from_code, "currency")?,
        fee: row.try_get("fee").map_err(classify)?,
        fx_rate: row.try_get("fx_rate").map_err(classify)?,
        destination_amount: row.try_get("destination_amount").map_err(classify)?,
        destination_currency: parse(&get_text("destination_currency")?, Currency::from_code, "currency")?,
        pending_reason: optional_text("pending_reason")?
            .map(|text| parse(&text, PendingReason::parse, "pending reason"))
            .transpose()?,
        failure_reason: optional_text("failure_reason")?
            .map(|text| parse(&text, ErrorCode::from_str_code, "error code"))
            .transpose()?,
        reference: optional_text("reference")?,
        description: optional_text("description")?,
        beneficiary,
        initiated_by: initiated_by.map(UserId::from_uuid),
        idempotency,
        created_at: Timestamp::from_micros(row.try_get("created_at").map_err(classify)?),
        completed_at: completed_at.map(Timestamp::from_micros),
    };
    Ok(Loaded { value: transfer, seq: seq_of(row.try_get("seq").map_err(classify)?)? })
}

fn posting_from_row(row: &PgRow) -> Result<Posting, StoreError> {
    let direction: String = row.try_get("direction").map_err(classify)?;
    let currency: String = row.try_get("currency").map_err(classify)?;
    Ok(Posting {
        transfer: TransferId::from_uuid(row.try_get("transfer_id").map_err(classify)?),
        account: AccountId::from_uuid(row.try_get("account_id").map_err(classify)?),
        currency: parse(&currency, Currency::from_code, "currency")?,
        direction: parse(&direction, Direction::parse, "direction")?,
        amount: row.try_get("amount").map_err(classify)?,
    })
}

const ACCOUNT_COLUMNS: &str =
    "id, owner_id, currency, kind, status, balance, held, credit_limit, created_at, snapshot_seq";

#[async_trait]
impl Store for PgStore {
    async fn load_crypto_op(&self, id: TransferId) -> Result<Option<Loaded<tally_engine::CryptoOp>>, StoreError> {
        self.load_crypto_op_impl(id).await
    }

    async fn deposit_by_tx_hash(&self, tx_hash: &str) -> Result<Option<Loaded<tally_engine::CryptoOp>>, StoreError> {
        self.deposit_by_tx_hash_impl(tx_hash).await
    }

    async fn crypto_op_by_idempotency(
        &self,
        kind: tally_engine::CryptoOpKind,
        scope: Uuid,
        key: &str,
    ) -> Result<Option<Loaded<tally_engine::CryptoOp>>, StoreError> {
        self.crypto_op_by_idempotency_impl(kind, scope, key).await
    }

    async fn unfinished_crypto_ops(&self) -> Result<Vec<tally_engine::CryptoOp>, StoreError> {
        self.unfinished_crypto_ops_impl().await
    }

    async fn wallet_postings_of_transfer(
        &self,
        transfer: TransferId,
    ) -> Result<Vec<crate::batch::WalletPosting>, StoreError> {
        self.wallet_postings_of_transfer_impl(transfer).await
    }

    async fn wallet_balances(&self) -> Result<Vec<(WalletId, Currency, Decimal)>, StoreError> {
        self.wallet_balances_impl().await
    }

    async fn insert_wallet_profile(&self, profile: &crate::crypto::WalletProfile) -> Result<bool, StoreError> {
        self.insert_wallet_profile_impl(profile).await
    }

    async fn wallet_profile(&self, wallet: WalletId) -> Result<Option<crate::crypto::WalletProfile>, StoreError> {
        self.wallet_profile_impl(wallet).await
    }

    async fn wallet_profile_by_address(
        &self,
        address: &str,
    ) -> Result<Option<crate::crypto::WalletProfile>, StoreError> {
        self.wallet_profile_by_address_impl(address).await
    }

    async fn wallet_profiles_of_owner(&self, owner: UserId) -> Result<Vec<crate::crypto::WalletProfile>, StoreError> {
        self.wallet_profiles_of_owner_impl(owner).await
    }

    async fn commit(&self, records: &[SequencedRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let plan = BatchPlan::new(records);
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            commit_plan(&mut transaction, &plan).await?;
            transaction.commit().await.map_err(classify)
        })
        .await
    }

    async fn committed_seq(&self) -> Result<u64, StoreError> {
        self.run(|pool| async move {
            let seq: i64 = sqlx::query_scalar("SELECT committed_seq FROM journal_state WHERE id = 1")
                .fetch_one(&pool)
                .await
                .map_err(classify)?;
            seq_of(seq)
        })
        .await
    }

    async fn load_account(&self, id: AccountId) -> Result<Option<Loaded<Account>>, StoreError> {
        self.run(|pool| async move {
            // One snapshot: read the account and its holds in one repeatable-read transaction.
            let mut transaction = pool.begin().await.map_err(classify)?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            let row = sqlx::query(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"))
                .bind(id.as_uuid())
                .fetch_optional(&mut *transaction)
                .await
                .map_err(classify)?;
            let Some(row) = row else { return Ok(None) };
            let holds = sqlx::query("SELECT transfer_id, amount FROM holds WHERE account_id = $1")
                .bind(id.as_uuid())
                .fetch_all(&mut *transaction)
                .await
                .map_err(classify)?;
            transaction.commit().await.map_err(classify)?;
            account_from_row(&row, &holds).map(Some)
        })
        .await
    }

    async fn load_wallet(&self, id: WalletId) -> Result<Option<Loaded<Wallet>>, StoreError> {
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            let row = sqlx::query("SELECT id, owner_id, status, created_at, snapshot_seq FROM wallets WHERE id = $1")
                .bind(id.as_uuid())
                .fetch_optional(&mut *transaction)
                .await
                .map_err(classify)?;
            let Some(row) = row else { return Ok(None) };
            let assets =
                sqlx::query("SELECT asset, balance, held FROM wallet_assets WHERE wallet_id = $1 ORDER BY first_seq")
                    .bind(id.as_uuid())
                    .fetch_all(&mut *transaction)
                    .await
                    .map_err(classify)?;
            let holds = sqlx::query("SELECT asset, transfer_id, amount FROM wallet_holds WHERE wallet_id = $1")
                .bind(id.as_uuid())
                .fetch_all(&mut *transaction)
                .await
                .map_err(classify)?;
            transaction.commit().await.map_err(classify)?;
            let status: String = row.try_get("status").map_err(classify)?;
            let mut wallet = Wallet {
                id,
                owner: UserId::from_uuid(row.try_get("owner_id").map_err(classify)?),
                status: parse(&status, AccountStatus::parse, "wallet status")?,
                assets: Vec::new(),
                created_at: Timestamp::from_micros(row.try_get("created_at").map_err(classify)?),
            };
            for asset_row in &assets {
                let code: String = asset_row.try_get("asset").map_err(classify)?;
                let asset = parse(&code, Currency::from_code, "asset")?;
                let held: Decimal = asset_row.try_get("held").map_err(classify)?;
                let mut position = Position::new(asset_row.try_get("balance").map_err(classify)?, Decimal::ZERO, false);
                for hold in holds.iter() {
                    let hold_code: String = hold.try_get("asset").map_err(classify)?;
                    if hold_code == code {
                        let transfer = TransferId::from_uuid(hold.try_get("transfer_id").map_err(classify)?);
                        position
                            .restore_hold(transfer, hold.try_get("amount").map_err(classify)?)
                            .map_err(|_| corrupt("wallet hold overflow"))?;
                    }
                }
                if position.held != held {
                    return Err(corrupt(format!("wallet {id} {code}: held {held} but holds sum to {}", position.held)));
                }
                position.held = held;
                wallet.assets.push((asset, position));
            }
            Ok(Some(Loaded { value: wallet, seq: seq_of(row.try_get("snapshot_seq").map_err(classify)?)? }))
        })
        .await
    }

    async fn load_transfer(&self, id: TransferId) -> Result<Option<Loaded<Transfer>>, StoreError> {
        self.run(|pool| async move {
            let row = sqlx::query("SELECT * FROM transfers WHERE id = $1")
                .bind(id.as_uuid())
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
            row.as_ref().map(transfer_from_row).transpose()
        })
        .await
    }

    async fn transfer_by_idempotency(&self, scope: Uuid, key: &str) -> Result<Option<Loaded<Transfer>>, StoreError> {
        // Grouped with the other look-ups in flight (key_lookups.rs).
        self.key_lookups.find(scope, key.to_owned()).await
    }

    async fn non_terminal_transfers(&self) -> Result<Vec<Transfer>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query("SELECT * FROM transfers WHERE status IN ('processing', 'pending') ORDER BY seq")
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            rows.iter().map(|row| transfer_from_row(row).map(|loaded| loaded.value)).collect()
        })
        .await
    }

    async fn all_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            let rows = sqlx::query(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id"))
                .fetch_all(&mut *transaction)
                .await
                .map_err(classify)?;
            let holds = sqlx::query("SELECT account_id, transfer_id, amount FROM holds ORDER BY account_id")
                .fetch_all(&mut *transaction)
                .await
                .map_err(classify)?;
            transaction.commit().await.map_err(classify)?;
            let mut holds_by_account: std::collections::HashMap<Uuid, Vec<PgRow>> = std::collections::HashMap::new();
            for hold in holds {
                let account: Uuid = hold.try_get("account_id").map_err(classify)?;
                holds_by_account.entry(account).or_default().push(hold);
            }
            rows.iter()
                .map(|row| {
                    let id: Uuid = row.try_get("id").map_err(classify)?;
                    let holds = holds_by_account.get(&id).map(Vec::as_slice).unwrap_or(&[]);
                    account_from_row(row, holds).map(|loaded| loaded.value)
                })
                .collect()
        })
        .await
    }

    async fn postings_of(&self, account: AccountId) -> Result<Vec<Posting>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query("SELECT * FROM postings WHERE account_id = $1 ORDER BY seq")
                .bind(account.as_uuid())
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            rows.iter().map(posting_from_row).collect()
        })
        .await
    }

    async fn postings_of_transfer(&self, transfer: TransferId) -> Result<Vec<Posting>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query("SELECT * FROM postings WHERE transfer_id = $1 ORDER BY seq")
                .bind(transfer.as_uuid())
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            rows.iter().map(posting_from_row).collect()
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

    fn aml(&self) -> Option<&dyn crate::aml::AmlStore> {
        Some(self)
    }

    async fn live_holds(&self) -> Result<Vec<LiveHold>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query("SELECT account_id, transfer_id, amount FROM holds ORDER BY seq")
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            rows.iter()
                .map(|row| {
                    Ok(LiveHold {
                        account: AccountId::from_uuid(row.try_get("account_id").map_err(classify)?),
                        transfer: TransferId::from_uuid(row.try_get("transfer_id").map_err(classify)?),
                        amount: row.try_get("amount").map_err(classify)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn load_pricing(&self) -> Result<crate::finance::PricingTables, StoreError> {
        crate::finance::postgres::load(self).await
    }

    async fn save_pricing(&self, change: &crate::finance::PricingChange) -> Result<(), StoreError> {
        crate::finance::postgres::save(self, change).await
    }
}

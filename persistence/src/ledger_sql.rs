//! The ledger stores' reads, written once for both backends (`crate::sql`): what `Store`
//! loads at start and on demand (accounts with their holds and newest posting, wallets,
//! transfers, postings, live holds, the journal shards' positions). The `Store` impls in
//! `postgres.rs` and `sqlite.rs` call these; the writes (the journal's batches) stay per
//! backend, where each has its fastest form (binary `COPY` and one call on Postgres).

use std::collections::HashMap;

use rust_decimal::Decimal;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use tally_engine::transfer::{Beneficiary, SagaStep};
use tally_engine::{
    Account, AccountId, AccountKind, AccountStatus, Currency, Direction, ErrorCode, Metadata, PendingReason, Position,
    Posting, Timestamp, Transfer, TransferId, TransferKind, TransferStatus, UserId, Wallet, WalletId,
};
use uuid::Uuid;

use crate::batch::BatchPlan;
use crate::sql::{BeginSnapshot, Column, Id, LedgerSql, SqlRow, parse, run_on_backend, seq_of, seq_to_db};
use crate::store::{LiveHold, Loaded, StoreError, StoreReads, corrupt};

pub(crate) const ACCOUNT_COLUMNS: &str =
    "id, owner_id, currency, kind, status, balance, held, credit_limit, created_at, version, booked_at";

pub(crate) const TRANSFER_COLUMNS: &str = "id, kind, status, step, source_id, destination_id, amount, currency, fee, \
     fx_rate, destination_amount, destination_currency, pending_reason, failure_reason, reference, description, \
     beneficiary_name, beneficiary_iban, initiated_by, created_at, completed_at, seq, idempotency_scope, \
     idempotency_key, idempotency_fingerprint, metadata, pending_expires_at";

const POSTING_COLUMNS: &str = "transfer_id, account_id, currency, direction, amount";

/// The newest posting of account `$1` after its snapshot (booked at or after `$2`, version
/// above `$3`): one seek at the end of the account's range of the postings key.
const TAIL: &str = "SELECT balance_after, version FROM postings
     WHERE account_id = $1 AND booked_at >= $2 AND version > $3
     ORDER BY booked_at DESC, version DESC LIMIT 1";

/// A transfer's `metadata`: `jsonb` on Postgres, JSON text on SQLite; `NULL` is none.
impl Column for Metadata {
    /// In binary format a `jsonb` value is a version byte (1) and then the JSON text, as
    /// `CopyRows::optional_jsonb` writes it; in text format the JSON text. Read raw because this
    /// build of sqlx decodes no JSON type.
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, StoreError> {
        use sqlx::{Row, ValueRef};
        let raw = row.try_get_raw(name).map_err(crate::postgres::classify)?;
        if raw.is_null() {
            return Ok(Metadata::none());
        }
        let format = raw.format();
        let bytes = raw.as_bytes().map_err(|error| corrupt(format!("transfer metadata: {error}")))?;
        let text = match format {
            sqlx::postgres::PgValueFormat::Binary => {
                bytes.strip_prefix(&[1_u8]).ok_or_else(|| corrupt("transfer metadata: unknown jsonb version"))?
            }
            sqlx::postgres::PgValueFormat::Text => bytes,
        };
        let text = std::str::from_utf8(text).map_err(|_| corrupt("transfer metadata: not UTF-8"))?;
        crate::metadata::from_db(Some(text))
    }

    fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, StoreError> {
        crate::metadata::from_db(Option::<String>::from_sqlite(row, name)?.as_deref())
    }
}

/// An account from a row of `ACCOUNT_COLUMNS`, the rows (`transfer_id`, `amount`) of its holds
/// and of its credit admissions, and its newest posting after the snapshot, if any:
/// `(balance_after, version)`.
fn account_from_row<R: SqlRow>(
    row: &R,
    holds: &[R],
    admissions: &[R],
    tail: Option<(Decimal, i64)>,
) -> Result<Loaded<Account>, StoreError> {
    let id = AccountId::from_uuid(row.decode("id")?);
    let kind = parse(&row.decode::<String>("kind")?, AccountKind::parse, "account kind")?;
    let snapshot_version: i64 = row.decode("version")?;
    let (balance, version) = match tail {
        Some((balance, version)) if version > snapshot_version => (balance, version),
        _ => (row.decode("balance")?, snapshot_version),
    };
    // `Position::new` starts with nothing held; restoring each hold adds it back. `held` is
    // the sum of the holds still placed: the snapshot's figure is only as fresh as its flush.
    let mut position = Position::new(balance, row.decode("credit_limit")?, kind.is_system());
    position.version = u64::try_from(version).map_err(|_| corrupt(format!("negative posting version {version}")))?;
    for hold in holds {
        let transfer = TransferId::from_uuid(hold.decode("transfer_id")?);
        position
            .restore_hold(transfer, hold.decode("amount")?)
            .map_err(|_| corrupt(format!("account {id}: its holds overflow")))?;
    }
    for admission in admissions {
        let transfer = TransferId::from_uuid(admission.decode("transfer_id")?);
        position
            .restore_admission(transfer, admission.decode("amount")?)
            .map_err(|_| corrupt(format!("account {id}: its credit admissions overflow")))?;
    }
    let account = Account {
        id,
        owner: row.decode("owner_id")?,
        currency: parse(&row.decode::<String>("currency")?, Currency::from_code, "currency")?,
        kind,
        status: parse(&row.decode::<String>("status")?, AccountStatus::parse, "account status")?,
        position,
        created_at: row.decode("created_at")?,
    };
    let seq = account.position.version;
    Ok(Loaded { value: account, seq })
}

/// Rows with an `account_id` column, by account.
fn by_account<R: SqlRow>(rows: Vec<R>) -> Result<HashMap<Uuid, Vec<R>>, StoreError> {
    let mut by_account: HashMap<Uuid, Vec<R>> = HashMap::new();
    for row in rows {
        by_account.entry(row.decode("account_id")?).or_default().push(row);
    }
    Ok(by_account)
}

fn tail_of(row: Option<impl SqlRow>) -> Result<Option<(Decimal, i64)>, StoreError> {
    row.map(|row| Ok((row.decode("balance_after")?, row.decode("version")?))).transpose()
}

/// A transfer from a row of `TRANSFER_COLUMNS`.
pub(crate) fn transfer_from_row(row: &impl SqlRow) -> Result<Loaded<Transfer>, StoreError> {
    let text = |column: &str| -> Result<String, StoreError> { row.decode(column) };
    let optional_text = |column: &str| -> Result<Option<String>, StoreError> { row.decode(column) };
    let beneficiary = match (optional_text("beneficiary_name")?, optional_text("beneficiary_iban")?) {
        (Some(name), Some(iban)) => Some(Beneficiary { name, iban }),
        (None, None) => None,
        _ => return Err(corrupt("transfer with half a beneficiary (a name without an IBAN, or the reverse)")),
    };
    let idempotency = match (
        row.decode::<Option<Uuid>>("idempotency_scope")?,
        optional_text("idempotency_key")?,
        optional_text("idempotency_fingerprint")?,
    ) {
        (Some(scope), Some(key), Some(fingerprint)) => {
            Some(tally_engine::Idempotency { scope, key: key.into(), fingerprint: fingerprint.into() })
        }
        (None, None, None) => None,
        _ => return Err(corrupt("transfer with half an idempotency key")),
    };
    let transfer = Transfer {
        id: TransferId::from_uuid(row.decode("id")?),
        kind: parse(&text("kind")?, TransferKind::parse, "transfer kind")?,
        status: parse(&text("status")?, TransferStatus::parse, "transfer status")?,
        step: parse(&text("step")?, SagaStep::parse, "saga step")?,
        source: AccountId::from_uuid(row.decode("source_id")?),
        destination: AccountId::from_uuid(row.decode("destination_id")?),
        amount: row.decode("amount")?,
        currency: parse(&text("currency")?, Currency::from_code, "currency")?,
        fee: row.decode("fee")?,
        fx_rate: row.decode("fx_rate")?,
        destination_amount: row.decode("destination_amount")?,
        destination_currency: parse(&text("destination_currency")?, Currency::from_code, "currency")?,
        pending_reason: optional_text("pending_reason")?
            .map(|text| parse(&text, PendingReason::parse, "pending reason"))
            .transpose()?,
        failure_reason: optional_text("failure_reason")?
            .map(|text| parse(&text, ErrorCode::from_str_code, "error code"))
            .transpose()?,
        reference: optional_text("reference")?.map(Into::into),
        description: optional_text("description")?.map(Into::into),
        beneficiary,
        initiated_by: row.decode::<Option<UserId>>("initiated_by")?,
        idempotency,
        created_at: row.decode("created_at")?,
        completed_at: row.decode("completed_at")?,
        metadata: row.decode("metadata")?,
        pending_expires_at: row.decode("pending_expires_at")?,
        rendering: Default::default(),
    };
    Ok(Loaded { value: transfer, seq: seq_of(row.decode("seq")?)? })
}

/// A posting from a row of `POSTING_COLUMNS`.
pub(crate) fn posting_from_row(row: &impl SqlRow) -> Result<Posting, StoreError> {
    Ok(Posting {
        transfer: TransferId::from_uuid(row.decode("transfer_id")?),
        account: AccountId::from_uuid(row.decode("account_id")?),
        currency: parse(&row.decode::<String>("currency")?, Currency::from_code, "currency")?,
        direction: parse(&row.decode::<String>("direction")?, Direction::parse, "direction")?,
        amount: row.decode("amount")?,
    })
}

/// Rebuilds a wallet from its row, its assets (in arrival order) and its holds.
fn wallet_from_rows<R: SqlRow>(row: &R, assets: &[R], holds: &[R]) -> Result<Loaded<Wallet>, StoreError> {
    let id = WalletId::from_uuid(row.decode("id")?);
    let mut wallet = Wallet {
        id,
        owner: row.decode("owner_id")?,
        status: parse(&row.decode::<String>("status")?, AccountStatus::parse, "wallet status")?,
        assets: Vec::with_capacity(assets.len()),
        created_at: row.decode("created_at")?,
    };
    for asset_row in assets {
        let code: String = asset_row.decode("asset")?;
        let asset = parse(&code, Currency::from_code, "asset")?;
        let held: Decimal = asset_row.decode("held")?;
        // A wallet position has no credit limit and is never unlimited, as `Wallet` makes it.
        let mut position = Position::new(asset_row.decode("balance")?, Decimal::ZERO, false);
        for hold in holds {
            if hold.decode::<String>("asset")? == code {
                let transfer = TransferId::from_uuid(hold.decode("transfer_id")?);
                position
                    .restore_hold(transfer, hold.decode("amount")?)
                    .map_err(|_| corrupt(format!("wallet {id} {code}: its holds overflow")))?;
            }
        }
        if position.held != held {
            return Err(corrupt(format!("wallet {id} {code}: held {held} but its holds sum to {}", position.held)));
        }
        // The stored figure keeps the scale the engine's arithmetic gave it, as for accounts.
        position.held = held;
        wallet.assets.push((asset, position));
    }
    // Every hold must belong to an asset row; one that does not would vanish on load.
    for hold in holds {
        let code: String = hold.decode("asset")?;
        if !assets.iter().any(|asset_row| asset_row.decode::<String>("asset").is_ok_and(|asset| asset == code)) {
            return Err(corrupt(format!("wallet {id}: a hold in {code}, an asset it does not have")));
        }
    }
    Ok(Loaded { value: wallet, seq: seq_of(row.decode("snapshot_seq")?)? })
}

/// Whether the store holds `plan` as its commit wrote it (`events::chain::is_link_of`).
pub(crate) async fn holds_batch(store: &impl LedgerSql, plan: &BatchPlan) -> Result<bool, StoreError> {
    let shard = i16::try_from(plan.shard).map_err(|_| corrupt("shard beyond SMALLINT"))?;
    let (last, before) = (seq_to_db(plan.last_seq)?, seq_to_db(plan.first_seq.saturating_sub(1))?);
    let link: Option<(i64, Vec<u8>, Option<Vec<u8>>)> = run_on_backend!(store, |pool| {
        let row = sqlx::query(crate::events::chain::BATCH_LINK_SQL)
            .bind(shard)
            .bind(last)
            .bind(before)
            .fetch_optional(&pool)
            .await
            .map_err(classify)?;
        row.map(|row| Ok((row.decode("first_seq")?, row.decode("hash")?, row.decode("prev")?))).transpose()
    })?;
    Ok(link.is_some_and(|(first, hash, prev)| crate::events::chain::is_link_of(plan, first, &hash, prev.as_deref())))
}

/// Each journal shard's committed sequence, by shard number (numbered 0.. without gaps).
pub(crate) async fn committed_seqs(store: &impl LedgerSql) -> Result<Vec<u64>, StoreError> {
    run_on_backend!(store, |pool| {
        let rows = sqlx::query("SELECT shard, committed_seq FROM journal_shards ORDER BY shard")
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
        let mut seqs = Vec::with_capacity(rows.len());
        for row in &rows {
            let shard: i16 = row.decode("shard")?;
            if usize::try_from(shard).ok() != Some(seqs.len()) {
                return Err(corrupt(format!("journal shards are not numbered 0.. without gaps (found {shard})")));
            }
            seqs.push(seq_of(row.decode("committed_seq")?)?);
        }
        Ok(seqs)
    })
}

/// The latest booking time any shard committed (zero for an empty store).
pub(crate) async fn last_booked_at(store: &impl LedgerSql) -> Result<Timestamp, StoreError> {
    run_on_backend!(store, |pool| {
        let booked: Option<i64> =
            sqlx::query_scalar("SELECT max(booked_at) FROM journal_shards").fetch_one(&pool).await.map_err(classify)?;
        Ok(Timestamp::from_micros(booked.unwrap_or(0)))
    })
}

pub(crate) async fn load_account(store: &impl LedgerSql, id: AccountId) -> Result<Option<Loaded<Account>>, StoreError> {
    run_on_backend!(store, |pool| {
        // One snapshot: the account, its newest posting and its holds cannot straddle a
        // commit.
        let mut transaction = pool.begin_snapshot().await.map_err(classify)?;
        let row = sqlx::query(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"))
            .bind(Id(id.as_uuid()))
            .fetch_optional(&mut *transaction)
            .await
            .map_err(classify)?;
        let Some(row) = row else { return Ok(None) };
        let tail = sqlx::query(TAIL)
            .bind(Id(id.as_uuid()))
            .bind(row.decode::<i64>("booked_at")?)
            .bind(row.decode::<i64>("version")?)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(classify)?;
        let holds = sqlx::query("SELECT transfer_id, amount FROM holds WHERE account_id = $1")
            .bind(Id(id.as_uuid()))
            .fetch_all(&mut *transaction)
            .await
            .map_err(classify)?;
        let admissions = sqlx::query("SELECT transfer_id, amount FROM credit_admissions WHERE account_id = $1")
            .bind(Id(id.as_uuid()))
            .fetch_all(&mut *transaction)
            .await
            .map_err(classify)?;
        transaction.commit().await.map_err(classify)?;
        account_from_row(&row, &holds, &admissions, tail_of(tail)?).map(Some)
    })
}

pub(crate) async fn load_wallet(store: &impl LedgerSql, id: WalletId) -> Result<Option<Loaded<Wallet>>, StoreError> {
    run_on_backend!(store, |pool| {
        let mut transaction = pool.begin_snapshot().await.map_err(classify)?;
        let row = sqlx::query("SELECT id, owner_id, status, created_at, snapshot_seq FROM wallets WHERE id = $1")
            .bind(Id(id.as_uuid()))
            .fetch_optional(&mut *transaction)
            .await
            .map_err(classify)?;
        let Some(row) = row else { return Ok(None) };
        let assets =
            sqlx::query("SELECT asset, balance, held FROM wallet_assets WHERE wallet_id = $1 ORDER BY ordinal")
                .bind(Id(id.as_uuid()))
                .fetch_all(&mut *transaction)
                .await
                .map_err(classify)?;
        let holds = sqlx::query("SELECT asset, transfer_id, amount FROM wallet_holds WHERE wallet_id = $1")
            .bind(Id(id.as_uuid()))
            .fetch_all(&mut *transaction)
            .await
            .map_err(classify)?;
        transaction.commit().await.map_err(classify)?;
        wallet_from_rows(&row, &assets, &holds).map(Some)
    })
}

pub(crate) async fn load_transfer(
    store: &impl LedgerSql,
    id: TransferId,
) -> Result<Option<Loaded<Transfer>>, StoreError> {
    run_on_backend!(store, |pool| {
        let row = sqlx::query(&format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = $1"))
            .bind(Id(id.as_uuid()))
            .fetch_optional(&pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(transfer_from_row).transpose()
    })
}

/// The transfer an idempotency key names, if any: one probe of `transfers_by_idempotency`.
/// (Postgres groups the look-ups in flight into one query instead: `postgres/key_lookups.rs`.)
pub(crate) async fn transfer_by_idempotency(
    store: &impl LedgerSql,
    scope: Uuid,
    key: &str,
) -> Result<Option<Loaded<Transfer>>, StoreError> {
    let key = key.to_owned();
    run_on_backend!(store, |pool| {
        let row = sqlx::query(&format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE idempotency_scope = $1 AND idempotency_key = $2"
        ))
        .bind(Id(scope))
        .bind(&key)
        .fetch_optional(&pool)
        .await
        .map_err(classify)?;
        row.as_ref().map(transfer_from_row).transpose()
    })
}

/// A page of the idempotency keys in use, after `after`: a range of the unique index
/// `transfers_by_idempotency`.
pub(crate) async fn idempotency_keys_after(
    store: &impl LedgerSql,
    after: Option<(Uuid, String)>,
    limit: u32,
) -> Result<Vec<(Uuid, String)>, StoreError> {
    let (scope, key) = after.unwrap_or((Uuid::nil(), String::new()));
    run_on_backend!(store, |pool| {
        let rows: Vec<(Id, String)> = sqlx::query_as(
            "SELECT idempotency_scope, idempotency_key FROM transfers
             WHERE idempotency_key IS NOT NULL AND (idempotency_scope, idempotency_key) > ($1, $2)
             ORDER BY idempotency_scope, idempotency_key LIMIT $3",
        )
        .bind(Id(scope))
        .bind(key)
        .bind(i64::from(limit))
        .fetch_all(&pool)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(|(Id(scope), key)| (scope, key)).collect())
    })
}

pub(crate) async fn non_terminal_transfers(store: &impl LedgerSql) -> Result<Vec<Transfer>, StoreError> {
    run_on_backend!(store, |pool| {
        let rows = sqlx::query(&format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE status IN ('processing', 'pending') ORDER BY seq"
        ))
        .fetch_all(&pool)
        .await
        .map_err(classify)?;
        rows.iter().map(|row| transfer_from_row(row).map(|loaded| loaded.value)).collect()
    })
}

/// Every account as of one snapshot, each with its holds and its newest posting after its
/// snapshot. Postgres reads the tails in the same query (`LATERAL`); SQLite, which has no
/// `LATERAL`, with one seek per account.
pub(crate) async fn all_accounts(store: &impl LedgerSql) -> Result<Vec<Account>, StoreError> {
    run_on_backend!(store, |pool| {
        let mut transaction = pool.begin_snapshot().await.map_err(classify)?;
        let sql = if dialect::HAS_LATERAL {
            "SELECT a.id, a.owner_id, a.currency, a.kind, a.status, a.balance, a.held, a.credit_limit, a.created_at,
                    a.version, a.booked_at, tail.balance_after AS tail_balance, tail.version AS tail_version
             FROM accounts a LEFT JOIN LATERAL (
                 SELECT balance_after, version FROM postings p
                 WHERE p.account_id = a.id AND p.booked_at >= a.booked_at AND p.version > a.version
                 ORDER BY p.booked_at DESC, p.version DESC LIMIT 1) tail ON true
             ORDER BY a.id"
                .to_owned()
        } else {
            format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id")
        };
        let rows = sqlx::query(&sql).fetch_all(&mut *transaction).await.map_err(classify)?;
        let holds = sqlx::query("SELECT account_id, transfer_id, amount FROM holds")
            .fetch_all(&mut *transaction)
            .await
            .map_err(classify)?;
        let mut holds_by_account = by_account(holds)?;
        let admissions = sqlx::query("SELECT account_id, transfer_id, amount FROM credit_admissions")
            .fetch_all(&mut *transaction)
            .await
            .map_err(classify)?;
        let mut admissions_by_account = by_account(admissions)?;
        let mut accounts = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: Uuid = row.decode("id")?;
            let holds = holds_by_account.remove(&id).unwrap_or_default();
            let admissions = admissions_by_account.remove(&id).unwrap_or_default();
            let tail = if dialect::HAS_LATERAL {
                let balance: Option<Decimal> = row.decode("tail_balance")?;
                balance.zip(row.decode::<Option<i64>>("tail_version")?)
            } else {
                let tail = sqlx::query(TAIL)
                    .bind(Id(id))
                    .bind(row.decode::<i64>("booked_at")?)
                    .bind(row.decode::<i64>("version")?)
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(classify)?;
                tail_of(tail)?
            };
            accounts.push(account_from_row(row, &holds, &admissions, tail)?.value);
        }
        transaction.commit().await.map_err(classify)?;
        // A hold whose account has no row would make money reserved nowhere.
        if let Some(account) = holds_by_account.keys().next() {
            return Err(corrupt(format!("holds on account {account}, which the store does not have")));
        }
        if let Some(account) = admissions_by_account.keys().next() {
            return Err(corrupt(format!("credit admissions on account {account}, which the store does not have")));
        }
        Ok(accounts)
    })
}

pub(crate) async fn postings_of(store: &impl LedgerSql, account: AccountId) -> Result<Vec<Posting>, StoreError> {
    run_on_backend!(store, |pool| {
        let rows = sqlx::query(&format!(
            "SELECT {POSTING_COLUMNS} FROM postings WHERE account_id = $1 ORDER BY booked_at, version"
        ))
        .bind(Id(account.as_uuid()))
        .fetch_all(&pool)
        .await
        .map_err(classify)?;
        rows.iter().map(posting_from_row).collect()
    })
}

/// Every transfer row, whatever its status, in the order they were last written (`tally check`).
pub(crate) async fn all_transfers(store: &impl LedgerSql) -> Result<Vec<Transfer>, StoreError> {
    run_on_backend!(store, |pool| {
        let rows = sqlx::query(&format!("SELECT {TRANSFER_COLUMNS} FROM transfers ORDER BY seq"))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
        rows.iter().map(|row| transfer_from_row(row).map(|loaded| loaded.value)).collect()
    })
}

/// Every posting of every account (`tally check`).
pub(crate) async fn all_postings(store: &impl LedgerSql) -> Result<Vec<Posting>, StoreError> {
    run_on_backend!(store, |pool| {
        let rows =
            sqlx::query(&format!("SELECT {POSTING_COLUMNS} FROM postings")).fetch_all(&pool).await.map_err(classify)?;
        rows.iter().map(posting_from_row).collect()
    })
}

/// Every row of `holds` or `credit_admissions` (the same columns), in the order they were
/// written.
async fn keyed_amounts(store: &impl LedgerSql, table: &'static str) -> Result<Vec<LiveHold>, StoreError> {
    run_on_backend!(store, |pool| {
        let rows = sqlx::query(&format!("SELECT account_id, transfer_id, amount FROM {table} ORDER BY seq"))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|row| {
                Ok(LiveHold {
                    account: AccountId::from_uuid(row.decode("account_id")?),
                    transfer: TransferId::from_uuid(row.decode("transfer_id")?),
                    amount: row.decode("amount")?,
                })
            })
            .collect()
    })
}

/// Every hold still placed, in the order they were placed.
pub(crate) async fn live_holds(store: &impl LedgerSql) -> Result<Vec<LiveHold>, StoreError> {
    keyed_amounts(store, "holds").await
}

#[async_trait::async_trait]
impl<S: LedgerSql> StoreReads for S {
    async fn committed_seqs(&self) -> Result<Vec<u64>, StoreError> {
        committed_seqs(self).await
    }

    async fn last_booked_at(&self) -> Result<Timestamp, StoreError> {
        last_booked_at(self).await
    }

    async fn load_account(&self, id: AccountId) -> Result<Option<Loaded<Account>>, StoreError> {
        load_account(self, id).await
    }

    async fn load_wallet(&self, id: WalletId) -> Result<Option<Loaded<Wallet>>, StoreError> {
        load_wallet(self, id).await
    }

    async fn load_transfer(&self, id: TransferId) -> Result<Option<Loaded<Transfer>>, StoreError> {
        load_transfer(self, id).await
    }

    async fn idempotency_keys_after(
        &self,
        after: Option<(Uuid, String)>,
        limit: u32,
    ) -> Result<Vec<(Uuid, String)>, StoreError> {
        idempotency_keys_after(self, after, limit).await
    }

    async fn non_terminal_transfers(&self) -> Result<Vec<Transfer>, StoreError> {
        non_terminal_transfers(self).await
    }

    async fn all_accounts(&self) -> Result<Vec<Account>, StoreError> {
        all_accounts(self).await
    }

    async fn postings_of(&self, account: AccountId) -> Result<Vec<Posting>, StoreError> {
        postings_of(self, account).await
    }

    async fn live_holds(&self) -> Result<Vec<LiveHold>, StoreError> {
        live_holds(self).await
    }

    async fn live_admissions(&self) -> Result<Vec<LiveHold>, StoreError> {
        keyed_amounts(self, "credit_admissions").await
    }
}

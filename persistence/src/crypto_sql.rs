//! The ledger stores' wallet profiles, wallet postings and crypto operations (migration 0008),
//! written once for both backends (`crate::sql`): the reads and profile writes for every
//! `LedgerSql` store, and the batch's writes (`CryptoWrites`, inside the journal batch's
//! transaction). What the two backends store differently beyond ids and amounts (two integer
//! column types) is on `CryptoDialect` and `Step`.

use rust_decimal::Decimal;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use tally_engine::{
    AccountId, CryptoOp, CryptoOpKind, CryptoOpStatus, Currency, Direction, ErrorCode, Idempotency, TransferId, UserId,
    WalletId,
};
use uuid::Uuid;

use crate::Loaded;
use crate::batch::{BatchPlan, WalletPosting};
use crate::crypto::{WALLETS_PER_OWNER_MAX, WalletProfile};
use crate::sql::{
    Column, Exact, Id, LedgerSql, PostgresDialect, SqlRow, SqliteDialect, impl_for_connections, parse, run_on_backend,
    seq_of, seq_to_db,
};
use crate::store::corrupt;
use crate::store::{StoreError, WalletStore};

const OP_COLUMNS: &str =
    "id, kind, status, step, owner_id, wallet_id, asset, asset_amount, fiat_account_id, fiat_currency,
    fiat_amount, fee, price, address, tx_hash, idempotency_scope, idempotency_key, idempotency_fingerprint,
    failure_reason, created_at, updated_at, seq";

const PROFILE_COLUMNS: &str = "wallet_id, owner_id, asset, deposit_address, created_at";

/// The integer parameters whose column type differs: `wallet_postings.shard` is `SMALLINT` and
/// `crypto_ops.step` `INTEGER` on Postgres (whose driver binds only the matching width), while
/// every SQLite integer is 64-bit.
trait CryptoDialect {
    type Shard;
    type Step;

    fn shard_param(shard: u16) -> Result<Self::Shard, StoreError>;

    fn step_param(step: u32) -> Result<Self::Step, StoreError>;
}

impl CryptoDialect for PostgresDialect {
    type Shard = i16;
    type Step = i32;

    fn shard_param(shard: u16) -> Result<i16, StoreError> {
        i16::try_from(shard).map_err(|_| corrupt("shard beyond SMALLINT"))
    }

    fn step_param(step: u32) -> Result<i32, StoreError> {
        i32::try_from(step).map_err(|_| corrupt("crypto step beyond INTEGER"))
    }
}

impl CryptoDialect for SqliteDialect {
    type Shard = i64;
    type Step = i64;

    fn shard_param(shard: u16) -> Result<i64, StoreError> {
        Ok(i64::from(shard))
    }

    fn step_param(step: u32) -> Result<i64, StoreError> {
        Ok(i64::from(step))
    }
}

/// A crypto operation's step as stored: `INTEGER` (32-bit) on Postgres, 64-bit on SQLite.
struct Step(u32);

impl Column for Step {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, StoreError> {
        let step: i32 = row.try_get(name).map_err(crate::postgres::classify)?;
        u32::try_from(step).map(Step).map_err(|_| corrupt("negative crypto step"))
    }

    fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, StoreError> {
        let step: i64 = row.try_get(name).map_err(crate::sqlite::classify)?;
        u32::try_from(step).map(Step).map_err(|_| corrupt("crypto step out of range"))
    }
}

/// Writes of wallet postings and crypto operations inside a journal batch's transaction.
pub(crate) trait CryptoWrites {
    /// Wallet postings and crypto operations of one batch, in the batch's transaction. Few next
    /// to account writes, so row by row.
    async fn commit_crypto(&mut self, plan: &BatchPlan) -> Result<(), StoreError>;
}

impl_for_connections! {
    impl CryptoWrites {
        async fn commit_crypto(&mut self, plan: &BatchPlan) -> Result<(), StoreError> {
            for (seq, posting, balance_after) in &plan.wallet_postings {
                sqlx::query(
                    "INSERT INTO wallet_postings (shard, seq, booked_at, transfer_id, wallet_id, asset, direction, amount, balance_after)
                     VALUES ($8, $1, $9, $2, $3, $4, $5, $6, $7)",
                )
                .bind(seq_to_db(*seq)?)
                .bind(Id(posting.transfer.as_uuid()))
                .bind(Id(posting.wallet.as_uuid()))
                .bind(posting.asset.code())
                .bind(posting.direction.as_str())
                .bind(Exact(posting.amount))
                .bind(Exact(*balance_after))
                .bind(<dialect as CryptoDialect>::shard_param(plan.shard)?)
                .bind(plan.booked_at.as_micros())
                .execute(&mut *self)
                .await
                .map_err(classify)?;
            }
            for (seq, op) in &plan.crypto_ops {
                sqlx::query(&format!(
                    "INSERT INTO crypto_ops ({OP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                         $15, $16, $17, $18, $19, $20, $21, $22)
                     ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, step = EXCLUDED.step,
                         tx_hash = EXCLUDED.tx_hash, failure_reason = EXCLUDED.failure_reason,
                         idempotency_scope = EXCLUDED.idempotency_scope,
                         idempotency_key = EXCLUDED.idempotency_key,
                         idempotency_fingerprint = EXCLUDED.idempotency_fingerprint,
                         updated_at = EXCLUDED.updated_at, seq = EXCLUDED.seq"
                ))
                .bind(Id(op.id.as_uuid()))
                .bind(op.kind.as_str())
                .bind(op.status.as_str())
                .bind(<dialect as CryptoDialect>::step_param(op.step)?)
                .bind(Id(op.owner.as_uuid()))
                .bind(Id(op.wallet.as_uuid()))
                .bind(op.asset.code())
                .bind(Exact(op.asset_amount))
                .bind(op.fiat_account.map(|account| Id(account.as_uuid())))
                .bind(op.fiat_currency.map(Currency::code))
                .bind(Exact(op.fiat_amount))
                .bind(Exact(op.fee))
                .bind(op.price.map(Exact))
                .bind(op.address.clone())
                .bind(op.tx_hash.clone())
                .bind(op.idempotency.as_ref().map(|i| Id(i.scope)))
                .bind(op.idempotency.as_ref().map(|i| i.key.to_string()))
                .bind(op.idempotency.as_ref().map(|i| i.fingerprint.to_string()))
                .bind(op.failure_reason.map(ErrorCode::as_str))
                .bind(op.created_at.as_micros())
                .bind(op.updated_at.as_micros())
                .bind(seq_to_db(*seq)?)
                .execute(&mut *self)
                .await
                .map_err(classify)?;
            }
            Ok(())
        }
    }
}

fn op_from_row(row: &impl SqlRow) -> Result<Loaded<CryptoOp>, StoreError> {
    let text = |column: &str| -> Result<String, StoreError> { row.decode(column) };
    let optional_text = |column: &str| -> Result<Option<String>, StoreError> { row.decode(column) };
    let scope: Option<Uuid> = row.decode("idempotency_scope")?;
    let idempotency = match (scope, optional_text("idempotency_key")?, optional_text("idempotency_fingerprint")?) {
        (Some(scope), Some(key), Some(fingerprint)) => {
            Some(Idempotency { scope, key: key.into(), fingerprint: fingerprint.into() })
        }
        (None, None, None) => None,
        _ => return Err(corrupt("crypto operation with half an idempotency key")),
    };
    let fiat_account: Option<Uuid> = row.decode("fiat_account_id")?;
    let op = CryptoOp {
        id: TransferId::from_uuid(row.decode("id")?),
        kind: parse(&text("kind")?, CryptoOpKind::parse, "crypto operation kind")?,
        status: parse(&text("status")?, CryptoOpStatus::parse, "crypto operation status")?,
        step: row.decode::<Step>("step")?.0,
        owner: row.decode("owner_id")?,
        wallet: WalletId::from_uuid(row.decode("wallet_id")?),
        asset: parse(&text("asset")?, Currency::from_code, "asset")?,
        asset_amount: row.decode("asset_amount")?,
        fiat_account: fiat_account.map(AccountId::from_uuid),
        fiat_currency: optional_text("fiat_currency")?
            .map(|code| parse(&code, Currency::from_code, "fiat currency"))
            .transpose()?,
        fiat_amount: row.decode("fiat_amount")?,
        fee: row.decode("fee")?,
        price: row.decode("price")?,
        address: optional_text("address")?,
        tx_hash: optional_text("tx_hash")?,
        idempotency,
        failure_reason: optional_text("failure_reason")?
            .map(|code| parse(&code, ErrorCode::from_str_code, "error code"))
            .transpose()?,
        created_at: row.decode("created_at")?,
        updated_at: row.decode("updated_at")?,
    };
    Ok(Loaded { value: op, seq: seq_of(row.decode("seq")?)? })
}

fn profile_from_row(row: &impl SqlRow) -> Result<WalletProfile, StoreError> {
    Ok(WalletProfile {
        wallet: WalletId::from_uuid(row.decode("wallet_id")?),
        owner: row.decode("owner_id")?,
        asset: parse(&row.decode::<String>("asset")?, Currency::from_code, "asset")?,
        deposit_address: row.decode("deposit_address")?,
        created_at: row.decode("created_at")?,
    })
}

/// A parameter of a one-row lookup.
enum Bind {
    Id(Uuid),
    Text(String),
}

async fn one_op(store: &impl LedgerSql, sql: String, binds: Vec<Bind>) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
    run_on_backend!(store, |pool| {
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = match bind {
                Bind::Id(value) => query.bind(Id(value)),
                Bind::Text(value) => query.bind(value),
            };
        }
        let row = query.fetch_optional(&pool).await.map_err(classify)?;
        row.as_ref().map(op_from_row).transpose()
    })
}

pub(crate) async fn load_crypto_op(
    store: &impl LedgerSql,
    id: TransferId,
) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
    one_op(store, format!("SELECT {OP_COLUMNS} FROM crypto_ops WHERE id = $1"), vec![Bind::Id(id.as_uuid())]).await
}

pub(crate) async fn deposit_by_tx_hash(
    store: &impl LedgerSql,
    tx_hash: &str,
) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
    one_op(
        store,
        format!("SELECT {OP_COLUMNS} FROM crypto_ops WHERE kind = 'deposit' AND tx_hash = $1"),
        vec![Bind::Text(tx_hash.to_owned())],
    )
    .await
}

pub(crate) async fn crypto_op_by_idempotency(
    store: &impl LedgerSql,
    kind: CryptoOpKind,
    scope: Uuid,
    key: &str,
) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
    one_op(
        store,
        format!(
            "SELECT {OP_COLUMNS} FROM crypto_ops WHERE kind = $1 AND idempotency_scope = $2 AND idempotency_key = $3"
        ),
        vec![Bind::Text(kind.as_str().to_owned()), Bind::Id(scope), Bind::Text(key.to_owned())],
    )
    .await
}

pub(crate) async fn unfinished_crypto_ops(store: &impl LedgerSql) -> Result<Vec<CryptoOp>, StoreError> {
    run_on_backend!(store, |pool| {
        let rows = sqlx::query(&format!(
            "SELECT {OP_COLUMNS} FROM crypto_ops WHERE status IN ('processing', 'pending') ORDER BY seq"
        ))
        .fetch_all(&pool)
        .await
        .map_err(classify)?;
        rows.iter().map(|row| op_from_row(row).map(|loaded| loaded.value)).collect()
    })
}

pub(crate) async fn wallet_postings_of_transfer(
    store: &impl LedgerSql,
    transfer: TransferId,
) -> Result<Vec<WalletPosting>, StoreError> {
    run_on_backend!(store, |pool| {
        let rows = sqlx::query(
            "SELECT transfer_id, wallet_id, asset, direction, amount FROM wallet_postings
             WHERE transfer_id = $1 ORDER BY seq",
        )
        .bind(Id(transfer.as_uuid()))
        .fetch_all(&pool)
        .await
        .map_err(classify)?;
        rows.iter().map(wallet_posting_from_row).collect()
    })
}

/// Every wallet posting (`tally check`).
pub(crate) async fn all_wallet_postings(store: &impl LedgerSql) -> Result<Vec<WalletPosting>, StoreError> {
    run_on_backend!(store, |pool| {
        let rows = sqlx::query("SELECT transfer_id, wallet_id, asset, direction, amount FROM wallet_postings")
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
        rows.iter().map(wallet_posting_from_row).collect()
    })
}

/// A wallet posting from a row of (`transfer_id`, `wallet_id`, `asset`, `direction`, `amount`).
fn wallet_posting_from_row(row: &impl SqlRow) -> Result<WalletPosting, StoreError> {
    Ok(WalletPosting {
        transfer: TransferId::from_uuid(row.decode("transfer_id")?),
        wallet: WalletId::from_uuid(row.decode("wallet_id")?),
        asset: parse(&row.decode::<String>("asset")?, Currency::from_code, "asset")?,
        direction: parse(&row.decode::<String>("direction")?, Direction::parse, "direction")?,
        amount: row.decode("amount")?,
    })
}

pub(crate) async fn wallet_balances(store: &impl LedgerSql) -> Result<Vec<(WalletId, Currency, Decimal)>, StoreError> {
    run_on_backend!(store, |pool| {
        let rows = sqlx::query("SELECT wallet_id, asset, balance FROM wallet_assets ORDER BY wallet_id, asset")
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|row| {
                Ok((
                    WalletId::from_uuid(row.decode("wallet_id")?),
                    parse(&row.decode::<String>("asset")?, Currency::from_code, "asset")?,
                    row.decode("balance")?,
                ))
            })
            .collect()
    })
}

pub(crate) async fn insert_wallet_profile(store: &impl LedgerSql, profile: &WalletProfile) -> Result<bool, StoreError> {
    let profile = profile.clone();
    run_on_backend!(store, |pool| {
        let inserted = sqlx::query(&format!(
            "INSERT INTO wallet_profiles ({PROFILE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (owner_id, asset) DO NOTHING"
        ))
        .bind(Id(profile.wallet.as_uuid()))
        .bind(Id::from(profile.owner))
        .bind(profile.asset.code())
        .bind(profile.deposit_address.clone())
        .bind(profile.created_at.as_micros())
        .execute(&pool)
        .await
        .map_err(classify)?;
        Ok(inserted.rows_affected() == 1)
    })
}

async fn profiles(store: &impl LedgerSql, filter: &'static str, bind: Bind) -> Result<Vec<WalletProfile>, StoreError> {
    // Built out here: a borrowed `filter` inside the body makes its future not provably `Send`.
    let sql = format!(
        "SELECT {PROFILE_COLUMNS} FROM wallet_profiles WHERE {filter} ORDER BY created_at, wallet_id LIMIT {WALLETS_PER_OWNER_MAX}"
    );
    run_on_backend!(store, |pool| {
        let query = sqlx::query(&sql);
        let query = match bind {
            Bind::Id(value) => query.bind(Id(value)),
            Bind::Text(value) => query.bind(value),
        };
        let rows = query.fetch_all(&pool).await.map_err(classify)?;
        rows.iter().map(profile_from_row).collect()
    })
}

pub(crate) async fn wallet_profile(
    store: &impl LedgerSql,
    wallet: WalletId,
) -> Result<Option<WalletProfile>, StoreError> {
    Ok(profiles(store, "wallet_id = $1", Bind::Id(wallet.as_uuid())).await?.pop())
}

pub(crate) async fn wallet_profile_by_address(
    store: &impl LedgerSql,
    address: &str,
) -> Result<Option<WalletProfile>, StoreError> {
    Ok(profiles(store, "deposit_address = $1", Bind::Text(address.to_owned())).await?.pop())
}

pub(crate) async fn wallet_profiles_of_owner(
    store: &impl LedgerSql,
    owner: UserId,
) -> Result<Vec<WalletProfile>, StoreError> {
    profiles(store, "owner_id = $1", Bind::Id(owner.as_uuid())).await
}

pub(crate) async fn wallet_profiles_page(
    store: &impl LedgerSql,
    filter: crate::crypto::WalletFilter,
    before: Option<crate::reads::listing::Position>,
    limit: u32,
) -> Result<Vec<WalletProfile>, StoreError> {
    let sql = format!(
        "SELECT {PROFILE_COLUMNS} FROM wallet_profiles
         WHERE ($1 IS NULL OR asset = $1) AND ($2 IS NULL OR owner_id = $2)
           AND ($3 IS NULL OR created_at < $3 OR (created_at = $3 AND wallet_id < $4))
         ORDER BY created_at DESC, wallet_id DESC LIMIT {limit}"
    );
    let asset = filter.asset.map(|asset| asset.code().to_owned());
    let owner = filter.owner.map(Id::from);
    let (at, id) = (before.map(|before| before.created_at), before.map(|before| Id(before.id)));
    run_on_backend!(store, |pool| {
        let rows = sqlx::query(&sql)
            .bind(asset.clone())
            .bind(owner)
            .bind(at)
            .bind(id)
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
        rows.iter().map(profile_from_row).collect()
    })
}

#[async_trait::async_trait]
impl<S: LedgerSql> WalletStore for S {
    async fn load_crypto_op(&self, id: TransferId) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        load_crypto_op(self, id).await
    }

    async fn deposit_by_tx_hash(&self, tx_hash: &str) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        deposit_by_tx_hash(self, tx_hash).await
    }

    async fn crypto_op_by_idempotency(
        &self,
        kind: CryptoOpKind,
        scope: Uuid,
        key: &str,
    ) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        crypto_op_by_idempotency(self, kind, scope, key).await
    }

    async fn unfinished_crypto_ops(&self) -> Result<Vec<CryptoOp>, StoreError> {
        unfinished_crypto_ops(self).await
    }

    async fn wallet_profiles_page(
        &self,
        filter: crate::crypto::WalletFilter,
        before: Option<crate::reads::listing::Position>,
        limit: u32,
    ) -> Result<Vec<WalletProfile>, StoreError> {
        wallet_profiles_page(self, filter, before, limit).await
    }

    async fn wallet_postings_of_transfer(&self, transfer: TransferId) -> Result<Vec<WalletPosting>, StoreError> {
        wallet_postings_of_transfer(self, transfer).await
    }

    async fn wallet_balances(&self) -> Result<Vec<(WalletId, Currency, Decimal)>, StoreError> {
        wallet_balances(self).await
    }

    async fn insert_wallet_profile(&self, profile: &WalletProfile) -> Result<bool, StoreError> {
        insert_wallet_profile(self, profile).await
    }

    async fn wallet_profile(&self, wallet: WalletId) -> Result<Option<WalletProfile>, StoreError> {
        wallet_profile(self, wallet).await
    }

    async fn wallet_profile_by_address(&self, address: &str) -> Result<Option<WalletProfile>, StoreError> {
        wallet_profile_by_address(self, address).await
    }

    async fn wallet_profiles_of_owner(&self, owner: UserId) -> Result<Vec<WalletProfile>, StoreError> {
        wallet_profiles_of_owner(self, owner).await
    }
}

//! `PgStore`'s wallet profiles, wallet postings and crypto operations (migration 0008).

use rust_decimal::Decimal;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
use tally_engine::{
    AccountId, CryptoOp, CryptoOpKind, CryptoOpStatus, Currency, Direction, ErrorCode, Idempotency, Timestamp,
    TransferId, UserId, WalletId,
};
use uuid::Uuid;

use super::{PgStore, classify, parse, seq_of, seq_to_db};
use crate::Loaded;
use crate::batch::{BatchPlan, WalletPosting};
use crate::crypto::{WALLETS_PER_OWNER_MAX, WalletProfile};
use crate::store::StoreError;
use crate::store::corrupt;

const OP_COLUMNS: &str =
    "id, kind, status, step, owner_id, wallet_id, asset, asset_amount, fiat_account_id, fiat_currency,
    fiat_amount, fee, price, address, tx_hash, idempotency_scope, idempotency_key, idempotency_fingerprint,
    failure_reason, created_at, updated_at, seq";

/// Wallet postings and crypto operations of one batch, in the batch's transaction. Few next
/// to account writes, so row by row.
pub(super) async fn commit(transaction: &mut Transaction<'_, Postgres>, plan: &BatchPlan) -> Result<(), StoreError> {
    for (seq, posting, balance_after) in &plan.wallet_postings {
        sqlx::query(
            "INSERT INTO wallet_postings (shard, seq, booked_at, transfer_id, wallet_id, asset, direction, amount, balance_after)
             VALUES ($8, $1, $9, $2, $3, $4, $5, $6, $7)",
        )
        .bind(seq_to_db(*seq)?)
        .bind(posting.transfer.as_uuid())
        .bind(posting.wallet.as_uuid())
        .bind(posting.asset.code())
        .bind(posting.direction.as_str())
        .bind(posting.amount)
        .bind(*balance_after)
        .bind(i16::try_from(plan.shard).map_err(|_| corrupt("shard beyond SMALLINT"))?)
        .bind(plan.booked_at.as_micros())
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }
    for (seq, op) in &plan.crypto_ops {
        sqlx::query(&format!(
            "INSERT INTO crypto_ops ({OP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                 $15, $16, $17, $18, $19, $20, $21, $22)
             ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, step = EXCLUDED.step,
                 tx_hash = EXCLUDED.tx_hash, failure_reason = EXCLUDED.failure_reason,
                 updated_at = EXCLUDED.updated_at, seq = EXCLUDED.seq"
        ))
        .bind(op.id.as_uuid())
        .bind(op.kind.as_str())
        .bind(op.status.as_str())
        .bind(i32::try_from(op.step).map_err(|_| corrupt("crypto step beyond INTEGER"))?)
        .bind(op.owner.as_uuid())
        .bind(op.wallet.as_uuid())
        .bind(op.asset.code())
        .bind(op.asset_amount)
        .bind(op.fiat_account.map(|account| account.as_uuid()))
        .bind(op.fiat_currency.map(Currency::code))
        .bind(op.fiat_amount)
        .bind(op.fee)
        .bind(op.price)
        .bind(op.address.clone())
        .bind(op.tx_hash.clone())
        .bind(op.idempotency.as_ref().map(|i| i.scope))
        .bind(op.idempotency.as_ref().map(|i| i.key.clone()))
        .bind(op.idempotency.as_ref().map(|i| i.fingerprint.clone()))
        .bind(op.failure_reason.map(ErrorCode::as_str))
        .bind(op.created_at.as_micros())
        .bind(op.updated_at.as_micros())
        .bind(seq_to_db(*seq)?)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

fn op_from_row(row: &PgRow) -> Result<Loaded<CryptoOp>, StoreError> {
    let text = |column: &str| -> Result<String, StoreError> { row.try_get(column).map_err(classify) };
    let optional_text = |column: &str| -> Result<Option<String>, StoreError> { row.try_get(column).map_err(classify) };
    let scope: Option<Uuid> = row.try_get("idempotency_scope").map_err(classify)?;
    let idempotency = match (scope, optional_text("idempotency_key")?, optional_text("idempotency_fingerprint")?) {
        (Some(scope), Some(key), Some(fingerprint)) => Some(Idempotency { scope, key, fingerprint }),
        (None, None, None) => None,
        _ => return Err(corrupt("crypto operation with half an idempotency key")),
    };
    let fiat_account: Option<Uuid> = row.try_get("fiat_account_id").map_err(classify)?;
    let step: i32 = row.try_get("step").map_err(classify)?;
    let op = CryptoOp {
        id: TransferId::from_uuid(row.try_get("id").map_err(classify)?),
        kind: parse(&text("kind")?, CryptoOpKind::parse, "crypto operation kind")?,
        status: parse(&text("status")?, CryptoOpStatus::parse, "crypto operation status")?,
        step: u32::try_from(step).map_err(|_| corrupt("negative crypto step"))?,
        owner: UserId::from_uuid(row.try_get("owner_id").map_err(classify)?),
        wallet: WalletId::from_uuid(row.try_get("wallet_id").map_err(classify)?),
        asset: parse(&text("asset")?, Currency::from_code, "asset")?,
        asset_amount: row.try_get("asset_amount").map_err(classify)?,
        fiat_account: fiat_account.map(AccountId::from_uuid),
        fiat_currency: optional_text("fiat_currency")?
            .map(|code| parse(&code, Currency::from_code, "fiat currency"))
            .transpose()?,
        fiat_amount: row.try_get("fiat_amount").map_err(classify)?,
        fee: row.try_get("fee").map_err(classify)?,
        price: row.try_get("price").map_err(classify)?,
        address: optional_text("address")?,
        tx_hash: optional_text("tx_hash")?,
        idempotency,
        failure_reason: optional_text("failure_reason")?
            .map(|code| parse(&code, ErrorCode::from_str_code, "error code"))
            .transpose()?,
        created_at: Timestamp::from_micros(row.try_get("created_at").map_err(classify)?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at").map_err(classify)?),
    };
    Ok(Loaded { value: op, seq: seq_of(row.try_get("seq").map_err(classify)?)? })
}

fn profile_from_row(row: &PgRow) -> Result<WalletProfile, StoreError> {
    Ok(WalletProfile {
        wallet: WalletId::from_uuid(row.try_get("wallet_id").map_err(classify)?),
        owner: UserId::from_uuid(row.try_get("owner_id").map_err(classify)?),
        asset: parse(row.try_get("asset").map_err(classify)?, Currency::from_code, "asset")?,
        deposit_address: row.try_get("deposit_address").map_err(classify)?,
        created_at: Timestamp::from_micros(row.try_get("created_at").map_err(classify)?),
    })
}

const PROFILE_COLUMNS: &str = "wallet_id, owner_id, asset, deposit_address, created_at";

impl PgStore {
    async fn one_op(&self, sql: String, binds: Vec<OpBind>) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        self.run(|pool| async move {
            let mut query = sqlx::query(&sql);
            for bind in binds {
                query = match bind {
                    OpBind::Uuid(value) => query.bind(value),
                    OpBind::Text(value) => query.bind(value),
                };
            }
            let row = query.fetch_optional(&pool).await.map_err(classify)?;
            row.as_ref().map(op_from_row).transpose()
        })
        .await
    }

    pub(super) async fn load_crypto_op_impl(&self, id: TransferId) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        self.one_op(format!("SELECT {OP_COLUMNS} FROM crypto_ops WHERE id = $1"), vec![OpBind::Uuid(id.as_uuid())])
            .await
    }

    pub(super) async fn deposit_by_tx_hash_impl(&self, tx_hash: &str) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        self.one_op(
            format!("SELECT {OP_COLUMNS} FROM crypto_ops WHERE kind = 'deposit' AND tx_hash = $1"),
            vec![OpBind::Text(tx_hash.to_owned())],
        )
        .await
    }

    pub(super) async fn crypto_op_by_idempotency_impl(
        &self,
        kind: CryptoOpKind,
        scope: Uuid,
        key: &str,
    ) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        self.one_op(
            format!(
                "SELECT {OP_COLUMNS} FROM crypto_ops WHERE kind = $1 AND idempotency_scope = $2 AND idempotency_key = $3"
            ),
            vec![OpBind::Text(kind.as_str().to_owned()), OpBind::Uuid(scope), OpBind::Text(key.to_owned())],
        )
        .await
    }

    pub(super) async fn unfinished_crypto_ops_impl(&self) -> Result<Vec<CryptoOp>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query(&format!(
                "SELECT {OP_COLUMNS} FROM crypto_ops WHERE status IN ('processing', 'pending') ORDER BY seq"
            ))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(|row| op_from_row(row).map(|loaded| loaded.value)).collect()
        })
        .await
    }

    pub(super) async fn wallet_postings_of_transfer_impl(
        &self,
        transfer: TransferId,
    ) -> Result<Vec<WalletPosting>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query(
                "SELECT transfer_id, wallet_id, asset, direction, amount FROM wallet_postings
                 WHERE transfer_id = $1 ORDER BY seq",
            )
            .bind(transfer.as_uuid())
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter()
                .map(|row| {
                    Ok(WalletPosting {
                        transfer: TransferId::from_uuid(row.try_get("transfer_id").map_err(classify)?),
                        wallet: WalletId::from_uuid(row.try_get("wallet_id").map_err(classify)?),
                        asset: parse(row.try_get("asset").map_err(classify)?, Currency::from_code, "asset")?,
                        direction: parse(row.try_get("direction").map_err(classify)?, Direction::parse, "direction")?,
                        amount: row.try_get("amount").map_err(classify)?,
                    })
                })
                .collect()
        })
        .await
    }

    pub(super) async fn wallet_balances_impl(&self) -> Result<Vec<(WalletId, Currency, Decimal)>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query("SELECT wallet_id, asset, balance FROM wallet_assets ORDER BY wallet_id, asset")
                .fetch_all(&pool)
                .await
                .map_err(classify)?;
            rows.iter()
                .map(|row| {
                    Ok((
                        WalletId::from_uuid(row.try_get("wallet_id").map_err(classify)?),
                        parse(row.try_get("asset").map_err(classify)?, Currency::from_code, "asset")?,
                        row.try_get("balance").map_err(classify)?,
                    ))
                })
                .collect()
        })
        .await
    }

    pub(super) async fn insert_wallet_profile_impl(&self, profile: &WalletProfile) -> Result<bool, StoreError> {
        let profile = profile.clone();
        self.run(|pool| async move {
            let inserted = sqlx::query(&format!(
                "INSERT INTO wallet_profiles ({PROFILE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (owner_id, asset) DO NOTHING"
            ))
            .bind(profile.wallet.as_uuid())
            .bind(profile.owner.as_uuid())
            .bind(profile.asset.code())
            .bind(profile.deposit_address.clone())
            .bind(profile.created_at.as_micros())
            .execute(&pool)
            .await
            .map_err(classify)?;
            Ok(inserted.rows_affected() == 1)
        })
        .await
    }

    async fn profiles(&self, filter: &'static str, bind: OpBind) -> Result<Vec<WalletProfile>, StoreError> {
        self.run(|pool| async move {
            let sql = format!(
                "SELECT {PROFILE_COLUMNS} FROM wallet_profiles WHERE {filter} ORDER BY created_at, wallet_id LIMIT {WALLETS_PER_OWNER_MAX}"
            );
            let query = sqlx::query(&sql);
            let query = match bind {
                OpBind::Uuid(value) => query.bind(value),
                OpBind::Text(value) => query.bind(value),
            };
            let rows = query.fetch_all(&pool).await.map_err(classify)?;
            rows.iter().map(profile_from_row).collect()
        })
        .await
    }

    pub(super) async fn wallet_profile_impl(&self, wallet: WalletId) -> Result<Option<WalletProfile>, StoreError> {
        Ok(self.profiles("wallet_id = $1", OpBind::Uuid(wallet.as_uuid())).await?.pop())
    }

    pub(super) async fn wallet_profile_by_address_impl(
        &self,
        address: &str,
    ) -> Result<Option<WalletProfile>, StoreError> {
        Ok(self.profiles("deposit_address = $1", OpBind::Text(address.to_owned())).await?.pop())
    }

    pub(super) async fn wallet_profiles_of_owner_impl(&self, owner: UserId) -> Result<Vec<WalletProfile>, StoreError> {
        self.profiles("owner_id = $1", OpBind::Uuid(owner.as_uuid())).await
    }
}

enum OpBind {
    Uuid(Uuid),
    Text(String),
}

//! `SqliteStore`'s wallet profiles, wallet postings and crypto operations (migration 0008).

use rust_decimal::Decimal;
use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, Transaction};
use tally_engine::{
    AccountId, CryptoOp, CryptoOpKind, CryptoOpStatus, Currency, Direction, ErrorCode, Idempotency, Timestamp,
    TransferId, UserId, WalletId,
};
use uuid::Uuid;

use super::{
    SqliteStore, amount_to_db, classify, decimal, id_to_db, integer, optional_decimal, optional_text, optional_uuid,
    parse, seq_of, seq_to_db, text, uuid,
};
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
pub(super) async fn commit(transaction: &mut Transaction<'_, Sqlite>, plan: &BatchPlan) -> Result<(), StoreError> {
    for (seq, posting, balance_after) in &plan.wallet_postings {
        sqlx::query(
            "INSERT INTO wallet_postings (seq, transfer_id, wallet_id, asset, direction, amount, balance_after, shard, booked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(seq_to_db(*seq)?)
        .bind(id_to_db(posting.transfer.as_uuid()))
        .bind(id_to_db(posting.wallet.as_uuid()))
        .bind(posting.asset.code())
        .bind(posting.direction.as_str())
        .bind(amount_to_db(posting.amount))
        .bind(amount_to_db(*balance_after))
        .bind(i64::from(plan.shard))
        .bind(plan.booked_at.as_micros())
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }
    for (seq, op) in &plan.crypto_ops {
        sqlx::query(&format!(
            "INSERT INTO crypto_ops ({OP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                 ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, step = excluded.step,
                 tx_hash = excluded.tx_hash, failure_reason = excluded.failure_reason,
                 updated_at = excluded.updated_at, seq = excluded.seq"
        ))
        .bind(id_to_db(op.id.as_uuid()))
        .bind(op.kind.as_str())
        .bind(op.status.as_str())
        .bind(i64::from(op.step))
        .bind(id_to_db(op.owner.as_uuid()))
        .bind(id_to_db(op.wallet.as_uuid()))
        .bind(op.asset.code())
        .bind(amount_to_db(op.asset_amount))
        .bind(op.fiat_account.map(|account| id_to_db(account.as_uuid())))
        .bind(op.fiat_currency.map(Currency::code))
        .bind(amount_to_db(op.fiat_amount))
        .bind(amount_to_db(op.fee))
        .bind(op.price.map(amount_to_db))
        .bind(op.address.clone())
        .bind(op.tx_hash.clone())
        .bind(op.idempotency.as_ref().map(|i| id_to_db(i.scope)))
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

fn op_from_row(row: &SqliteRow) -> Result<Loaded<CryptoOp>, StoreError> {
    let idempotency = match (
        optional_uuid(row, "idempotency_scope")?,
        optional_text(row, "idempotency_key")?,
        optional_text(row, "idempotency_fingerprint")?,
    ) {
        (Some(scope), Some(key), Some(fingerprint)) => Some(Idempotency { scope, key, fingerprint }),
        (None, None, None) => None,
        _ => return Err(corrupt("crypto operation with half an idempotency key")),
    };
    let op = CryptoOp {
        id: TransferId::from_uuid(uuid(row, "id")?),
        kind: parse(&text(row, "kind")?, CryptoOpKind::parse, "crypto operation kind")?,
        status: parse(&text(row, "status")?, CryptoOpStatus::parse, "crypto operation status")?,
        step: u32::try_from(integer(row, "step")?).map_err(|_| corrupt("crypto step out of range"))?,
        owner: UserId::from_uuid(uuid(row, "owner_id")?),
        wallet: WalletId::from_uuid(uuid(row, "wallet_id")?),
        asset: parse(&text(row, "asset")?, Currency::from_code, "asset")?,
        asset_amount: decimal(row, "asset_amount")?,
        fiat_account: optional_uuid(row, "fiat_account_id")?.map(AccountId::from_uuid),
        fiat_currency: optional_text(row, "fiat_currency")?
            .map(|code| parse(&code, Currency::from_code, "fiat currency"))
            .transpose()?,
        fiat_amount: decimal(row, "fiat_amount")?,
        fee: decimal(row, "fee")?,
        price: optional_decimal(row, "price")?,
        address: optional_text(row, "address")?,
        tx_hash: optional_text(row, "tx_hash")?,
        idempotency,
        failure_reason: optional_text(row, "failure_reason")?
            .map(|code| parse(&code, ErrorCode::from_str_code, "error code"))
            .transpose()?,
        created_at: Timestamp::from_micros(integer(row, "created_at")?),
        updated_at: Timestamp::from_micros(integer(row, "updated_at")?),
    };
    Ok(Loaded { value: op, seq: seq_of(integer(row, "seq")?)? })
}

fn profile_from_row(row: &SqliteRow) -> Result<WalletProfile, StoreError> {
    Ok(WalletProfile {
        wallet: WalletId::from_uuid(uuid(row, "wallet_id")?),
        owner: UserId::from_uuid(uuid(row, "owner_id")?),
        asset: parse(&text(row, "asset")?, Currency::from_code, "asset")?,
        deposit_address: text(row, "deposit_address")?,
        created_at: Timestamp::from_micros(integer(row, "created_at")?),
    })
}

const PROFILE_COLUMNS: &str = "wallet_id, owner_id, asset, deposit_address, created_at";

impl SqliteStore {
    async fn one_op(&self, sql: String, binds: Vec<OpBind>) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        self.run(|pool| async move {
            let mut query = sqlx::query(&sql);
            for bind in binds {
                query = match bind {
                    OpBind::Uuid(value) => query.bind(id_to_db(value)),
                    OpBind::Text(value) => query.bind(value),
                };
            }
            let row = query.fetch_optional(&pool).await.map_err(classify)?;
            row.as_ref().map(op_from_row).transpose()
        })
        .await
    }

    pub(super) async fn load_crypto_op_impl(&self, id: TransferId) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        self.one_op(format!("SELECT {OP_COLUMNS} FROM crypto_ops WHERE id = ?1"), vec![OpBind::Uuid(id.as_uuid())])
            .await
    }

    pub(super) async fn deposit_by_tx_hash_impl(&self, tx_hash: &str) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        self.one_op(
            format!("SELECT {OP_COLUMNS} FROM crypto_ops WHERE kind = 'deposit' AND tx_hash = ?1"),
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
                "SELECT {OP_COLUMNS} FROM crypto_ops WHERE kind = ?1 AND idempotency_scope = ?2 AND idempotency_key = ?3"
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
                 WHERE transfer_id = ?1 ORDER BY seq",
            )
            .bind(id_to_db(transfer.as_uuid()))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter()
                .map(|row| {
                    Ok(WalletPosting {
                        transfer: TransferId::from_uuid(uuid(row, "transfer_id")?),
                        wallet: WalletId::from_uuid(uuid(row, "wallet_id")?),
                        asset: parse(&text(row, "asset")?, Currency::from_code, "asset")?,
                        direction: parse(&text(row, "direction")?, Direction::parse, "direction")?,
                        amount: decimal(row, "amount")?,
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
                        WalletId::from_uuid(uuid(row, "wallet_id")?),
                        parse(&text(row, "asset")?, Currency::from_code, "asset")?,
                        decimal(row, "balance")?,
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
                "INSERT INTO wallet_profiles ({PROFILE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (owner_id, asset) DO NOTHING"
            ))
            .bind(id_to_db(profile.wallet.as_uuid()))
            .bind(id_to_db(profile.owner.as_uuid()))
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
                OpBind::Uuid(value) => query.bind(id_to_db(value)),
                OpBind::Text(value) => query.bind(value),
            };
            let rows = query.fetch_all(&pool).await.map_err(classify)?;
            rows.iter().map(profile_from_row).collect()
        })
        .await
    }

    pub(super) async fn wallet_profile_impl(&self, wallet: WalletId) -> Result<Option<WalletProfile>, StoreError> {
        Ok(self.profiles("wallet_id = ?1", OpBind::Uuid(wallet.as_uuid())).await?.pop())
    }

    pub(super) async fn wallet_profile_by_address_impl(
        &self,
        address: &str,
    ) -> Result<Option<WalletProfile>, StoreError> {
        Ok(self.profiles("deposit_address = ?1", OpBind::Text(address.to_owned())).await?.pop())
    }

    pub(super) async fn wallet_profiles_of_owner_impl(&self, owner: UserId) -> Result<Vec<WalletProfile>, StoreError> {
        self.profiles("owner_id = ?1", OpBind::Uuid(owner.as_uuid())).await
    }
}

enum OpBind {
    Uuid(Uuid),
    Text(String),
}

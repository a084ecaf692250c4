//! `CryptoReads` on SQLite, on the identity store's pool: `crypto_postgres.rs` in SQLite's
//! dialect (ids and amounts as text).

use async_trait::async_trait;
use tally_engine::{TransferId, UserId, WalletId};

use super::crypto::{
    CryptoHistory, CryptoReads, WalletPostingPosition, WalletPostingRow, op_page_sql_sqlite, operation_columns,
    position, position_columns, wallet_posting_page_sql_sqlite,
};
use super::listing::Position;
use crate::sqlite::classify;
use crate::sqlite::decimal_from_db;
use crate::store::StoreError;
use crate::users::sqlite::{SqliteUserStore, id_to_db, uuid_from_db};

type PostingRow = (i64, i64, i64, String, String, String, String, String, Option<String>, Option<i64>);

#[async_trait]
impl CryptoReads for SqliteUserStore {
    async fn crypto_op_page(
        &self,
        owner: UserId,
        history: CryptoHistory,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<(TransferId, Position)>, StoreError> {
        self.run(|pool| async move {
            let sql = op_page_sql_sqlite(history, after.is_some());
            let mut query =
                sqlx::query_as::<_, (String, i64)>(&sql).bind(id_to_db(owner.as_uuid())).bind(i64::from(limit));
            if let Some(after) = after {
                query = query.bind(after.created_at).bind(id_to_db(after.id));
            }
            let rows = query.fetch_all(&pool).await.map_err(classify)?;
            rows.into_iter()
                .map(|(id, created_at)| {
                    let id = uuid_from_db(&id, "crypto_ops.id")?;
                    Ok((TransferId::from_uuid(id), Position { created_at, id }))
                })
                .collect()
        })
        .await
    }

    async fn wallet_posting_page(
        &self,
        wallet: WalletId,
        before: Option<WalletPostingPosition>,
        limit: u32,
    ) -> Result<Vec<WalletPostingRow>, StoreError> {
        let before = before.map(position_columns);
        self.run(|pool| async move {
            let sql = wallet_posting_page_sql_sqlite(before.is_some());
            let mut query =
                sqlx::query_as::<_, PostingRow>(&sql).bind(id_to_db(wallet.as_uuid())).bind(i64::from(limit));
            if let Some((booked_at, shard, seq)) = before {
                query = query.bind(booked_at).bind(shard).bind(seq);
            }
            let rows = query.fetch_all(&pool).await.map_err(classify)?;
            rows.into_iter()
                .map(|(booked_at, shard, seq, operation, direction, amount, asset, balance_after, kind, created_at)| {
                    let (kind, created_at) = operation_columns(seq, kind, created_at)?;
                    Ok(WalletPostingRow {
                        position: position(booked_at, shard, seq)?,
                        operation: TransferId::from_uuid(uuid_from_db(&operation, "wallet_postings.transfer_id")?),
                        kind,
                        credit: direction == "credit",
                        amount: decimal_from_db(&amount, "wallet_postings.amount")?,
                        asset,
                        balance_after: decimal_from_db(&balance_after, "wallet_postings.balance_after")?,
                        created_at,
                    })
                })
                .collect()
        })
        .await
    }
}

//! `CryptoReads` on Postgres, on the identity store's pool.

use async_trait::async_trait;
use rust_decimal::Decimal;
use tally_engine::{TransferId, UserId, WalletId};
use uuid::Uuid;

use super::crypto::{
    CryptoHistory, CryptoReads, WalletPostingPosition, WalletPostingRow, op_page_sql_postgres, operation_columns,
    position, position_columns, wallet_posting_page_sql_postgres,
};
use super::listing::Position;
use crate::postgres::classify;
use crate::store::StoreError;
use crate::users::postgres::PgUserStore;

type PostingRow = (i64, i16, i64, Uuid, String, Decimal, String, Decimal, Option<String>, Option<i64>);

#[async_trait]
impl CryptoReads for PgUserStore {
    async fn crypto_op_page(
        &self,
        owner: UserId,
        history: CryptoHistory,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<(TransferId, Position)>, StoreError> {
        self.run(|pool| async move {
            let sql = op_page_sql_postgres(history, after.is_some());
            let mut query = sqlx::query_as::<_, (Uuid, i64)>(&sql).bind(owner.as_uuid()).bind(i64::from(limit));
            if let Some(after) = after {
                query = query.bind(after.created_at).bind(after.id);
            }
            let rows = query.fetch_all(&pool).await.map_err(classify)?;
            Ok(rows
                .into_iter()
                .map(|(id, created_at)| (TransferId::from_uuid(id), Position { created_at, id }))
                .collect())
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
            let sql = wallet_posting_page_sql_postgres(before.is_some());
            let mut query = sqlx::query_as::<_, PostingRow>(&sql).bind(wallet.as_uuid()).bind(i64::from(limit));
            if let Some((booked_at, shard, seq)) = before {
                query = query.bind(booked_at).bind(shard).bind(seq);
            }
            let rows = query.fetch_all(&pool).await.map_err(classify)?;
            rows.into_iter()
                .map(|(booked_at, shard, seq, operation, direction, amount, asset, balance_after, kind, created_at)| {
                    let (kind, created_at) = operation_columns(seq, kind, created_at)?;
                    Ok(WalletPostingRow {
                        position: position(booked_at, i64::from(shard), seq)?,
                        operation: TransferId::from_uuid(operation),
                        kind,
                        credit: direction == "credit",
                        amount,
                        asset,
                        balance_after,
                        created_at,
                    })
                })
                .collect()
        })
        .await
    }
}

//! `CryptoReads` for both identity stores, written once (`crate::sql`), on their pools.

use async_trait::async_trait;
use tally_engine::{TransferId, UserId, WalletId};
use uuid::Uuid;

use super::crypto::{
    CryptoHistory, CryptoReads, WalletPostingPosition, WalletPostingRow, op_page_sql, operation_columns, position,
    position_columns, wallet_posting_page_sql,
};
use super::listing::Position;
use crate::sql::{Id, IdentitySql, SqlRow, run_on_backend};
use crate::store::StoreError;

#[async_trait]
impl<S: IdentitySql> CryptoReads for S {
    async fn crypto_op_page(
        &self,
        owner: UserId,
        history: CryptoHistory,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<(TransferId, Position)>, StoreError> {
        run_on_backend!(self, |pool| {
            let sql = op_page_sql(history, after.is_some());
            let mut query = sqlx::query(&sql).bind(Id::from(owner)).bind(i64::from(limit));
            if let Some(after) = after {
                query = query.bind(after.created_at).bind(Id(after.id));
            }
            let rows = query.fetch_all(&pool).await.map_err(classify)?;
            rows.iter()
                .map(|row| {
                    let id: Uuid = row.decode("id")?;
                    Ok((TransferId::from_uuid(id), Position { created_at: row.decode("created_at")?, id }))
                })
                .collect()
        })
    }

    async fn wallet_posting_page(
        &self,
        wallet: WalletId,
        before: Option<WalletPostingPosition>,
        limit: u32,
    ) -> Result<Vec<WalletPostingRow>, StoreError> {
        let before = before.map(position_columns);
        run_on_backend!(self, |pool| {
            let sql = wallet_posting_page_sql(before.is_some());
            let mut query = sqlx::query(&sql).bind(Id(wallet.as_uuid())).bind(i64::from(limit));
            if let Some((booked_at, shard, seq)) = before {
                query = query.bind(booked_at).bind(shard).bind(seq);
            }
            let rows = query.fetch_all(&pool).await.map_err(classify)?;
            rows.iter()
                .map(|row| {
                    let seq: i64 = row.decode("seq")?;
                    let (kind, created_at) = operation_columns(seq, row.decode("kind")?, row.decode("created_at")?)?;
                    let direction: String = row.decode("direction")?;
                    Ok(WalletPostingRow {
                        position: position(row.decode("booked_at")?, i64::from(row.decode::<i16>("shard")?), seq)?,
                        operation: TransferId::from_uuid(row.decode("transfer_id")?),
                        kind,
                        credit: direction == "credit",
                        amount: row.decode("amount")?,
                        asset: row.decode("asset")?,
                        balance_after: row.decode("balance_after")?,
                        created_at,
                    })
                })
                .collect()
        })
    }
}

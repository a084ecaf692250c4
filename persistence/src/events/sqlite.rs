//! Events and the journal's hash chain on SQLite: written inside a journal batch's `BEGIN
//! IMMEDIATE` transaction (`write_events`, `link_batch`, called by `sqlite::write_plan`), and
//! read on the identity store's pool (`EventStore for SqliteUserStore`). Ids are hyphenated
//! text and amounts exact decimal text, as in the ledger's other SQLite tables.

use async_trait::async_trait;
use rust_decimal::Decimal;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, Sqlite, Transaction};
use tally_engine::Timestamp;
use uuid::Uuid;

use super::chain::{self, BatchLink, ChainEvent, ChainHead, ChainPosting, ChainReport};
use super::{Backlog, EventStore, EventType, FeedPosition, StoredEvent, merge_shards};
use crate::batch::BatchPlan;
use crate::sqlite::classify;
use crate::store::StoreError;
use crate::store::corrupt;
use crate::users::sqlite::SqliteUserStore;

fn to_db(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| corrupt(format!("{value} beyond INTEGER")))
}

fn from_db(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("negative sequence number {value}")))
}

fn shard_from_db(shard: i64) -> Result<u16, StoreError> {
    u16::try_from(shard).map_err(|_| corrupt(format!("shard {shard} out of range")))
}

fn uuid_of(row: &SqliteRow, column: &str) -> Result<Uuid, StoreError> {
    let text: String = row.try_get(column).map_err(classify)?;
    Uuid::parse_str(&text).map_err(|_| corrupt(format!("{column} {text} is not a uuid")))
}

fn decimal_of(row: &SqliteRow, column: &str) -> Result<Decimal, StoreError> {
    let text: String = row.try_get(column).map_err(classify)?;
    crate::sqlite::decimal_from_db(&text, column)
}

pub(crate) async fn write_events(
    transaction: &mut Transaction<'_, Sqlite>,
    plan: &BatchPlan,
) -> Result<(), StoreError> {
    for event in &plan.events {
        sqlx::query(
            "INSERT INTO events (shard, seq, type, object_id, occurred_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(i64::from(plan.shard))
        .bind(to_db(event.seq)?)
        .bind(event.kind.as_str())
        .bind(event.object.hyphenated().to_string())
        .bind(plan.booked_at.as_micros())
        .bind(event.data.as_deref())
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

pub(crate) async fn link_batch(transaction: &mut Transaction<'_, Sqlite>, plan: &BatchPlan) -> Result<(), StoreError> {
    if plan.records.is_empty() {
        return Ok(());
    }
    let prev: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT hash FROM journal_batches WHERE shard = ?1 ORDER BY last_seq DESC LIMIT 1")
            .bind(i64::from(plan.shard))
            .fetch_optional(&mut **transaction)
            .await
            .map_err(classify)?;
    let hash = chain::link(prev.as_deref().unwrap_or(&chain::GENESIS), &chain::batch_digest(plan));
    sqlx::query("INSERT INTO journal_batches (shard, last_seq, first_seq, hash) VALUES (?1, ?2, ?3, ?4)")
        .bind(i64::from(plan.shard))
        .bind(to_db(plan.last_seq)?)
        .bind(to_db(plan.first_seq)?)
        .bind(hash.as_slice())
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    Ok(())
}

fn event_of(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    let kind: String = row.try_get("type").map_err(classify)?;
    Ok(StoredEvent {
        shard: shard_from_db(row.try_get("shard").map_err(classify)?)?,
        seq: from_db(row.try_get("seq").map_err(classify)?)?,
        kind: EventType::parse(&kind).ok_or_else(|| corrupt(format!("unknown event type {kind}")))?,
        object: uuid_of(row, "object_id")?,
        occurred_at: Timestamp::from_micros(row.try_get("occurred_at").map_err(classify)?),
        data: row.try_get("data").map_err(classify)?,
    })
}

async fn shards(pool: &SqlitePool) -> Result<Vec<u16>, StoreError> {
    let rows: Vec<i64> = sqlx::query_scalar("SELECT shard FROM journal_shards ORDER BY shard")
        .fetch_all(pool)
        .await
        .map_err(classify)?;
    rows.into_iter().map(shard_from_db).collect()
}

#[async_trait]
impl EventStore for SqliteUserStore {
    async fn events_after(
        &self,
        position: &FeedPosition,
        types: Option<&[EventType]>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let position = position.clone();
        let types: Option<Vec<&'static str>> = types.map(|types| types.iter().map(|kind| kind.as_str()).collect());
        self.run(move |pool| async move {
            let shard_list = shards(&pool).await?;
            merge_shards(shard_list, &position, limit, |shard, after| {
                let pool = pool.clone();
                let types = types.clone();
                async move {
                    // The type filter is a fixed list of known names, bound one by one.
                    let filter = match &types {
                        Some(types) if !types.is_empty() => {
                            format!(
                                " AND type IN ({})",
                                (0..types.len()).map(|i| format!("?{}", i + 4)).collect::<Vec<_>>().join(", ")
                            )
                        }
                        _ => String::new(),
                    };
                    let sql = format!(
                        "SELECT shard, seq, type, object_id, occurred_at, data FROM events
                         WHERE shard = ?1 AND seq > ?2{filter} ORDER BY seq LIMIT ?3"
                    );
                    let mut query = sqlx::query(&sql).bind(i64::from(shard)).bind(to_db(after)?).bind(i64::from(limit));
                    for kind in types.iter().flatten() {
                        query = query.bind(*kind);
                    }
                    let rows = query.fetch_all(&pool).await.map_err(classify)?;
                    rows.iter().map(event_of).collect()
                }
            })
            .await
        })
        .await
    }

    async fn event_shards(&self) -> Result<Vec<u16>, StoreError> {
        self.run(|pool| async move { shards(&pool).await }).await
    }

    async fn backlog(
        &self,
        position: &FeedPosition,
        types: Option<&[EventType]>,
        cap: u32,
    ) -> Result<Backlog, StoreError> {
        let position = position.clone();
        let types: Option<Vec<&'static str>> = types.map(|types| types.iter().map(|kind| kind.as_str()).collect());
        self.run(move |pool| async move {
            let mut backlog = Backlog::default();
            // The type filter is a fixed list of known names, bound one by one.
            let filter = match &types {
                Some(types) if !types.is_empty() => format!(
                    " AND type IN ({})",
                    (0..types.len()).map(|i| format!("?{}", i + 4)).collect::<Vec<_>>().join(", ")
                ),
                _ => String::new(),
            };
            let sql = format!(
                "SELECT count(*), min(occurred_at) FROM (
                     SELECT occurred_at FROM events WHERE shard = ?1 AND seq > ?2{filter} ORDER BY seq LIMIT ?3)"
            );
            for shard in shards(&pool).await? {
                let mut query = sqlx::query_as::<_, (i64, Option<i64>)>(&sql)
                    .bind(i64::from(shard))
                    .bind(to_db(position.after(shard))?)
                    .bind(i64::from(cap));
                for kind in types.iter().flatten() {
                    query = query.bind(*kind);
                }
                let (events, oldest) = query.fetch_one(&pool).await.map_err(classify)?;
                backlog.add(u64::try_from(events).unwrap_or(0), oldest.map(Timestamp::from_micros));
            }
            Ok(backlog)
        })
        .await
    }

    async fn verify_ledger_chain(&self) -> Result<ChainReport, StoreError> {
        self.run(|pool| async move {
            let committed: Vec<(i64, i64)> =
                sqlx::query_as("SELECT shard, committed_seq FROM journal_shards ORDER BY shard")
                    .fetch_all(&pool)
                    .await
                    .map_err(classify)?;
            let mut batches = 0;
            for (shard, committed_seq) in committed {
                let links: Vec<BatchLink> =
                    sqlx::query("SELECT last_seq, first_seq, hash FROM journal_batches WHERE shard = ?1 ORDER BY last_seq")
                        .bind(shard)
                        .fetch_all(&pool)
                        .await
                        .map_err(classify)?
                        .iter()
                        .map(|row| {
                            Ok(BatchLink {
                                shard: shard_from_db(shard)?,
                                first_seq: from_db(row.try_get("first_seq").map_err(classify)?)?,
                                last_seq: from_db(row.try_get("last_seq").map_err(classify)?)?,
                                hash: row.try_get("hash").map_err(classify)?,
                            })
                        })
                        .collect::<Result<_, StoreError>>()?;
                let from = links.first().map_or(i64::MAX, |link| link.first_seq as i64);
                let postings: Vec<ChainPosting> = sqlx::query(
                    "SELECT seq, account_id, version, booked_at, transfer_id, currency, direction, amount, balance_after
                     FROM postings WHERE shard = ?1 AND seq >= ?2 ORDER BY seq",
                )
                .bind(shard)
                .bind(from)
                .fetch_all(&pool)
                .await
                .map_err(classify)?
                .iter()
                .map(|row| {
                    Ok(ChainPosting {
                        seq: from_db(row.try_get("seq").map_err(classify)?)?,
                        account: uuid_of(row, "account_id")?,
                        version: from_db(row.try_get("version").map_err(classify)?)?,
                        booked_at: row.try_get("booked_at").map_err(classify)?,
                        transfer: uuid_of(row, "transfer_id")?,
                        currency: row.try_get("currency").map_err(classify)?,
                        direction: row.try_get("direction").map_err(classify)?,
                        amount: decimal_of(row, "amount")?,
                        balance_after: decimal_of(row, "balance_after")?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
                let events: Vec<ChainEvent> = sqlx::query(
                    "SELECT seq, type, object_id, occurred_at, data FROM events WHERE shard = ?1 AND seq >= ?2 ORDER BY seq",
                )
                .bind(shard)
                .bind(from)
                .fetch_all(&pool)
                .await
                .map_err(classify)?
                .iter()
                .map(|row| {
                    Ok(ChainEvent {
                        seq: from_db(row.try_get("seq").map_err(classify)?)?,
                        kind: row.try_get("type").map_err(classify)?,
                        object: uuid_of(row, "object_id")?,
                        occurred_at: row.try_get("occurred_at").map_err(classify)?,
                        data: row.try_get("data").map_err(classify)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
                match chain::verify_shard(shard_from_db(shard)?, &links, &postings, &events, from_db(committed_seq)?) {
                    Ok(checked) => batches += checked,
                    Err(report) => return Ok(report),
                }
            }
            Ok(ChainReport::Intact { batches })
        })
        .await
    }

    async fn ledger_heads(&self) -> Result<Vec<ChainHead>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query(
                "SELECT shard, last_seq, hash FROM journal_batches AS b
                 WHERE last_seq = (SELECT max(last_seq) FROM journal_batches WHERE shard = b.shard) ORDER BY shard",
            )
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter()
                .map(|row| {
                    Ok(ChainHead {
                        shard: shard_from_db(row.try_get("shard").map_err(classify)?)?,
                        last_seq: from_db(row.try_get("last_seq").map_err(classify)?)?,
                        hash: row.try_get("hash").map_err(classify)?,
                    })
                })
                .collect()
        })
        .await
    }
}

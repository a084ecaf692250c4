//! Events and the journal's hash chain on Postgres: written inside a journal batch's
//! transaction (`write_events`, called by `postgres::write_plan`, whose fence statement also
//! writes the batch's link of the chain: `postgres::fence_and_link`), and read on the identity
//! store's pool (`EventStore for PgUserStore`).

use async_trait::async_trait;
use rust_decimal::Decimal;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tally_engine::Timestamp;
use uuid::Uuid;

use super::chain::{self, BatchLink, ChainEvent, ChainHead, ChainPosting, ChainReport};
use super::{Backlog, EventStore, EventType, FeedPosition, StoredEvent, merge_shards};
use crate::batch::BatchPlan;
use crate::postgres::classify;
use crate::store::StoreError;
use crate::store::corrupt;
use crate::users::postgres::PgUserStore;

fn to_db(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| corrupt(format!("{value} beyond BIGINT")))
}

fn from_db(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("negative sequence number {value}")))
}

fn shard_to_db(shard: u16) -> Result<i16, StoreError> {
    i16::try_from(shard).map_err(|_| corrupt("shard beyond SMALLINT"))
}

fn shard_from_db(shard: i16) -> Result<u16, StoreError> {
    u16::try_from(shard).map_err(|_| corrupt(format!("negative shard {shard}")))
}

/// The batch's events: one row of `event_batches` (migration 0061), each column an array in
/// seq order, before the pipeline turn like the other new rows. One row per event was a quarter
/// of the WAL written per transfer and one of its ~8 index entries; the batch's row is a fifth
/// of those bytes and one index entry per batch.
pub(crate) async fn write_events(
    transaction: &mut Transaction<'_, Postgres>,
    plan: &BatchPlan,
) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (plan.events.first(), plan.events.last()) else {
        return Ok(());
    };
    // The feed reads a row's arrays in order as seq order (`feed_rows!`).
    debug_assert!(plan.events.windows(2).all(|pair| pair[0].seq < pair[1].seq), "events out of seq order");
    let seqs = plan.events.iter().map(|event| to_db(event.seq)).collect::<Result<Vec<_>, _>>()?;
    sqlx::query(
        "INSERT INTO event_batches (shard, last_seq, first_seq, occurred_at, seqs, types, objects, data)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(shard_to_db(plan.shard)?)
    .bind(to_db(last.seq)?)
    .bind(to_db(first.seq)?)
    .bind(plan.booked_at.as_micros())
    .bind(seqs)
    .bind(plan.events.iter().map(|event| event.kind.as_str()).collect::<Vec<_>>())
    .bind(plan.events.iter().map(|event| event.object).collect::<Vec<_>>())
    .bind(plan.events.iter().map(|event| event.data.as_deref()).collect::<Vec<_>>())
    .execute(&mut **transaction)
    .await
    .map_err(classify)?;
    Ok(())
}

/// A shard's events after `$2` (exclusive) as rows of (shard, seq, type, object_id,
/// occurred_at, data), in seq order: the batches' rows by their key, each one's arrays in
/// order. A batch's seqs lie between its neighbours', so that order is seq order, and Postgres
/// reads only as many batches as the caller's `LIMIT` needs (an incremental sort within each
/// batch, not a sort of the whole feed). `$3` names the event types wanted, NULL for all.
macro_rules! feed_rows {
    () => {
        "SELECT b.shard, e.seq, e.type, e.object_id, b.occurred_at, e.data
     FROM event_batches AS b
     CROSS JOIN LATERAL unnest(b.seqs, b.types, b.objects, b.data) WITH ORDINALITY AS e(seq, type, object_id, data, nth)
     WHERE b.shard = $1 AND b.last_seq > $2 AND e.seq > $2 AND ($3::text[] IS NULL OR e.type = ANY($3))
     ORDER BY b.last_seq, e.nth"
    };
}

fn event_of(row: &PgRow) -> Result<StoredEvent, StoreError> {
    let kind: String = row.try_get("type").map_err(classify)?;
    Ok(StoredEvent {
        shard: shard_from_db(row.try_get("shard").map_err(classify)?)?,
        seq: from_db(row.try_get("seq").map_err(classify)?)?,
        kind: EventType::parse(&kind).ok_or_else(|| corrupt(format!("unknown event type {kind}")))?,
        object: row.try_get("object_id").map_err(classify)?,
        occurred_at: Timestamp::from_micros(row.try_get("occurred_at").map_err(classify)?),
        data: row.try_get("data").map_err(classify)?,
    })
}

async fn shards(pool: &PgPool) -> Result<Vec<u16>, StoreError> {
    let rows: Vec<i16> = sqlx::query_scalar("SELECT shard FROM journal_shards ORDER BY shard")
        .fetch_all(pool)
        .await
        .map_err(classify)?;
    rows.into_iter().map(shard_from_db).collect()
}

#[async_trait]
impl EventStore for PgUserStore {
    async fn events_after(
        &self,
        position: &FeedPosition,
        types: Option<&[EventType]>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let position = position.clone();
        let types: Option<Vec<String>> = types.map(|types| types.iter().map(|kind| kind.as_str().to_owned()).collect());
        self.run(move |pool| async move {
            let shard_list = shards(&pool).await?;
            merge_shards(shard_list, &position, limit, |shard, after| {
                let pool = pool.clone();
                let types = types.clone();
                async move {
                    let rows = sqlx::query(concat!(feed_rows!(), " LIMIT $4"))
                        .bind(shard_to_db(shard)?)
                        .bind(to_db(after)?)
                        .bind(types)
                        .bind(i64::from(limit))
                        .fetch_all(&pool)
                        .await
                        .map_err(classify)?;
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
        let types: Option<Vec<String>> = types.map(|types| types.iter().map(|kind| kind.as_str().to_owned()).collect());
        self.run(move |pool| async move {
            let mut backlog = Backlog::default();
            for shard in shards(&pool).await? {
                // The first `cap` events after the position by the (shard, seq) key: the oldest
                // is among them, and the count stops at the cap.
                let (events, oldest): (i64, Option<i64>) = sqlx::query_as(concat!(
                    "SELECT count(*), min(occurred_at) FROM (",
                    feed_rows!(),
                    " LIMIT $4) AS behind"
                ))
                .bind(shard_to_db(shard)?)
                .bind(to_db(position.after(shard))?)
                .bind(&types)
                .bind(i64::from(cap))
                .fetch_one(&pool)
                .await
                .map_err(classify)?;
                backlog.add(u64::try_from(events).unwrap_or(0), oldest.map(Timestamp::from_micros));
            }
            Ok(backlog)
        })
        .await
    }

    async fn verify_ledger_chain(&self) -> Result<ChainReport, StoreError> {
        self.run(|pool| async move {
            let committed: Vec<(i16, i64)> =
                sqlx::query_as("SELECT shard, committed_seq FROM journal_shards ORDER BY shard")
                    .fetch_all(&pool)
                    .await
                    .map_err(classify)?;
            let mut batches = 0;
            for (shard, committed_seq) in committed {
                let links: Vec<BatchLink> = sqlx::query(
                    "SELECT last_seq, first_seq, hash FROM journal_batches WHERE shard = $1 ORDER BY last_seq",
                )
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
                     FROM postings WHERE shard = $1 AND seq >= $2 ORDER BY seq",
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
                        account: row.try_get::<Uuid, _>("account_id").map_err(classify)?,
                        version: from_db(row.try_get("version").map_err(classify)?)?,
                        booked_at: row.try_get("booked_at").map_err(classify)?,
                        transfer: row.try_get::<Uuid, _>("transfer_id").map_err(classify)?,
                        currency: row.try_get("currency").map_err(classify)?,
                        direction: row.try_get("direction").map_err(classify)?,
                        amount: row.try_get::<Decimal, _>("amount").map_err(classify)?,
                        balance_after: row.try_get::<Decimal, _>("balance_after").map_err(classify)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
                // Every event from the first link's batch on: after `from - 1`, of every type.
                let events: Vec<ChainEvent> = sqlx::query(feed_rows!())
                    .bind(shard)
                    .bind(from.saturating_sub(1))
                    .bind(None::<Vec<String>>)
                    .fetch_all(&pool)
                    .await
                    .map_err(classify)?
                    .iter()
                    .map(|row| {
                        Ok(ChainEvent {
                            seq: from_db(row.try_get("seq").map_err(classify)?)?,
                            kind: row.try_get("type").map_err(classify)?,
                            object: row.try_get("object_id").map_err(classify)?,
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
                "SELECT DISTINCT ON (shard) shard, last_seq, hash FROM journal_batches ORDER BY shard, last_seq DESC",
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

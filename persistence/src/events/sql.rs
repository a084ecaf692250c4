//! Events and the journal's hash chain on both backends. They are written inside a journal
//! batch's transaction by each backend's own code, because the two store them differently
//! (`postgres`: one `event_batches` row of arrays per batch; `sqlite`: one `events` row per
//! event), and read on the identity store's pool by `EventStore`, written once for both
//! identity stores (`crate::sql`), with what differs in the reads on `EventsDialect`.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::chain::{self, BatchLink, ChainEvent, ChainHead, ChainPosting, ChainReport};
use super::{Backlog, EventStore, EventType, FeedPosition, StoredEvent, merge_shards};
use crate::sql::{Column, IdentitySql, SqlRow, StoredUuid, run_on_backend};
use crate::store::StoreError;
use crate::store::corrupt;

fn from_db(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("negative sequence number {value}")))
}

/// A shard number as stored: `SMALLINT` on Postgres, `INTEGER` on SQLite.
struct Shard(u16);

impl Column for Shard {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, StoreError> {
        let shard: i16 = row.try_get(name).map_err(crate::postgres::classify)?;
        u16::try_from(shard).map(Shard).map_err(|_| corrupt(format!("negative shard {shard}")))
    }

    fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, StoreError> {
        let shard: i64 = row.try_get(name).map_err(crate::sqlite::classify)?;
        u16::try_from(shard).map(Shard).map_err(|_| corrupt(format!("shard {shard} out of range")))
    }
}

/// What the event reads do differently on the two backends: the feed (an `event_batches` row
/// of arrays per batch on Postgres, an `events` row per event on SQLite) and one query
/// Postgres spells with `DISTINCT ON`, which SQLite lacks.
trait EventsDialect {
    type Pool;
    /// A shard as a parameter, as its column stores it.
    type ShardParam;

    /// The newest link of each shard, as rows of (shard, last_seq, hash) in shard order.
    const LEDGER_HEADS: &'static str;

    /// The seq of a shard's newest event (`$1`: the shard), one row, `NULL` if it has none.
    const EVENT_HEAD: &'static str;

    fn shard_param(shard: u16) -> Result<Self::ShardParam, StoreError>;

    /// Up to `limit` of a shard's events after `after`, in seq order, of the `types` given
    /// (all if `None`).
    async fn events_page(
        pool: &Self::Pool,
        shard: u16,
        after: u64,
        types: Option<&[&'static str]>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// How many of the first `cap` events of a shard after `after` (of the `types` given) there
    /// are, and the oldest one's `occurred_at`.
    async fn behind(
        pool: &Self::Pool,
        shard: u16,
        after: u64,
        types: Option<&[&'static str]>,
        cap: u32,
    ) -> Result<(i64, Option<i64>), StoreError>;

    /// A connection, on which verification reads in one transaction.
    type Connection;

    /// Run first in verification's read transaction, so that every read after it sees one
    /// snapshot (`None` where the transaction's first read already fixes one: SQLite in WAL
    /// mode keeps the snapshot of a read transaction's first read until it ends).
    const SNAPSHOT: Option<&'static str>;

    /// Every shard any chain table names, one `shard` column, in shard order.
    const CHAIN_SHARDS: &'static str;

    /// Every event of a shard, as the chain's digest sees them, each with why its stored
    /// object id is not the form the chain hashes (if it is not).
    async fn chain_events(
        connection: &mut Self::Connection,
        shard: u16,
    ) -> Result<Vec<(ChainEvent, Option<String>)>, StoreError>;
}

fn event_of(row: &impl SqlRow) -> Result<StoredEvent, StoreError> {
    let kind: String = row.decode("type")?;
    Ok(StoredEvent {
        shard: row.decode::<Shard>("shard")?.0,
        seq: from_db(row.decode("seq")?)?,
        kind: EventType::parse(&kind).ok_or_else(|| corrupt(format!("unknown event type {kind}")))?,
        object: row.decode::<Uuid>("object_id")?,
        occurred_at: row.decode("occurred_at")?,
        data: row.decode("data")?,
    })
}

fn chain_event_of(row: &impl SqlRow) -> Result<(ChainEvent, Option<String>), StoreError> {
    let seq = from_db(row.decode("seq")?)?;
    let object: StoredUuid = row.decode("object_id")?;
    let refusal = object.refusal(&format!("the object_id of event seq {seq}"));
    let event = ChainEvent {
        seq,
        kind: row.decode("type")?,
        object: object.id,
        occurred_at: row.decode("occurred_at")?,
        data: row.decode("data")?,
    };
    Ok((event, refusal))
}

const SHARDS: &str = "SELECT shard FROM journal_shards ORDER BY shard";

fn shards_of(rows: &[impl SqlRow]) -> Result<Vec<u16>, StoreError> {
    rows.iter().map(|row| Ok(row.decode::<Shard>("shard")?.0)).collect()
}

#[async_trait]
impl<S: IdentitySql> EventStore for S {
    async fn events_after(
        &self,
        position: &FeedPosition,
        types: Option<&[EventType]>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let position = position.clone();
        let types: Option<Vec<&'static str>> = types.map(|types| types.iter().map(|kind| kind.as_str()).collect());
        run_on_backend!(self, |pool| {
            let shard_list = shards_of(&sqlx::query(SHARDS).fetch_all(&pool).await.map_err(classify)?)?;
            let (pool, types) = (&pool, types.as_deref());
            merge_shards(shard_list, &position, limit, |shard, after| async move {
                dialect::events_page(pool, shard, after, types, limit).await
            })
            .await
        })
    }

    async fn event_shards(&self) -> Result<Vec<u16>, StoreError> {
        run_on_backend!(self, |pool| shards_of(&sqlx::query(SHARDS).fetch_all(&pool).await.map_err(classify)?))
    }

    async fn event_heads(&self) -> Result<Vec<(u16, u64)>, StoreError> {
        run_on_backend!(self, |pool| {
            let mut heads = Vec::new();
            for shard in shards_of(&sqlx::query(SHARDS).fetch_all(&pool).await.map_err(classify)?)? {
                let head: Option<i64> = sqlx::query_scalar(dialect::EVENT_HEAD)
                    .bind(dialect::shard_param(shard)?)
                    .fetch_one(&pool)
                    .await
                    .map_err(classify)?;
                if let Some(head) = head {
                    heads.push((shard, from_db(head)?));
                }
            }
            Ok(heads)
        })
    }

    async fn backlog(
        &self,
        position: &FeedPosition,
        types: Option<&[EventType]>,
        cap: u32,
    ) -> Result<Backlog, StoreError> {
        let position = position.clone();
        let types: Option<Vec<&'static str>> = types.map(|types| types.iter().map(|kind| kind.as_str()).collect());
        run_on_backend!(self, |pool| {
            let mut backlog = Backlog::default();
            for shard in shards_of(&sqlx::query(SHARDS).fetch_all(&pool).await.map_err(classify)?)? {
                let (events, oldest) =
                    dialect::behind(&pool, shard, position.after(shard), types.as_deref(), cap).await?;
                backlog.add(u64::try_from(events).unwrap_or(0), oldest.map(tally_engine::Timestamp::from_micros));
            }
            Ok(backlog)
        })
    }

    async fn verify_ledger_chain(&self) -> Result<ChainReport, StoreError> {
        run_on_backend!(self, |pool| {
            // One read transaction for the whole walk: on a live store, a committed seq read
            // in one statement and links or postings in later ones disagreed whenever a batch
            // committed between them, and verification reported tampering that was not there.
            let mut transaction = pool.begin().await.map_err(classify)?;
            if let Some(snapshot) = dialect::SNAPSHOT {
                sqlx::query(snapshot).execute(&mut *transaction).await.map_err(classify)?;
            }
            // Every shard any table names: a shard whose journal_shards row or links were
            // deleted still has its postings and events to answer for.
            let shard_list =
                shards_of(&sqlx::query(dialect::CHAIN_SHARDS).fetch_all(&mut *transaction).await.map_err(classify)?)?;
            let mut batches = 0;
            for shard in shard_list {
                let shard_param = dialect::shard_param(shard)?;
                let committed_seq: Option<i64> =
                    sqlx::query_scalar("SELECT committed_seq FROM journal_shards WHERE shard = $1")
                        .bind(shard_param)
                        .fetch_optional(&mut *transaction)
                        .await
                        .map_err(classify)?;
                // A shard with no recorded start was opened after migration 0069 recorded the
                // starts, so its chain began with its first batch.
                let chain_start: Option<i64> =
                    sqlx::query_scalar("SELECT first_seq FROM journal_chain_starts WHERE shard = $1")
                        .bind(shard_param)
                        .fetch_optional(&mut *transaction)
                        .await
                        .map_err(classify)?;
                let chain_start = chain_start.map_or(Ok(1), from_db)?;
                let links: Vec<BatchLink> = sqlx::query(
                    "SELECT last_seq, first_seq, hash FROM journal_batches WHERE shard = $1 ORDER BY last_seq",
                )
                .bind(shard_param)
                .fetch_all(&mut *transaction)
                .await
                .map_err(classify)?
                .iter()
                .map(|row| {
                    Ok(BatchLink {
                        shard,
                        first_seq: from_db(row.decode("first_seq")?)?,
                        last_seq: from_db(row.decode("last_seq")?)?,
                        hash: row.decode("hash")?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
                let mut refusal: Option<(u64, String)> = None;
                let postings: Vec<ChainPosting> = sqlx::query(
                    "SELECT seq, account_id, version, booked_at, transfer_id, currency, direction, amount, balance_after
                     FROM postings WHERE shard = $1 AND seq >= $2 ORDER BY seq",
                )
                .bind(shard_param)
                .bind(i64::try_from(chain_start).map_err(|_| corrupt("chain start beyond BIGINT"))?)
                .fetch_all(&mut *transaction)
                .await
                .map_err(classify)?
                .iter()
                .map(|row| {
                    let seq = from_db(row.decode("seq")?)?;
                    let account: StoredUuid = row.decode("account_id")?;
                    let transfer: StoredUuid = row.decode("transfer_id")?;
                    if refusal.is_none()
                        && let Some(reason) = account
                            .refusal(&format!("the account_id of posting seq {seq}"))
                            .or_else(|| transfer.refusal(&format!("the transfer_id of posting seq {seq}")))
                    {
                        refusal = Some((seq, reason));
                    }
                    Ok(ChainPosting {
                        seq,
                        account: account.id,
                        version: from_db(row.decode("version")?)?,
                        booked_at: row.decode("booked_at")?,
                        transfer: transfer.id,
                        currency: row.decode("currency")?,
                        direction: row.decode("direction")?,
                        amount: row.decode("amount")?,
                        balance_after: row.decode("balance_after")?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
                let mut events = Vec::new();
                for (event, event_refusal) in dialect::chain_events(&mut transaction, shard).await? {
                    if let Some(reason) = event_refusal
                        && refusal.as_ref().is_none_or(|(seq, _)| event.seq < *seq)
                    {
                        refusal = Some((event.seq, reason));
                    }
                    events.push(event);
                }
                // Reported before the hashes: a row whose id is spelt otherwise hashes the
                // same, yet every query comparing the text no longer finds it.
                if let Some((seq, reason)) = refusal {
                    return Ok(ChainReport::Broken { shard, first_seq: seq, last_seq: seq, reason });
                }
                let committed_seq = committed_seq.map(from_db).transpose()?;
                match chain::verify_shard(shard, chain_start, &links, &postings, &events, committed_seq) {
                    Ok(checked) => batches += checked,
                    Err(report) => return Ok(report),
                }
            }
            transaction.commit().await.map_err(classify)?;
            Ok(ChainReport::Intact { batches })
        })
    }

    async fn ledger_link(&self, shard: u16, last_seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let last_seq = i64::try_from(last_seq).map_err(|_| corrupt(format!("seq {last_seq} beyond BIGINT")))?;
        run_on_backend!(self, |pool| {
            sqlx::query_scalar("SELECT hash FROM journal_batches WHERE shard = $1 AND last_seq = $2")
                .bind(dialect::shard_param(shard)?)
                .bind(last_seq)
                .fetch_optional(&pool)
                .await
                .map_err(classify)
        })
    }

    async fn ledger_heads(&self) -> Result<Vec<ChainHead>, StoreError> {
        run_on_backend!(self, |pool| {
            let rows = sqlx::query(dialect::LEDGER_HEADS).fetch_all(&pool).await.map_err(classify)?;
            rows.iter()
                .map(|row| {
                    Ok(ChainHead {
                        shard: row.decode::<Shard>("shard")?.0,
                        last_seq: from_db(row.decode("last_seq")?)?,
                        hash: row.decode("hash")?,
                    })
                })
                .collect()
        })
    }
}

/// Events on Postgres: written inside a journal batch's transaction (`write_events`, called by
/// `postgres::write_plan`, whose fence statement also writes the batch's link of the chain:
/// `postgres::fence_and_link`), and the feed's reads of `event_batches`.
pub mod postgres {
    use sqlx::postgres::PgPool;
    use sqlx::{Postgres, Transaction};

    use super::{ChainEvent, EventsDialect, StoreError, StoredEvent, chain_event_of, corrupt, event_of};
    use crate::batch::BatchPlan;
    use crate::postgres::classify;
    use crate::sql::PostgresDialect;

    fn to_db(value: u64) -> Result<i64, StoreError> {
        i64::try_from(value).map_err(|_| corrupt(format!("{value} beyond BIGINT")))
    }

    fn shard_to_db(shard: u16) -> Result<i16, StoreError> {
        i16::try_from(shard).map_err(|_| corrupt("shard beyond SMALLINT"))
    }

    /// The batch's events: one row of `event_batches` (migration 0061), each column an array in
    /// seq order, before the pipeline turn like the other new rows. One row per event was a
    /// quarter of the WAL written per transfer and one of its ~8 index entries; the batch's row
    /// is a fifth of those bytes and one index entry per batch.
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
    /// order. A batch's seqs lie between its neighbours', so that order is seq order, and
    /// Postgres reads only as many batches as the caller's `LIMIT` needs (an incremental sort
    /// within each batch, not a sort of the whole feed). `$3` names the event types wanted,
    /// NULL for all (an empty array matches none).
    macro_rules! feed_rows {
        () => {
            "SELECT b.shard, e.seq, e.type, e.object_id, b.occurred_at, e.data
         FROM event_batches AS b
         CROSS JOIN LATERAL unnest(b.seqs, b.types, b.objects, b.data) WITH ORDINALITY AS e(seq, type, object_id, data, nth)
         WHERE b.shard = $1 AND b.last_seq > $2 AND e.seq > $2 AND ($3::text[] IS NULL OR e.type = ANY($3))
         ORDER BY b.last_seq, e.nth"
        };
    }

    impl EventsDialect for PostgresDialect {
        type Pool = PgPool;
        type ShardParam = i16;

        const LEDGER_HEADS: &'static str =
            "SELECT DISTINCT ON (shard) shard, last_seq, hash FROM journal_batches ORDER BY shard, last_seq DESC";

        const EVENT_HEAD: &'static str = "SELECT max(last_seq) FROM event_batches WHERE shard = $1";

        fn shard_param(shard: u16) -> Result<i16, StoreError> {
            shard_to_db(shard)
        }

        async fn events_page(
            pool: &PgPool,
            shard: u16,
            after: u64,
            types: Option<&[&'static str]>,
            limit: u32,
        ) -> Result<Vec<StoredEvent>, StoreError> {
            let rows = sqlx::query(concat!(feed_rows!(), " LIMIT $4"))
                .bind(shard_to_db(shard)?)
                .bind(to_db(after)?)
                .bind(types)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(classify)?;
            rows.iter().map(event_of).collect()
        }

        async fn behind(
            pool: &PgPool,
            shard: u16,
            after: u64,
            types: Option<&[&'static str]>,
            cap: u32,
        ) -> Result<(i64, Option<i64>), StoreError> {
            // The first `cap` events after the position by the (shard, seq) key: the oldest is
            // among them, and the count stops at the cap.
            sqlx::query_as(concat!("SELECT count(*), min(occurred_at) FROM (", feed_rows!(), " LIMIT $4) AS behind"))
                .bind(shard_to_db(shard)?)
                .bind(to_db(after)?)
                .bind(types)
                .bind(i64::from(cap))
                .fetch_one(pool)
                .await
                .map_err(classify)
        }

        type Connection = sqlx::PgConnection;

        const SNAPSHOT: Option<&'static str> = Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");

        const CHAIN_SHARDS: &'static str = "SELECT shard FROM journal_shards UNION SELECT shard FROM journal_batches
             UNION SELECT DISTINCT shard FROM postings UNION SELECT shard FROM event_batches ORDER BY shard";

        async fn chain_events(
            connection: &mut sqlx::PgConnection,
            shard: u16,
        ) -> Result<Vec<(ChainEvent, Option<String>)>, StoreError> {
            // Every event of the shard (after seq -1), of every type.
            let rows = sqlx::query(feed_rows!())
                .bind(shard_to_db(shard)?)
                .bind(-1_i64)
                .bind(None::<Vec<String>>)
                .fetch_all(connection)
                .await
                .map_err(classify)?;
            rows.iter().map(chain_event_of).collect()
        }
    }
}

/// Events on SQLite: written inside a journal batch's `BEGIN IMMEDIATE` transaction
/// (`write_events`, `link_batch`, called by `sqlite::write_plan`), one `events` row per event.
/// Ids are hyphenated text and amounts exact decimal text, as in the ledger's other SQLite
/// tables.
pub mod sqlite {
    use sqlx::sqlite::SqlitePool;
    use sqlx::{Sqlite, Transaction};

    use super::{ChainEvent, EventsDialect, StoreError, StoredEvent, chain, chain_event_of, corrupt, event_of};
    use crate::batch::BatchPlan;
    use crate::sql::SqliteDialect;
    use crate::sqlite::classify;

    fn to_db(value: u64) -> Result<i64, StoreError> {
        i64::try_from(value).map_err(|_| corrupt(format!("{value} beyond INTEGER")))
    }

    pub(crate) async fn write_events(
        transaction: &mut Transaction<'_, Sqlite>,
        plan: &BatchPlan,
    ) -> Result<(), StoreError> {
        for event in &plan.events {
            sqlx::query(
                "INSERT INTO events (shard, seq, type, object_id, occurred_at, data) VALUES ($1, $2, $3, $4, $5, $6)",
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

    pub(crate) async fn link_batch(
        transaction: &mut Transaction<'_, Sqlite>,
        plan: &BatchPlan,
    ) -> Result<(), StoreError> {
        if plan.records.is_empty() {
            return Ok(());
        }
        let prev: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT hash FROM journal_batches WHERE shard = $1 ORDER BY last_seq DESC LIMIT 1")
                .bind(i64::from(plan.shard))
                .fetch_optional(&mut **transaction)
                .await
                .map_err(classify)?;
        let hash = chain::link(prev.as_deref().unwrap_or(&chain::GENESIS), &chain::batch_digest(plan));
        sqlx::query("INSERT INTO journal_batches (shard, last_seq, first_seq, hash) VALUES ($1, $2, $3, $4)")
            .bind(i64::from(plan.shard))
            .bind(to_db(plan.last_seq)?)
            .bind(to_db(plan.first_seq)?)
            .bind(hash.as_slice())
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// The type filter: a fixed list of known names, bound one by one from `$first` on (none
    /// for `None` or an empty list, which on SQLite means every type).
    fn type_filter(types: Option<&[&'static str]>, first: usize) -> String {
        match types {
            Some(types) if !types.is_empty() => format!(
                " AND type IN ({})",
                (0..types.len()).map(|i| format!("${}", i + first)).collect::<Vec<_>>().join(", ")
            ),
            _ => String::new(),
        }
    }

    impl EventsDialect for SqliteDialect {
        type Pool = SqlitePool;
        type ShardParam = i64;

        /// SQLite has no `DISTINCT ON`.
        const LEDGER_HEADS: &'static str = "SELECT shard, last_seq, hash FROM journal_batches AS b
                 WHERE last_seq = (SELECT max(last_seq) FROM journal_batches WHERE shard = b.shard) ORDER BY shard";

        const EVENT_HEAD: &'static str = "SELECT max(seq) FROM events WHERE shard = $1";

        fn shard_param(shard: u16) -> Result<i64, StoreError> {
            Ok(i64::from(shard))
        }

        async fn events_page(
            pool: &SqlitePool,
            shard: u16,
            after: u64,
            types: Option<&[&'static str]>,
            limit: u32,
        ) -> Result<Vec<StoredEvent>, StoreError> {
            let filter = type_filter(types, 4);
            let sql = format!(
                "SELECT shard, seq, type, object_id, occurred_at, data FROM events
                 WHERE shard = $1 AND seq > $2{filter} ORDER BY seq LIMIT $3"
            );
            let mut query = sqlx::query(&sql).bind(i64::from(shard)).bind(to_db(after)?).bind(i64::from(limit));
            for kind in types.iter().copied().flatten() {
                query = query.bind(*kind);
            }
            let rows = query.fetch_all(pool).await.map_err(classify)?;
            rows.iter().map(event_of).collect()
        }

        async fn behind(
            pool: &SqlitePool,
            shard: u16,
            after: u64,
            types: Option<&[&'static str]>,
            cap: u32,
        ) -> Result<(i64, Option<i64>), StoreError> {
            let filter = type_filter(types, 4);
            let sql = format!(
                "SELECT count(*), min(occurred_at) FROM (
                     SELECT occurred_at FROM events WHERE shard = $1 AND seq > $2{filter} ORDER BY seq LIMIT $3)"
            );
            let mut query = sqlx::query_as::<_, (i64, Option<i64>)>(&sql)
                .bind(i64::from(shard))
                .bind(to_db(after)?)
                .bind(i64::from(cap));
            for kind in types.iter().copied().flatten() {
                query = query.bind(*kind);
            }
            query.fetch_one(pool).await.map_err(classify)
        }

        type Connection = sqlx::SqliteConnection;

        const SNAPSHOT: Option<&'static str> = None;

        const CHAIN_SHARDS: &'static str = "SELECT shard FROM journal_shards UNION SELECT shard FROM journal_batches
             UNION SELECT shard FROM postings UNION SELECT shard FROM events ORDER BY shard";

        async fn chain_events(
            connection: &mut sqlx::SqliteConnection,
            shard: u16,
        ) -> Result<Vec<(ChainEvent, Option<String>)>, StoreError> {
            let rows =
                sqlx::query("SELECT seq, type, object_id, occurred_at, data FROM events WHERE shard = $1 ORDER BY seq")
                    .bind(i64::from(shard))
                    .fetch_all(connection)
                    .await
                    .map_err(classify)?;
            rows.iter().map(chain_event_of).collect()
        }
    }
}

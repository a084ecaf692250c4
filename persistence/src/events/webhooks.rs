//! Webhook subscriptions and their delivery log (API.md *1.1* "Events and webhooks"; the
//! delivery worker is `http/src/webhooks.rs`). On the identity store's pool, like the feed:
//! `WebhookStore` is written once for both identity stores (`crate::sql`).

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use tally_engine::Timestamp;
use uuid::Uuid;

use crate::audit::{AppendAudit, AuditRecord};
use crate::sql::{BeginWrite, Column, Id, IdentitySql, PostgresDialect, SqlRow, SqliteDialect, run_on_backend};
use crate::store::StoreError;
use crate::store::corrupt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub id: Uuid,
    pub url: String,
    /// `None`: every type (`["*"]`).
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub secret: String,
    pub enabled: bool,
    pub created_at: Timestamp,
    /// Where its deliveries stand (`FeedPosition` text).
    pub position: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        [DeliveryStatus::Pending, DeliveryStatus::Delivered, DeliveryStatus::Dead]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub shard: u16,
    pub seq: u64,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub first_attempt_at: Timestamp,
    pub next_attempt_at: Option<Timestamp>,
    pub delivered_at: Option<Timestamp>,
}

#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// The write of each admin change below carries its audit entry (`audit`: appended in the
    /// same transaction, after the change, and only if something changed).
    async fn create_subscription(
        &self,
        subscription: &Subscription,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError>;
    /// Every subscription, oldest first.
    async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError>;
    async fn subscription(&self, id: Uuid) -> Result<Option<Subscription>, StoreError>;
    /// Writes url, events, description and enabled (never the position: that is
    /// `set_position`'s, so an edit cannot undo a delivery task's progress, nor the task an
    /// edit); false when it does not exist.
    async fn update_subscription(
        &self,
        subscription: &Subscription,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError>;
    /// Writes the position in one statement: unconditionally with `expected = None` (a
    /// replay), else only if the stored position is still `expected` (the delivery task's
    /// compare-and-set: a replay meanwhile wins). False when nothing was written.
    async fn set_position(
        &self,
        id: Uuid,
        position: &str,
        expected: Option<&str>,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError>;
    async fn delete_subscription(&self, id: Uuid, audit: Option<&AuditRecord>) -> Result<bool, StoreError>;
    /// The delivery's latest state (inserted or replaced).
    async fn record_delivery(&self, subscription: Uuid, delivery: &Delivery) -> Result<(), StoreError>;
    /// Settles a run of events the delivery task has finished with, in order (delivered, or
    /// dead): their delivery rows and the position after the last of them, in one
    /// transaction. The position is a compare-and-set as in `set_position`: false, and nothing
    /// written, when the stored position is no longer `expected` (a replay meanwhile).
    async fn settle(
        &self,
        id: Uuid,
        deliveries: &[Delivery],
        position: &str,
        expected: &str,
    ) -> Result<bool, StoreError>;
    async fn delivery(&self, subscription: Uuid, shard: u16, seq: u64) -> Result<Option<Delivery>, StoreError>;
    /// Deliveries in (shard, seq) order after `after`, at most `limit`.
    async fn deliveries(
        &self,
        subscription: Uuid,
        status: Option<DeliveryStatus>,
        after: Option<(u16, u64)>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;
}

fn events_text(events: &Option<Vec<String>>) -> String {
    events.as_ref().map_or_else(|| "*".to_owned(), |events| events.join(","))
}

fn events_of(text: &str) -> Option<Vec<String>> {
    (text != "*").then(|| text.split(',').map(str::to_owned).collect())
}

fn as_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| corrupt(format!("{value} beyond BIGINT")))
}

const SUBSCRIPTION_COLUMNS: &str = "id, url, events, description, secret, enabled, created_at, position";
const DELIVERY_COLUMNS: &str =
    "shard, seq, status, attempts, last_status_code, last_error, first_attempt_at, next_attempt_at, delivered_at";

/// What the webhook tables store or spell differently on the two backends: Postgres has
/// `SMALLINT` shards and `INTEGER` (32-bit) counts, SQLite 64-bit integers throughout.
trait WebhooksDialect {
    /// A shard as a parameter.
    type Shard;
    /// An attempt count or HTTP status as a parameter.
    type Count;

    /// Follows a text parameter that may be NULL: Postgres is told its type (it cannot infer
    /// one from `$n IS NULL`); SQLite parameters have none.
    const TEXT_CAST: &'static str;
    /// Deliveries after (`$3`, `$4`) in (shard, seq) order: a row comparison on Postgres,
    /// spelled out on SQLite.
    const AFTER: &'static str;

    fn shard(shard: u16) -> Result<Self::Shard, StoreError>;
    fn attempts(attempts: u32) -> Self::Count;
    fn status_code(code: u16) -> Self::Count;
    /// The key deliveries are listed after: (-1, -1) for the first page.
    fn after_key(after: Option<(u16, u64)>) -> (Self::Shard, i64);
}

impl WebhooksDialect for PostgresDialect {
    type Shard = i16;
    type Count = i32;

    const TEXT_CAST: &'static str = "::text";
    const AFTER: &'static str = "(shard, seq) > ($3, $4)";

    fn shard(shard: u16) -> Result<i16, StoreError> {
        i16::try_from(shard).map_err(|_| corrupt("shard beyond SMALLINT"))
    }

    fn attempts(attempts: u32) -> i32 {
        i32::try_from(attempts).unwrap_or(i32::MAX)
    }

    fn status_code(code: u16) -> i32 {
        i32::from(code)
    }

    fn after_key(after: Option<(u16, u64)>) -> (i16, i64) {
        after.map_or((-1_i16, -1_i64), |(shard, seq)| (shard as i16, seq as i64))
    }
}

impl WebhooksDialect for SqliteDialect {
    type Shard = i64;
    type Count = i64;

    const TEXT_CAST: &'static str = "";
    const AFTER: &'static str = "(shard > $3 OR (shard = $3 AND seq > $4))";

    fn shard(shard: u16) -> Result<i64, StoreError> {
        Ok(i64::from(shard))
    }

    fn attempts(attempts: u32) -> i64 {
        i64::from(attempts)
    }

    fn status_code(code: u16) -> i64 {
        i64::from(code)
    }

    fn after_key(after: Option<(u16, u64)>) -> (i64, i64) {
        after.map_or((-1_i64, -1_i64), |(shard, seq)| (i64::from(shard), seq as i64))
    }
}

/// A delivery's shard: `SMALLINT` on Postgres, `INTEGER` on SQLite.
struct Shard(u16);

impl Column for Shard {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, StoreError> {
        let shard: i16 = row.try_get(name).map_err(corrupt)?;
        u16::try_from(shard).map(Shard).map_err(|_| corrupt("shard out of range"))
    }

    fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, StoreError> {
        let shard: i64 = row.try_get(name).map_err(corrupt)?;
        u16::try_from(shard).map(Shard).map_err(|_| corrupt("shard out of range"))
    }
}

/// A delivery's attempts: `INTEGER` (32-bit) on Postgres, where a negative count reads as 0;
/// 64-bit on SQLite, where one out of range reads as `u32::MAX`.
struct Attempts(u32);

impl Column for Attempts {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, StoreError> {
        let attempts: i32 = row.try_get(name).map_err(corrupt)?;
        Ok(Attempts(u32::try_from(attempts).unwrap_or(0)))
    }

    fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, StoreError> {
        let attempts: i64 = row.try_get(name).map_err(corrupt)?;
        Ok(Attempts(u32::try_from(attempts).unwrap_or(u32::MAX)))
    }
}

/// The last HTTP status: `INTEGER` (32-bit) on Postgres, 64-bit on SQLite; one that is not a
/// status reads as none.
struct StatusCode(Option<u16>);

impl Column for StatusCode {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, StoreError> {
        let code: Option<i32> = row.try_get(name).map_err(corrupt)?;
        Ok(StatusCode(code.and_then(|code| u16::try_from(code).ok())))
    }

    fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, StoreError> {
        let code: Option<i64> = row.try_get(name).map_err(corrupt)?;
        Ok(StatusCode(code.and_then(|code| u16::try_from(code).ok())))
    }
}

fn subscription_of(row: &impl SqlRow) -> Result<Subscription, StoreError> {
    let events: String = row.decode("events")?;
    Ok(Subscription {
        id: row.decode("id")?,
        url: row.decode("url")?,
        events: events_of(&events),
        description: row.decode("description")?,
        secret: row.decode("secret")?,
        enabled: row.decode("enabled")?,
        created_at: row.decode("created_at")?,
        position: row.decode("position")?,
    })
}

fn delivery_of(row: &impl SqlRow) -> Result<Delivery, StoreError> {
    let status: String = row.decode("status")?;
    Ok(Delivery {
        shard: row.decode::<Shard>("shard")?.0,
        seq: u64::try_from(row.decode::<i64>("seq")?).map_err(|_| corrupt("negative seq"))?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt(format!("delivery status {status}")))?,
        attempts: row.decode::<Attempts>("attempts")?.0,
        last_status_code: row.decode::<StatusCode>("last_status_code")?.0,
        last_error: row.decode("last_error")?,
        first_attempt_at: row.decode("first_attempt_at")?,
        next_attempt_at: row.decode("next_attempt_at")?,
        delivered_at: row.decode("delivered_at")?,
    })
}

/// Inserts or replaces one delivery's row: `$subscription` (`Uuid`) and `$delivery`
/// (`&Delivery`) on `$connection` (`&mut` a connection of either backend). Expects
/// `classify` and `dialect` in scope, as `on_backend!` gives them.
macro_rules! write_delivery {
    ($connection:expr, $subscription:expr, $delivery:expr) => {{
        let delivery: &Delivery = $delivery;
        sqlx::query(&format!(
            "INSERT INTO webhook_deliveries (subscription_id, {DELIVERY_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (subscription_id, shard, seq) DO UPDATE SET status = EXCLUDED.status,
                     attempts = EXCLUDED.attempts, last_status_code = EXCLUDED.last_status_code,
                     last_error = EXCLUDED.last_error, first_attempt_at = EXCLUDED.first_attempt_at,
                     next_attempt_at = EXCLUDED.next_attempt_at, delivered_at = EXCLUDED.delivered_at"
        ))
        .bind(Id($subscription))
        .bind(dialect::shard(delivery.shard)?)
        .bind(as_i64(delivery.seq)?)
        .bind(delivery.status.as_str())
        .bind(dialect::attempts(delivery.attempts))
        .bind(delivery.last_status_code.map(dialect::status_code))
        .bind(&delivery.last_error)
        .bind(delivery.first_attempt_at.as_micros())
        .bind(delivery.next_attempt_at.map(|at| at.as_micros()))
        .bind(delivery.delivered_at.map(|at| at.as_micros()))
        .execute(&mut *$connection)
        .await
        .map_err(classify)
        .map(|_| ())
    }};
}

#[async_trait]
impl<S: IdentitySql> WebhookStore for S {
    async fn create_subscription(
        &self,
        subscription: &Subscription,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let s = subscription.clone();
        let audit = audit.cloned();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            sqlx::query(&format!(
                "INSERT INTO webhook_subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ))
            .bind(Id(s.id))
            .bind(&s.url)
            .bind(events_text(&s.events))
            .bind(&s.description)
            .bind(&s.secret)
            .bind(s.enabled)
            .bind(s.created_at.as_micros())
            .bind(&s.position)
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if let Some(audit) = &audit {
                transaction.append_audit(audit).await?;
            }
            transaction.commit().await.map_err(classify)?;
            Ok(())
        })
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        run_on_backend!(self, |pool| {
            let rows = sqlx::query(&format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions ORDER BY created_at, id"
            ))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(subscription_of).collect()
        })
    }

    async fn subscription(&self, id: Uuid) -> Result<Option<Subscription>, StoreError> {
        run_on_backend!(self, |pool| {
            let row = sqlx::query(&format!("SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions WHERE id = $1"))
                .bind(Id(id))
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
            row.as_ref().map(subscription_of).transpose()
        })
    }

    async fn update_subscription(
        &self,
        subscription: &Subscription,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        let s = subscription.clone();
        let audit = audit.cloned();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let done = sqlx::query(
                "UPDATE webhook_subscriptions SET url = $2, events = $3, description = $4, enabled = $5 WHERE id = $1",
            )
            .bind(Id(s.id))
            .bind(&s.url)
            .bind(events_text(&s.events))
            .bind(&s.description)
            .bind(s.enabled)
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if done.rows_affected() != 1 {
                // Nothing changed, so nothing is recorded; the transaction rolls back on drop.
                return Ok(false);
            }
            if let Some(audit) = &audit {
                transaction.append_audit(audit).await?;
            }
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
    }

    async fn set_position(
        &self,
        id: Uuid,
        position: &str,
        expected: Option<&str>,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        let (position, expected) = (position.to_owned(), expected.map(str::to_owned));
        let audit = audit.cloned();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let done = sqlx::query(&format!(
                "UPDATE webhook_subscriptions SET position = $2 WHERE id = $1 AND ($3{} IS NULL OR position = $3)",
                dialect::TEXT_CAST
            ))
            .bind(Id(id))
            .bind(&position)
            .bind(&expected)
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if done.rows_affected() != 1 {
                // Nothing changed, so nothing is recorded; the transaction rolls back on drop.
                return Ok(false);
            }
            if let Some(audit) = &audit {
                transaction.append_audit(audit).await?;
            }
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
    }

    async fn delete_subscription(&self, id: Uuid, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
        let audit = audit.cloned();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let done = sqlx::query("DELETE FROM webhook_subscriptions WHERE id = $1")
                .bind(Id(id))
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            if done.rows_affected() != 1 {
                // Nothing changed, so nothing is recorded; the transaction rolls back on drop.
                return Ok(false);
            }
            if let Some(audit) = &audit {
                transaction.append_audit(audit).await?;
            }
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
    }

    async fn record_delivery(&self, subscription: Uuid, delivery: &Delivery) -> Result<(), StoreError> {
        let delivery = delivery.clone();
        run_on_backend!(self, |pool| {
            let mut connection = pool.acquire().await.map_err(classify)?;
            write_delivery!(connection, subscription, &delivery)
        })
    }

    async fn settle(
        &self,
        id: Uuid,
        deliveries: &[Delivery],
        position: &str,
        expected: &str,
    ) -> Result<bool, StoreError> {
        let (deliveries, position, expected) = (deliveries.to_vec(), position.to_owned(), expected.to_owned());
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let moved = sqlx::query("UPDATE webhook_subscriptions SET position = $2 WHERE id = $1 AND position = $3")
                .bind(Id(id))
                .bind(&position)
                .bind(&expected)
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            if moved.rows_affected() != 1 {
                // Dropped unfinished: rolled back, nothing written.
                return Ok(false);
            }
            for delivery in &deliveries {
                write_delivery!(transaction, id, delivery)?;
            }
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
    }

    async fn delivery(&self, subscription: Uuid, shard: u16, seq: u64) -> Result<Option<Delivery>, StoreError> {
        run_on_backend!(self, |pool| {
            let row = sqlx::query(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE subscription_id = $1 AND shard = $2 AND seq = $3"
            ))
            .bind(Id(subscription))
            .bind(dialect::shard(shard)?)
            .bind(as_i64(seq)?)
            .fetch_optional(&pool)
            .await
            .map_err(classify)?;
            row.as_ref().map(delivery_of).transpose()
        })
    }

    async fn deliveries(
        &self,
        subscription: Uuid,
        status: Option<DeliveryStatus>,
        after: Option<(u16, u64)>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        run_on_backend!(self, |pool| {
            let (shard, seq) = dialect::after_key(after);
            let rows = sqlx::query(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
                 WHERE subscription_id = $1 AND ($2{} IS NULL OR status = $2) AND {}
                 ORDER BY shard, seq LIMIT $5",
                dialect::TEXT_CAST,
                dialect::AFTER
            ))
            .bind(Id(subscription))
            .bind(status.map(DeliveryStatus::as_str))
            .bind(shard)
            .bind(seq)
            .bind(i64::from(limit))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(delivery_of).collect()
        })
    }
}

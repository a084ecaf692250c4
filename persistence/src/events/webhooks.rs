//! Webhook subscriptions and their delivery log (API.md *1.1* "Events and webhooks"; the
//! delivery worker is `http/src/webhooks.rs`). On the identity store's pool, like the feed.

use async_trait::async_trait;
use sqlx::Row;
use tally_engine::Timestamp;
use uuid::Uuid;

use crate::audit::AuditRecord;
use crate::store::StoreError;
use crate::store::corrupt;
use crate::users::postgres::PgUserStore;
use crate::users::sqlite::SqliteUserStore;

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

fn delivery_of(row: &sqlx::sqlite::SqliteRow, shard: i64, seq: i64) -> Result<Delivery, StoreError> {
    let status: String = row.try_get("status").map_err(corrupt)?;
    let code: Option<i64> = row.try_get("last_status_code").map_err(corrupt)?;
    Ok(Delivery {
        shard: u16::try_from(shard).map_err(|_| corrupt("shard out of range"))?,
        seq: u64::try_from(seq).map_err(|_| corrupt("negative seq"))?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt(format!("delivery status {status}")))?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts").map_err(corrupt)?).unwrap_or(u32::MAX),
        last_status_code: code.and_then(|code| u16::try_from(code).ok()),
        last_error: row.try_get("last_error").map_err(corrupt)?,
        first_attempt_at: Timestamp::from_micros(row.try_get("first_attempt_at").map_err(corrupt)?),
        next_attempt_at: row.try_get::<Option<i64>, _>("next_attempt_at").map_err(corrupt)?.map(Timestamp::from_micros),
        delivered_at: row.try_get::<Option<i64>, _>("delivered_at").map_err(corrupt)?.map(Timestamp::from_micros),
    })
}

const SUBSCRIPTION_COLUMNS: &str = "id, url, events, description, secret, enabled, created_at, position";
const DELIVERY_COLUMNS: &str =
    "shard, seq, status, attempts, last_status_code, last_error, first_attempt_at, next_attempt_at, delivered_at";

fn pg_subscription(row: &sqlx::postgres::PgRow) -> Result<Subscription, StoreError> {
    let events: String = row.try_get("events").map_err(corrupt)?;
    Ok(Subscription {
        id: row.try_get("id").map_err(corrupt)?,
        url: row.try_get("url").map_err(corrupt)?,
        events: events_of(&events),
        description: row.try_get("description").map_err(corrupt)?,
        secret: row.try_get("secret").map_err(corrupt)?,
        enabled: row.try_get("enabled").map_err(corrupt)?,
        created_at: Timestamp::from_micros(row.try_get("created_at").map_err(corrupt)?),
        position: row.try_get("position").map_err(corrupt)?,
    })
}

fn pg_delivery(row: &sqlx::postgres::PgRow) -> Result<Delivery, StoreError> {
    let shard: i16 = row.try_get("shard").map_err(corrupt)?;
    let seq: i64 = row.try_get("seq").map_err(corrupt)?;
    let status: String = row.try_get("status").map_err(corrupt)?;
    let attempts: i32 = row.try_get("attempts").map_err(corrupt)?;
    let code: Option<i32> = row.try_get("last_status_code").map_err(corrupt)?;
    Ok(Delivery {
        shard: u16::try_from(shard).map_err(|_| corrupt("shard out of range"))?,
        seq: u64::try_from(seq).map_err(|_| corrupt("negative seq"))?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt(format!("delivery status {status}")))?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_status_code: code.and_then(|code| u16::try_from(code).ok()),
        last_error: row.try_get("last_error").map_err(corrupt)?,
        first_attempt_at: Timestamp::from_micros(row.try_get("first_attempt_at").map_err(corrupt)?),
        next_attempt_at: row.try_get::<Option<i64>, _>("next_attempt_at").map_err(corrupt)?.map(Timestamp::from_micros),
        delivered_at: row.try_get::<Option<i64>, _>("delivered_at").map_err(corrupt)?.map(Timestamp::from_micros),
    })
}

/// Inserts or replaces one delivery's row.
async fn pg_write_delivery(
    connection: &mut sqlx::PgConnection,
    subscription: Uuid,
    delivery: &Delivery,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO webhook_deliveries (subscription_id, {DELIVERY_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (subscription_id, shard, seq) DO UPDATE SET status = EXCLUDED.status,
                 attempts = EXCLUDED.attempts, last_status_code = EXCLUDED.last_status_code,
                 last_error = EXCLUDED.last_error, first_attempt_at = EXCLUDED.first_attempt_at,
                 next_attempt_at = EXCLUDED.next_attempt_at, delivered_at = EXCLUDED.delivered_at"
    ))
    .bind(subscription)
    .bind(i16::try_from(delivery.shard).map_err(|_| corrupt("shard beyond SMALLINT"))?)
    .bind(as_i64(delivery.seq)?)
    .bind(delivery.status.as_str())
    .bind(i32::try_from(delivery.attempts).unwrap_or(i32::MAX))
    .bind(delivery.last_status_code.map(i32::from))
    .bind(&delivery.last_error)
    .bind(delivery.first_attempt_at.as_micros())
    .bind(delivery.next_attempt_at.map(|at| at.as_micros()))
    .bind(delivery.delivered_at.map(|at| at.as_micros()))
    .execute(&mut *connection)
    .await
    .map_err(crate::postgres::classify)?;
    Ok(())
}

#[async_trait]
impl WebhookStore for PgUserStore {
    async fn create_subscription(
        &self,
        subscription: &Subscription,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let s = subscription.clone();
        let audit = audit.cloned();
        self.run(move |pool| async move {
            let mut transaction = pool.begin().await.map_err(crate::postgres::classify)?;
            sqlx::query(&format!(
                "INSERT INTO webhook_subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ))
            .bind(s.id)
            .bind(&s.url)
            .bind(events_text(&s.events))
            .bind(&s.description)
            .bind(&s.secret)
            .bind(s.enabled)
            .bind(s.created_at.as_micros())
            .bind(&s.position)
            .execute(&mut *transaction)
            .await
            .map_err(crate::postgres::classify)?;
            if let Some(audit) = &audit {
                crate::audit::postgres::append(&mut transaction, audit).await?;
            }
            transaction.commit().await.map_err(crate::postgres::classify)?;
            Ok(())
        })
        .await
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query(&format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions ORDER BY created_at, id"
            ))
            .fetch_all(&pool)
            .await
            .map_err(crate::postgres::classify)?;
            rows.iter().map(pg_subscription).collect()
        })
        .await
    }

    async fn subscription(&self, id: Uuid) -> Result<Option<Subscription>, StoreError> {
        self.run(move |pool| async move {
            let row = sqlx::query(&format!("SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions WHERE id = $1"))
                .bind(id)
                .fetch_optional(&pool)
                .await
                .map_err(crate::postgres::classify)?;
            row.as_ref().map(pg_subscription).transpose()
        })
        .await
    }

    async fn update_subscription(
        &self,
        subscription: &Subscription,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        let s = subscription.clone();
        let audit = audit.cloned();
        self.run(move |pool| async move {
            let mut transaction = pool.begin().await.map_err(crate::postgres::classify)?;
            let done = sqlx::query(
                "UPDATE webhook_subscriptions SET url = $2, events = $3, description = $4, enabled = $5 WHERE id = $1",
            )
            .bind(s.id)
            .bind(&s.url)
            .bind(events_text(&s.events))
            .bind(&s.description)
            .bind(s.enabled)
            .execute(&mut *transaction)
            .await
            .map_err(crate::postgres::classify)?;
            if done.rows_affected() != 1 {
                // Nothing changed, so nothing is recorded; the transaction rolls back on drop.
                return Ok(false);
            }
            if let Some(audit) = &audit {
                crate::audit::postgres::append(&mut transaction, audit).await?;
            }
            transaction.commit().await.map_err(crate::postgres::classify)?;
            Ok(true)
        })
        .await
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
        self.run(move |pool| async move {
            let mut transaction = pool.begin().await.map_err(crate::postgres::classify)?;
            let done = sqlx::query(
                "UPDATE webhook_subscriptions SET position = $2 WHERE id = $1 AND ($3::text IS NULL OR position = $3)",
            )
            .bind(id)
            .bind(&position)
            .bind(&expected)
            .execute(&mut *transaction)
            .await
            .map_err(crate::postgres::classify)?;
            if done.rows_affected() != 1 {
                // Nothing changed, so nothing is recorded; the transaction rolls back on drop.
                return Ok(false);
            }
            if let Some(audit) = &audit {
                crate::audit::postgres::append(&mut transaction, audit).await?;
            }
            transaction.commit().await.map_err(crate::postgres::classify)?;
            Ok(true)
        })
        .await
    }

    async fn delete_subscription(&self, id: Uuid, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
        let audit = audit.cloned();
        self.run(move |pool| async move {
            let mut transaction = pool.begin().await.map_err(crate::postgres::classify)?;
            let done = sqlx::query("DELETE FROM webhook_subscriptions WHERE id = $1")
                .bind(id)
                .execute(&mut *transaction)
                .await
                .map_err(crate::postgres::classify)?;
            if done.rows_affected() != 1 {
                // Nothing changed, so nothing is recorded; the transaction rolls back on drop.
                return Ok(false);
            }
            if let Some(audit) = &audit {
                crate::audit::postgres::append(&mut transaction, audit).await?;
            }
            transaction.commit().await.map_err(crate::postgres::classify)?;
            Ok(true)
        })
        .await
    }

    async fn record_delivery(&self, subscription: Uuid, delivery: &Delivery) -> Result<(), StoreError> {
        let delivery = delivery.clone();
        self.run(move |pool| async move {
            let mut connection = pool.acquire().await.map_err(crate::postgres::classify)?;
            pg_write_delivery(&mut connection, subscription, &delivery).await
        })
        .await
    }

    async fn settle(
        &self,
        id: Uuid,
        deliveries: &[Delivery],
        position: &str,
        expected: &str,
    ) -> Result<bool, StoreError> {
        let (deliveries, position, expected) = (deliveries.to_vec(), position.to_owned(), expected.to_owned());
        self.run(move |pool| async move {
            let mut transaction = pool.begin().await.map_err(crate::postgres::classify)?;
            let moved = sqlx::query("UPDATE webhook_subscriptions SET position = $2 WHERE id = $1 AND position = $3")
                .bind(id)
                .bind(&position)
                .bind(&expected)
                .execute(&mut *transaction)
                .await
                .map_err(crate::postgres::classify)?;
            if moved.rows_affected() != 1 {
                // Dropped unfinished: rolled back, nothing written.
                return Ok(false);
            }
            for delivery in &deliveries {
                pg_write_delivery(&mut transaction, id, delivery).await?;
            }
            transaction.commit().await.map_err(crate::postgres::classify)?;
            Ok(true)
        })
        .await
    }

    async fn delivery(&self, subscription: Uuid, shard: u16, seq: u64) -> Result<Option<Delivery>, StoreError> {
        self.run(move |pool| async move {
            let row = sqlx::query(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE subscription_id = $1 AND shard = $2 AND seq = $3"
            ))
            .bind(subscription)
            .bind(i16::try_from(shard).map_err(|_| corrupt("shard beyond SMALLINT"))?)
            .bind(as_i64(seq)?)
            .fetch_optional(&pool)
            .await
            .map_err(crate::postgres::classify)?;
            row.as_ref().map(pg_delivery).transpose()
        })
        .await
    }

    async fn deliveries(
        &self,
        subscription: Uuid,
        status: Option<DeliveryStatus>,
        after: Option<(u16, u64)>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let (shard, seq) = after.map_or((-1_i16, -1_i64), |(shard, seq)| (shard as i16, seq as i64));
        self.run(move |pool| async move {
            let rows = sqlx::query(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
                 WHERE subscription_id = $1 AND ($2::text IS NULL OR status = $2) AND (shard, seq) > ($3, $4)
                 ORDER BY shard, seq LIMIT $5"
            ))
            .bind(subscription)
            .bind(status.map(DeliveryStatus::as_str))
            .bind(shard)
            .bind(seq)
            .bind(i64::from(limit))
            .fetch_all(&pool)
            .await
            .map_err(crate::postgres::classify)?;
            rows.iter().map(pg_delivery).collect()
        })
        .await
    }
}

fn sqlite_subscription(row: &sqlx::sqlite::SqliteRow) -> Result<Subscription, StoreError> {
    let events: String = row.try_get("events").map_err(corrupt)?;
    let id: String = row.try_get("id").map_err(corrupt)?;
    Ok(Subscription {
        id: Uuid::parse_str(&id).map_err(|_| corrupt(format!("subscription id {id}")))?,
        url: row.try_get("url").map_err(corrupt)?,
        events: events_of(&events),
        description: row.try_get("description").map_err(corrupt)?,
        secret: row.try_get("secret").map_err(corrupt)?,
        enabled: row.try_get::<i64, _>("enabled").map_err(corrupt)? != 0,
        created_at: Timestamp::from_micros(row.try_get("created_at").map_err(corrupt)?),
        position: row.try_get("position").map_err(corrupt)?,
    })
}

fn sqlite_delivery(row: &sqlx::sqlite::SqliteRow) -> Result<Delivery, StoreError> {
    let shard: i64 = row.try_get("shard").map_err(corrupt)?;
    let seq: i64 = row.try_get("seq").map_err(corrupt)?;
    delivery_of(row, shard, seq)
}

/// Inserts or replaces one delivery's row.
async fn sqlite_write_delivery(
    connection: &mut sqlx::SqliteConnection,
    subscription: Uuid,
    delivery: &Delivery,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO webhook_deliveries (subscription_id, {DELIVERY_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (subscription_id, shard, seq) DO UPDATE SET status = excluded.status,
                 attempts = excluded.attempts, last_status_code = excluded.last_status_code,
                 last_error = excluded.last_error, first_attempt_at = excluded.first_attempt_at,
                 next_attempt_at = excluded.next_attempt_at, delivered_at = excluded.delivered_at"
    ))
    .bind(subscription.hyphenated().to_string())
    .bind(i64::from(delivery.shard))
    .bind(as_i64(delivery.seq)?)
    .bind(delivery.status.as_str())
    .bind(i64::from(delivery.attempts))
    .bind(delivery.last_status_code.map(i64::from))
    .bind(&delivery.last_error)
    .bind(delivery.first_attempt_at.as_micros())
    .bind(delivery.next_attempt_at.map(|at| at.as_micros()))
    .bind(delivery.delivered_at.map(|at| at.as_micros()))
    .execute(&mut *connection)
    .await
    .map_err(crate::sqlite::classify)?;
    Ok(())
}

#[async_trait]
impl WebhookStore for SqliteUserStore {
    async fn create_subscription(
        &self,
        subscription: &Subscription,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let s = subscription.clone();
        let audit = audit.cloned();
        self.run(move |pool| async move {
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(crate::sqlite::classify)?;
            sqlx::query(&format!(
                "INSERT INTO webhook_subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))
            .bind(s.id.hyphenated().to_string())
            .bind(&s.url)
            .bind(events_text(&s.events))
            .bind(&s.description)
            .bind(&s.secret)
            .bind(i64::from(s.enabled))
            .bind(s.created_at.as_micros())
            .bind(&s.position)
            .execute(&mut *transaction)
            .await
            .map_err(crate::sqlite::classify)?;
            if let Some(audit) = &audit {
                crate::audit::sqlite::append(&mut transaction, audit).await?;
            }
            transaction.commit().await.map_err(crate::sqlite::classify)?;
            Ok(())
        })
        .await
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query(&format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions ORDER BY created_at, id"
            ))
            .fetch_all(&pool)
            .await
            .map_err(crate::sqlite::classify)?;
            rows.iter().map(sqlite_subscription).collect()
        })
        .await
    }

    async fn subscription(&self, id: Uuid) -> Result<Option<Subscription>, StoreError> {
        self.run(move |pool| async move {
            let row = sqlx::query(&format!("SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions WHERE id = ?1"))
                .bind(id.hyphenated().to_string())
                .fetch_optional(&pool)
                .await
                .map_err(crate::sqlite::classify)?;
            row.as_ref().map(sqlite_subscription).transpose()
        })
        .await
    }

    async fn update_subscription(
        &self,
        subscription: &Subscription,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        let s = subscription.clone();
        let audit = audit.cloned();
        self.run(move |pool| async move {
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(crate::sqlite::classify)?;
            let done = sqlx::query(
                "UPDATE webhook_subscriptions SET url = ?2, events = ?3, description = ?4, enabled = ?5 WHERE id = ?1",
            )
            .bind(s.id.hyphenated().to_string())
            .bind(&s.url)
            .bind(events_text(&s.events))
            .bind(&s.description)
            .bind(i64::from(s.enabled))
            .execute(&mut *transaction)
            .await
            .map_err(crate::sqlite::classify)?;
            if done.rows_affected() != 1 {
                // Nothing changed, so nothing is recorded; the transaction rolls back on drop.
                return Ok(false);
            }
            if let Some(audit) = &audit {
                crate::audit::sqlite::append(&mut transaction, audit).await?;
            }
            transaction.commit().await.map_err(crate::sqlite::classify)?;
            Ok(true)
        })
        .await
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
        self.run(move |pool| async move {
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(crate::sqlite::classify)?;
            let done = sqlx::query(
                "UPDATE webhook_subscriptions SET position = ?2 WHERE id = ?1 AND (?3 IS NULL OR position = ?3)",
            )
            .bind(id.hyphenated().to_string())
            .bind(&position)
            .bind(&expected)
            .execute(&mut *transaction)
            .await
            .map_err(crate::sqlite::classify)?;
            if done.rows_affected() != 1 {
                // Nothing changed, so nothing is recorded; the transaction rolls back on drop.
                return Ok(false);
            }
            if let Some(audit) = &audit {
                crate::audit::sqlite::append(&mut transaction, audit).await?;
            }
            transaction.commit().await.map_err(crate::sqlite::classify)?;
            Ok(true)
        })
        .await
    }

    async fn delete_subscription(&self, id: Uuid, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
        let audit = audit.cloned();
        self.run(move |pool| async move {
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(crate::sqlite::classify)?;
            let done = sqlx::query("DELETE FROM webhook_subscriptions WHERE id = ?1")
                .bind(id.hyphenated().to_string())
                .execute(&mut *transaction)
                .await
                .map_err(crate::sqlite::classify)?;
            if done.rows_affected() != 1 {
                // Nothing changed, so nothing is recorded; the transaction rolls back on drop.
                return Ok(false);
            }
            if let Some(audit) = &audit {
                crate::audit::sqlite::append(&mut transaction, audit).await?;
            }
            transaction.commit().await.map_err(crate::sqlite::classify)?;
            Ok(true)
        })
        .await
    }

    async fn record_delivery(&self, subscription: Uuid, delivery: &Delivery) -> Result<(), StoreError> {
        let delivery = delivery.clone();
        self.run(move |pool| async move {
            let mut connection = pool.acquire().await.map_err(crate::sqlite::classify)?;
            sqlite_write_delivery(&mut connection, subscription, &delivery).await
        })
        .await
    }

    async fn settle(
        &self,
        id: Uuid,
        deliveries: &[Delivery],
        position: &str,
        expected: &str,
    ) -> Result<bool, StoreError> {
        let (deliveries, position, expected) = (deliveries.to_vec(), position.to_owned(), expected.to_owned());
        self.run(move |pool| async move {
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(crate::sqlite::classify)?;
            let moved = sqlx::query("UPDATE webhook_subscriptions SET position = ?2 WHERE id = ?1 AND position = ?3")
                .bind(id.hyphenated().to_string())
                .bind(&position)
                .bind(&expected)
                .execute(&mut *transaction)
                .await
                .map_err(crate::sqlite::classify)?;
            if moved.rows_affected() != 1 {
                // Dropped unfinished: rolled back, nothing written.
                return Ok(false);
            }
            for delivery in &deliveries {
                sqlite_write_delivery(&mut transaction, id, delivery).await?;
            }
            transaction.commit().await.map_err(crate::sqlite::classify)?;
            Ok(true)
        })
        .await
    }

    async fn delivery(&self, subscription: Uuid, shard: u16, seq: u64) -> Result<Option<Delivery>, StoreError> {
        self.run(move |pool| async move {
            let row = sqlx::query(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE subscription_id = ?1 AND shard = ?2 AND seq = ?3"
            ))
            .bind(subscription.hyphenated().to_string())
            .bind(i64::from(shard))
            .bind(as_i64(seq)?)
            .fetch_optional(&pool)
            .await
            .map_err(crate::sqlite::classify)?;
            row.as_ref().map(sqlite_delivery).transpose()
        })
        .await
    }

    async fn deliveries(
        &self,
        subscription: Uuid,
        status: Option<DeliveryStatus>,
        after: Option<(u16, u64)>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let (shard, seq) = after.map_or((-1_i64, -1_i64), |(shard, seq)| (i64::from(shard), seq as i64));
        self.run(move |pool| async move {
            let rows = sqlx::query(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
                 WHERE subscription_id = ?1 AND (?2 IS NULL OR status = ?2) AND (shard > ?3 OR (shard = ?3 AND seq > ?4))
                 ORDER BY shard, seq LIMIT ?5"
            ))
            .bind(subscription.hyphenated().to_string())
            .bind(status.map(DeliveryStatus::as_str))
            .bind(shard)
            .bind(seq)
            .bind(i64::from(limit))
            .fetch_all(&pool)
            .await
            .map_err(crate::sqlite::classify)?;
            rows.iter().map(sqlite_delivery).collect()
        })
        .await
    }
}

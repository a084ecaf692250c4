//! The audit log in Postgres: the append that runs inside a writer's transaction, and
//! `AuditStore` for the Postgres identity store.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::{
    ActorKind, AuditEntry, AuditFilter, AuditHead, AuditRecord, AuditStore, next_entry, seq_from_db, seq_to_db,
};
use crate::postgres::classify;
use crate::store::StoreError;
use crate::store::corrupt;
use crate::users::postgres::PgUserStore;

const ENTRY_COLUMNS: &str = "seq, id, at, actor_kind, actor_id, action, target_type, target_id, subject_user_id, \
                             request_id, ip, user_agent, details, prev_hash, hash";

/// Appends `record` inside the caller's transaction (see the module comment of `audit`): locks
/// the head row, inserts the entry after it, moves the head. Call it last, just before commit.
pub(crate) async fn append(connection: &mut PgConnection, record: &AuditRecord) -> Result<AuditEntry, StoreError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
        .fetch_optional(&mut *connection)
        .await
        .map_err(classify)?
        .ok_or_else(|| corrupt("the audit head row is missing"))?;
    let head = AuditHead {
        seq: seq_from_db(row.try_get("seq").map_err(classify)?)?,
        hash: row.try_get("hash").map_err(classify)?,
    };
    let entry = next_entry(&head, record)?;
    sqlx::query(&format!(
        "INSERT INTO audit_log ({ENTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    ))
    .bind(seq_to_db(entry.seq)?)
    .bind(record.id)
    .bind(record.at.as_micros())
    .bind(record.actor_kind.as_str())
    .bind(&record.actor_id)
    .bind(&record.action)
    .bind(&record.target_type)
    .bind(&record.target_id)
    .bind(record.subject_user.map(|user| user.as_uuid()))
    .bind(&record.request_id)
    .bind(&record.ip)
    .bind(&record.user_agent)
    .bind(&record.details)
    .bind(&entry.prev_hash)
    .bind(&entry.hash)
    .execute(&mut *connection)
    .await
    .map_err(classify)?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq_to_db(entry.seq)?)
        .bind(&entry.hash)
        .execute(&mut *connection)
        .await
        .map_err(classify)?;
    Ok(entry)
}

fn entry_from_row(row: &PgRow) -> Result<AuditEntry, StoreError> {
    let kind: String = row.try_get("actor_kind").map_err(classify)?;
    let subject: Option<Uuid> = row.try_get("subject_user_id").map_err(classify)?;
    Ok(AuditEntry {
        seq: seq_from_db(row.try_get("seq").map_err(classify)?)?,
        record: AuditRecord {
            id: row.try_get("id").map_err(classify)?,
            at: Timestamp::from_micros(row.try_get("at").map_err(classify)?),
            actor_kind: ActorKind::parse(&kind).ok_or_else(|| corrupt(format!("unknown actor kind {kind:?}")))?,
            actor_id: row.try_get("actor_id").map_err(classify)?,
            action: row.try_get("action").map_err(classify)?,
            target_type: row.try_get("target_type").map_err(classify)?,
            target_id: row.try_get("target_id").map_err(classify)?,
            subject_user: subject.map(UserId::from_uuid),
            request_id: row.try_get("request_id").map_err(classify)?,
            ip: row.try_get("ip").map_err(classify)?,
            user_agent: row.try_get("user_agent").map_err(classify)?,
            details: row.try_get("details").map_err(classify)?,
        },
        prev_hash: row.try_get("prev_hash").map_err(classify)?,
        hash: row.try_get("hash").map_err(classify)?,
    })
}

#[async_trait]
impl AuditStore for PgUserStore {
    async fn append(&self, record: &AuditRecord) -> Result<AuditEntry, StoreError> {
        let record = record.clone();
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            let entry = append(&mut transaction, &record).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(entry)
        })
        .await
    }

    async fn audit_page(
        &self,
        filter: &AuditFilter,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let filter = filter.clone();
        self.run(|pool| async move {
            // Each condition is switched off by a NULL parameter; Tally's connections plan each
            // execution for its actual values (`force_custom_plan`), so the index of the one
            // filter given is used.
            let rows = sqlx::query(&format!(
                "SELECT {ENTRY_COLUMNS} FROM audit_log
                 WHERE ($1::text IS NULL OR actor_id = $1)
                   AND ($2::text IS NULL OR action = $2)
                   AND ($3::text IS NULL OR starts_with(action, $3))
                   AND ($4::text IS NULL OR target_id = $4)
                   AND ($5::uuid IS NULL OR subject_user_id = $5)
                   AND ($6::bigint IS NULL OR at >= $6)
                   AND ($7::bigint IS NULL OR at < $7)
                   AND ($8::bigint IS NULL OR seq < $8)
                 ORDER BY seq DESC LIMIT $9"
            ))
            .bind(&filter.actor_id)
            .bind(&filter.action)
            .bind(&filter.action_prefix)
            .bind(&filter.target_id)
            .bind(filter.subject_user.map(|user| user.as_uuid()))
            .bind(filter.from.map(|at| at.as_micros()))
            .bind(filter.to.map(|at| at.as_micros()))
            .bind(before.map(seq_to_db).transpose()?)
            .bind(i64::from(limit))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(entry_from_row).collect()
        })
        .await
    }

    async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        self.run(|pool| async move {
            let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_optional(&pool)
                .await
                .map_err(classify)?
                .ok_or_else(|| corrupt("the audit head row is missing"))?;
            Ok(AuditHead {
                seq: seq_from_db(row.try_get("seq").map_err(classify)?)?,
                hash: row.try_get("hash").map_err(classify)?,
            })
        })
        .await
    }

    async fn audit_entries_after(&self, after: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.run(|pool| async move {
            let rows =
                sqlx::query(&format!("SELECT {ENTRY_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"))
                    .bind(seq_to_db(after)?)
                    .bind(i64::from(limit))
                    .fetch_all(&pool)
                    .await
                    .map_err(classify)?;
            rows.iter().map(entry_from_row).collect()
        })
        .await
    }
}

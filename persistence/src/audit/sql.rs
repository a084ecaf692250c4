//! The audit log on both backends, written once (`crate::sql`): the append that runs inside a
//! writer's transaction (`AppendAudit`), and `AuditStore` for both identity stores.

use async_trait::async_trait;
use tally_engine::UserId;

use super::{
    ActorKind, AuditEntry, AuditFilter, AuditHead, AuditRecord, AuditStore, next_entry, seq_from_db, seq_to_db,
};
use crate::sql::{BeginWrite, Id, IdentitySql, SqlRow, StoredUuid, impl_for_connections, run_on_backend};
use crate::store::StoreError;
use crate::store::corrupt;

const ENTRY_COLUMNS: &str = "seq, id, at, actor_kind, actor_id, action, target_type, target_id, subject_user_id, \
                             request_id, ip, user_agent, details, prev_hash, hash";

/// The listing's conditions, each switched off by a NULL parameter (sqlx gives Postgres each
/// parameter's type, so `$n IS NULL` needs no cast). `substr(action, 1, length($3)) = $3` is a
/// prefix test without LIKE's wildcards, on both backends.
const PAGE_CONDITIONS: &str = "($1 IS NULL OR actor_id = $1)
                   AND ($2 IS NULL OR action = $2)
                   AND ($3 IS NULL OR substr(action, 1, length($3)) = $3)
                   AND ($4 IS NULL OR target_id = $4)
                   AND ($5 IS NULL OR subject_user_id = $5)
                   AND ($6 IS NULL OR at >= $6)
                   AND ($7 IS NULL OR at < $7)
                   AND ($8 IS NULL OR seq < $8)";

/// Appending to the audit log inside a writer's transaction on either backend: call
/// `transaction.append_audit(&record)` last, just before commit. It reads the head row,
/// inserts the entry after it and moves the head. On Postgres the read locks the head row
/// (`FOR UPDATE`); on SQLite the transaction must have begun `IMMEDIATE` ([`BeginWrite`]), so
/// no other writer can move the head between the read and the update.
pub(crate) trait AppendAudit {
    async fn append_audit(&mut self, record: &AuditRecord) -> Result<AuditEntry, StoreError>;
}

impl_for_connections! {
    impl AppendAudit {
        async fn append_audit(&mut self, record: &AuditRecord) -> Result<AuditEntry, StoreError> {
            let row = sqlx::query(&format!("SELECT seq, hash FROM audit_head WHERE id = 1 {}", dialect::FOR_UPDATE))
                .fetch_optional(&mut *self)
                .await
                .map_err(classify)?
                .ok_or_else(|| corrupt("the audit head row is missing"))?;
            let head = AuditHead { seq: seq_from_db(row.decode("seq")?)?, hash: row.decode("hash")? };
            let entry = next_entry(&head, record)?;
            sqlx::query(&format!(
                "INSERT INTO audit_log ({ENTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                 $13, $14, $15)"
            ))
            .bind(seq_to_db(entry.seq)?)
            .bind(Id(record.id))
            .bind(record.at.as_micros())
            .bind(record.actor_kind.as_str())
            .bind(&record.actor_id)
            .bind(&record.action)
            .bind(&record.target_type)
            .bind(&record.target_id)
            .bind(record.subject_user.map(Id::from))
            .bind(&record.request_id)
            .bind(&record.ip)
            .bind(&record.user_agent)
            .bind(&record.details)
            .bind(&entry.prev_hash)
            .bind(&entry.hash)
            .execute(&mut *self)
            .await
            .map_err(classify)?;
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq_to_db(entry.seq)?)
                .bind(&entry.hash)
                .execute(&mut *self)
                .await
                .map_err(classify)?;
            Ok(entry)
        }
    }
}

fn entry_from_row(row: &impl SqlRow) -> Result<AuditEntry, StoreError> {
    let kind: String = row.decode("actor_kind")?;
    let id: StoredUuid = row.decode("id")?;
    let subject: Option<StoredUuid> = row.decode("subject_user_id")?;
    let stored_form =
        id.refusal("its id").or_else(|| subject.as_ref().and_then(|subject| subject.refusal("its subject_user_id")));
    Ok(AuditEntry {
        seq: seq_from_db(row.decode("seq")?)?,
        stored_form,
        record: AuditRecord {
            id: id.id,
            at: row.decode("at")?,
            actor_kind: ActorKind::parse(&kind).ok_or_else(|| corrupt(format!("unknown actor kind {kind:?}")))?,
            actor_id: row.decode("actor_id")?,
            action: row.decode("action")?,
            target_type: row.decode("target_type")?,
            target_id: row.decode("target_id")?,
            subject_user: subject.map(|subject| UserId::from_uuid(subject.id)),
            request_id: row.decode("request_id")?,
            ip: row.decode("ip")?,
            user_agent: row.decode("user_agent")?,
            details: row.decode("details")?,
        },
        prev_hash: row.decode("prev_hash")?,
        hash: row.decode("hash")?,
    })
}

#[async_trait]
impl<S: IdentitySql> AuditStore for S {
    async fn append(&self, record: &AuditRecord) -> Result<AuditEntry, StoreError> {
        let record = record.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let entry = transaction.append_audit(&record).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(entry)
        })
    }

    async fn audit_page(
        &self,
        filter: &AuditFilter,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let filter = filter.clone();
        run_on_backend!(self, |pool| {
            // Each condition is switched off by a NULL parameter; Tally's Postgres connections
            // plan each execution for its actual values (`force_custom_plan`), so the index of
            // the one filter given is used.
            let rows = sqlx::query(&format!(
                "SELECT {ENTRY_COLUMNS} FROM audit_log
                 WHERE {}
                 ORDER BY seq DESC LIMIT $9",
                PAGE_CONDITIONS
            ))
            .bind(&filter.actor_id)
            .bind(&filter.action)
            .bind(&filter.action_prefix)
            .bind(&filter.target_id)
            .bind(filter.subject_user.map(Id::from))
            .bind(filter.from.map(|at| at.as_micros()))
            .bind(filter.to.map(|at| at.as_micros()))
            .bind(before.map(seq_to_db).transpose()?)
            .bind(i64::from(limit))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(entry_from_row).collect()
        })
    }

    async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        run_on_backend!(self, |pool| {
            let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_optional(&pool)
                .await
                .map_err(classify)?
                .ok_or_else(|| corrupt("the audit head row is missing"))?;
            Ok(AuditHead { seq: seq_from_db(row.decode("seq")?)?, hash: row.decode("hash")? })
        })
    }

    async fn audit_entries_after(&self, after: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        run_on_backend!(self, |pool| {
            let rows =
                sqlx::query(&format!("SELECT {ENTRY_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"))
                    .bind(seq_to_db(after)?)
                    .bind(i64::from(limit))
                    .fetch_all(&pool)
                    .await
                    .map_err(classify)?;
            rows.iter().map(entry_from_row).collect()
        })
    }
}

//! `AdminUserStore` for the Postgres identity store.

use std::collections::BTreeSet;

use async_trait::async_trait;
use sqlx::{PgPool, Row};
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::admin::{AdminUserStore, UserFilter, UserSummary, like_text};
use super::postgres::{PgUserStore, USER_COLUMNS, grants_of, role_rows, user_from_row};
use super::{UserStatus, VerificationLevel};
use crate::audit::AuditRecord;
use crate::postgres::classify;
use crate::store::StoreError;

/// Whether the user exists, inside the transaction that changes them (the row lock keeps a
/// concurrent change from interleaving).
pub(crate) async fn lock_user(connection: &mut sqlx::PgConnection, id: Uuid) -> Result<bool, StoreError> {
    let found = sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(classify)?;
    Ok(found.is_some())
}

async fn change_permissions(
    pool: PgPool,
    id: Uuid,
    actions: Vec<String>,
    grant: bool,
    audit: AuditRecord,
) -> Result<bool, StoreError> {
    let mut transaction = pool.begin().await.map_err(classify)?;
    if !lock_user(&mut transaction, id).await? {
        return Ok(false);
    }
    let statement = if grant {
        "INSERT INTO user_permissions (user_id, action) SELECT $1, UNNEST($2::text[]) ON CONFLICT DO NOTHING"
    } else {
        "DELETE FROM user_permissions WHERE user_id = $1 AND action = ANY($2::text[])"
    };
    let changed = sqlx::query(statement).bind(id).bind(actions).execute(&mut *transaction).await.map_err(classify)?;
    if changed.rows_affected() > 0 {
        crate::audit::postgres::append(&mut transaction, &audit).await?;
    }
    transaction.commit().await.map_err(classify)?;
    Ok(true)
}

/// `WHERE` of a listing or count: `$1` search (a `like_text`), `$2` status, `$3` level.
const FILTER: &str = "($1::text IS NULL
        OR u.email_normalized LIKE '%' || $1 || '%' ESCAPE '\\'
        OR lower(u.first_name) LIKE $1 || '%' ESCAPE '\\'
        OR lower(u.last_name) LIKE $1 || '%' ESCAPE '\\'
        OR u.id::text LIKE $1 || '%' ESCAPE '\\')
    AND ($2::text IS NULL OR u.status = $2)
    AND ($3::text IS NULL OR u.verification_level = $3)";

/// Binds a filter's three parameters in `FILTER`'s order.
fn filter_values(filter: &UserFilter) -> (Option<String>, Option<&'static str>, Option<&'static str>) {
    (
        filter.search.as_deref().map(like_text),
        filter.status.map(UserStatus::as_str),
        filter.verification_level.map(VerificationLevel::as_str),
    )
}

#[async_trait]
impl AdminUserStore for PgUserStore {
    async fn list_users(
        &self,
        filter: &UserFilter,
        after: Option<UserId>,
        limit: u32,
        active_since: Timestamp,
    ) -> Result<Vec<UserSummary>, StoreError> {
        let (search, status, level) = filter_values(filter);
        self.run(|pool| async move {
            let mut transaction =
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(classify)?;
            let columns = USER_COLUMNS.split(", ").map(|column| format!("u.{column}")).collect::<Vec<_>>().join(", ");
            let rows = sqlx::query(&format!(
                "SELECT {columns},
                        EXISTS (SELECT 1 FROM user_totp t WHERE t.user_id = u.id AND t.enabled_at IS NOT NULL)
                            AS totp_enabled,
                        (SELECT count(*) FROM sessions s
                          WHERE s.user_id = u.id AND s.revoked_at IS NULL AND s.last_activity_at >= $6)
                            AS sessions_active
                 FROM users u
                 WHERE {FILTER} AND ($4::uuid IS NULL OR u.id > $4)
                 ORDER BY u.id LIMIT $5"
            ))
            .bind(search)
            .bind(status)
            .bind(level)
            .bind(after.map(|id| id.as_uuid()))
            .bind(i64::from(limit))
            .bind(active_since.as_micros())
            .fetch_all(&mut *transaction)
            .await
            .map_err(classify)?;
            let ids: Vec<Uuid> =
                rows.iter().map(|row| row.try_get("id")).collect::<Result<_, _>>().map_err(classify)?;
            let grants =
                sqlx::query("SELECT user_id, action FROM user_permissions WHERE user_id = ANY($1) ORDER BY action")
                    .bind(&ids)
                    .fetch_all(&mut *transaction)
                    .await
                    .map_err(classify)?;
            let roles = role_rows(&mut transaction, &ids).await?;
            transaction.commit().await.map_err(classify)?;
            rows.iter()
                .zip(&ids)
                .map(|(row, id)| {
                    let mut permissions = BTreeSet::new();
                    for grant in &grants {
                        let holder: Uuid = grant.try_get("user_id").map_err(classify)?;
                        if holder == *id {
                            permissions.insert(grant.try_get("action").map_err(classify)?);
                        }
                    }
                    let sessions: i64 = row.try_get("sessions_active").map_err(classify)?;
                    Ok(UserSummary {
                        user: user_from_row(row, permissions, grants_of(&roles, *id))?,
                        totp_enabled: row.try_get("totp_enabled").map_err(classify)?,
                        sessions_active: u64::try_from(sessions).unwrap_or(0),
                    })
                })
                .collect()
        })
        .await
    }

    async fn count_users(&self, filter: &UserFilter) -> Result<u64, StoreError> {
        let (search, status, level) = filter_values(filter);
        self.run(|pool| async move {
            let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM users u WHERE {FILTER}"))
                .bind(search)
                .bind(status)
                .bind(level)
                .fetch_one(&pool)
                .await
                .map_err(classify)?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    async fn set_user_status(&self, id: UserId, status: UserStatus, audit: &AuditRecord) -> Result<bool, StoreError> {
        let audit = audit.clone();
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            let updated = sqlx::query("UPDATE users SET status = $2 WHERE id = $1")
                .bind(id.as_uuid())
                .bind(status.as_str())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            if updated.rows_affected() != 1 {
                return Ok(false);
            }
            crate::audit::postgres::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
        .await
    }

    async fn grant_permissions(&self, id: UserId, actions: &[String], audit: &AuditRecord) -> Result<bool, StoreError> {
        let actions = actions.to_vec();
        let audit = audit.clone();
        self.run(|pool| change_permissions(pool, id.as_uuid(), actions, true, audit)).await
    }

    async fn revoke_permissions(
        &self,
        id: UserId,
        actions: &[String],
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let actions = actions.to_vec();
        let audit = audit.clone();
        self.run(|pool| change_permissions(pool, id.as_uuid(), actions, false, audit)).await
    }
}

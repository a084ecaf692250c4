//! `AdminUserStore` for the SQLite identity store.

use std::collections::BTreeSet;

use async_trait::async_trait;
use sqlx::{Row, SqlitePool};
use tally_engine::{Timestamp, UserId};

use super::admin::{AdminUserStore, UserFilter, UserSummary, like_text};
use super::sqlite::{SqliteUserStore, USER_COLUMNS, id_to_db, roles_of, user_from_row};
use super::{UserStatus, VerificationLevel};
use crate::audit::AuditRecord;
use crate::sqlite::classify;
use crate::store::StoreError;

/// Whether the user exists (inside an IMMEDIATE transaction, which holds the write lock).
pub(crate) async fn user_exists(connection: &mut sqlx::SqliteConnection, id: &str) -> Result<bool, StoreError> {
    let found = sqlx::query("SELECT 1 FROM users WHERE id = ?1")
        .bind(id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(classify)?;
    Ok(found.is_some())
}

async fn change_permissions(
    pool: SqlitePool,
    id: String,
    actions: Vec<String>,
    grant: bool,
    audit: AuditRecord,
) -> Result<bool, StoreError> {
    // IMMEDIATE: the existence check and the change happen under one write lock.
    let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
    if !user_exists(&mut transaction, &id).await? {
        return Ok(false);
    }
    let statement = if grant {
        "INSERT INTO user_permissions (user_id, action) VALUES (?1, ?2) ON CONFLICT DO NOTHING"
    } else {
        "DELETE FROM user_permissions WHERE user_id = ?1 AND action = ?2"
    };
    let mut changed = 0;
    for action in &actions {
        changed += sqlx::query(statement)
            .bind(&id)
            .bind(action)
            .execute(&mut *transaction)
            .await
            .map_err(classify)?
            .rows_affected();
    }
    if changed > 0 {
        crate::audit::sqlite::append(&mut transaction, &audit).await?;
    }
    transaction.commit().await.map_err(classify)?;
    Ok(true)
}

/// `WHERE` of a listing or count: `?1` search (a `like_text`), `?2` status, `?3` level.
/// SQLite's `lower()` and `LIKE` fold ASCII letters only; the search text was lowercased with
/// full Unicode rules, so a non-ASCII capital in a name matches only as written lowercase.
const FILTER: &str = "(?1 IS NULL
        OR email_normalized LIKE '%' || ?1 || '%' ESCAPE '\\'
        OR lower(first_name) LIKE ?1 || '%' ESCAPE '\\'
        OR lower(last_name) LIKE ?1 || '%' ESCAPE '\\'
        OR id LIKE ?1 || '%' ESCAPE '\\')
    AND (?2 IS NULL OR status = ?2)
    AND (?3 IS NULL OR verification_level = ?3)";

fn filter_values(filter: &UserFilter) -> (Option<String>, Option<&'static str>, Option<&'static str>) {
    (
        filter.search.as_deref().map(like_text),
        filter.status.map(UserStatus::as_str),
        filter.verification_level.map(VerificationLevel::as_str),
    )
}

#[async_trait]
impl AdminUserStore for SqliteUserStore {
    async fn list_users(
        &self,
        filter: &UserFilter,
        after: Option<UserId>,
        limit: u32,
        active_since: Timestamp,
    ) -> Result<Vec<UserSummary>, StoreError> {
        let (search, status, level) = filter_values(filter);
        self.run(|pool| async move {
            // One read transaction: the users, permissions and roles come from one snapshot.
            let mut transaction = pool.begin().await.map_err(classify)?;
            let rows = sqlx::query(&format!(
                "SELECT {USER_COLUMNS},
                        EXISTS (SELECT 1 FROM user_totp t WHERE t.user_id = users.id AND t.enabled_at IS NOT NULL)
                            AS totp_enabled,
                        (SELECT count(*) FROM sessions s
                          WHERE s.user_id = users.id AND s.revoked_at IS NULL AND s.last_activity_at >= ?6)
                            AS sessions_active
                 FROM users
                 WHERE {FILTER} AND (?4 IS NULL OR id > ?4)
                 ORDER BY id LIMIT ?5"
            ))
            .bind(search)
            .bind(status)
            .bind(level)
            .bind(after.map(|id| id_to_db(id.as_uuid())))
            .bind(i64::from(limit))
            .bind(active_since.as_micros())
            .fetch_all(&mut *transaction)
            .await
            .map_err(classify)?;
            let mut users = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: String = row.try_get("id").map_err(classify)?;
                let permissions: Vec<String> =
                    sqlx::query_scalar("SELECT action FROM user_permissions WHERE user_id = ?1 ORDER BY action")
                        .bind(&id)
                        .fetch_all(&mut *transaction)
                        .await
                        .map_err(classify)?;
                let roles = roles_of(&mut transaction, &id).await?;
                let sessions: i64 = row.try_get("sessions_active").map_err(classify)?;
                users.push(UserSummary {
                    user: user_from_row(row, permissions.into_iter().collect::<BTreeSet<_>>(), roles)?,
                    totp_enabled: row.try_get("totp_enabled").map_err(classify)?,
                    sessions_active: u64::try_from(sessions).unwrap_or(0),
                });
            }
            transaction.commit().await.map_err(classify)?;
            Ok(users)
        })
        .await
    }

    async fn count_users(&self, filter: &UserFilter) -> Result<u64, StoreError> {
        let (search, status, level) = filter_values(filter);
        self.run(|pool| async move {
            let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM users WHERE {FILTER}"))
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
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            let updated = sqlx::query("UPDATE users SET status = ?2 WHERE id = ?1")
                .bind(id_to_db(id.as_uuid()))
                .bind(status.as_str())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            if updated.rows_affected() != 1 {
                return Ok(false);
            }
            crate::audit::sqlite::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
        .await
    }

    async fn grant_permissions(&self, id: UserId, actions: &[String], audit: &AuditRecord) -> Result<bool, StoreError> {
        let actions = actions.to_vec();
        let audit = audit.clone();
        self.run(|pool| change_permissions(pool, id_to_db(id.as_uuid()), actions, true, audit)).await
    }

    async fn revoke_permissions(
        &self,
        id: UserId,
        actions: &[String],
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let actions = actions.to_vec();
        let audit = audit.clone();
        self.run(|pool| change_permissions(pool, id_to_db(id.as_uuid()), actions, false, audit)).await
    }
}

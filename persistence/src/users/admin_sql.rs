//! `AdminUserStore` for both identity stores, written once (`crate::sql`).

use async_trait::async_trait;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::admin::{AdminUserStore, UserFilter, UserSummary, like_text};
use super::sql::{USER_COLUMNS, UserQueries, user_from_row};
use super::{UserStatus, VerificationLevel};
use crate::audit::{AppendAudit, AuditRecord};
use crate::sql::{BeginSnapshot, BeginWrite, Id, IdentitySql, SqlRow, SqlStore, Texts, run_on_backend};
use crate::store::StoreError;

/// `WHERE` of a listing or count: `$1` search (a `like_text`), `$2` status, `$3` level. On
/// SQLite, `lower()` and `LIKE` fold ASCII letters only; the search text was lowercased with
/// full Unicode rules, so there a non-ASCII capital in a name matches only as written
/// lowercase.
const FILTER: &str = "($1 IS NULL
        OR u.email_normalized LIKE '%' || $1 || '%' ESCAPE '\\'
        OR lower(u.first_name) LIKE $1 || '%' ESCAPE '\\'
        OR lower(u.last_name) LIKE $1 || '%' ESCAPE '\\'
        OR CAST(u.id AS TEXT) LIKE $1 || '%' ESCAPE '\\')
    AND ($2 IS NULL OR u.status = $2)
    AND ($3 IS NULL OR u.verification_level = $3)";

/// Binds a filter's three parameters in `FILTER`'s order.
fn filter_values(filter: &UserFilter) -> (Option<String>, Option<&'static str>, Option<&'static str>) {
    (
        filter.search.as_deref().map(like_text),
        filter.status.map(UserStatus::as_str),
        filter.verification_level.map(VerificationLevel::as_str),
    )
}

/// Grants or revokes `actions`; false if the user does not exist. The audit entry is written
/// only if something changed.
async fn change_permissions(
    store: &impl SqlStore,
    id: UserId,
    actions: Vec<String>,
    grant: bool,
    audit: AuditRecord,
) -> Result<bool, StoreError> {
    run_on_backend!(store, |pool| {
        let mut transaction = pool.begin_write().await.map_err(classify)?;
        if !transaction.lock_user(id.as_uuid()).await? {
            return Ok(false);
        }
        // `WHERE true` keeps SQLite from reading `ON CONFLICT` as a join constraint.
        let statement = if grant {
            format!(
                "INSERT INTO user_permissions (user_id, action) SELECT $1, value FROM {} WHERE true
                 ON CONFLICT DO NOTHING",
                dialect::each(2)
            )
        } else {
            format!(
                "DELETE FROM user_permissions WHERE user_id = $1 AND action IN (SELECT value FROM {})",
                dialect::each(2)
            )
        };
        let changed = sqlx::query(&statement)
            .bind(Id::from(id))
            .bind(Texts(actions))
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
        if changed.rows_affected() > 0 {
            transaction.append_audit(&audit).await?;
        }
        transaction.commit().await.map_err(classify)?;
        Ok(true)
    })
}

#[async_trait]
impl<S: IdentitySql> AdminUserStore for S {
    async fn list_users(
        &self,
        filter: &UserFilter,
        after: Option<UserId>,
        limit: u32,
        active_since: Timestamp,
    ) -> Result<Vec<UserSummary>, StoreError> {
        let (search, status, level) = filter_values(filter);
        run_on_backend!(self, |pool| {
            // One snapshot: the users, permissions and roles are read as of one moment.
            let mut transaction = pool.begin_snapshot().await.map_err(classify)?;
            let columns = USER_COLUMNS.split(", ").map(|column| format!("u.{column}")).collect::<Vec<_>>().join(", ");
            let rows = sqlx::query(&format!(
                "SELECT {columns},
                        EXISTS (SELECT 1 FROM user_totp t WHERE t.user_id = u.id AND t.enabled_at IS NOT NULL)
                            AS totp_enabled,
                        (SELECT count(*) FROM sessions s
                          WHERE s.user_id = u.id AND s.revoked_at IS NULL AND s.last_activity_at >= $6)
                            AS sessions_active
                 FROM users u
                 WHERE {FILTER} AND ($4 IS NULL OR u.id > $4)
                 ORDER BY u.id LIMIT $5"
            ))
            .bind(search)
            .bind(status)
            .bind(level)
            .bind(after.map(Id::from))
            .bind(i64::from(limit))
            .bind(active_since.as_micros())
            .fetch_all(&mut *transaction)
            .await
            .map_err(classify)?;
            let ids = rows.iter().map(|row| row.decode("id")).collect::<Result<Vec<Uuid>, _>>()?;
            let mut grants = transaction.grants_of(&ids).await?;
            transaction.commit().await.map_err(classify)?;
            rows.iter()
                .zip(&ids)
                .map(|(row, id)| {
                    let (permissions, roles) = grants.remove(id).unwrap_or_default();
                    let sessions: i64 = row.decode("sessions_active")?;
                    Ok(UserSummary {
                        user: user_from_row(row, permissions, roles)?,
                        totp_enabled: row.decode("totp_enabled")?,
                        sessions_active: u64::try_from(sessions).unwrap_or(0),
                    })
                })
                .collect()
        })
    }

    async fn count_users(&self, filter: &UserFilter) -> Result<u64, StoreError> {
        let (search, status, level) = filter_values(filter);
        run_on_backend!(self, |pool| {
            let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM users u WHERE {FILTER}"))
                .bind(search)
                .bind(status)
                .bind(level)
                .fetch_one(&pool)
                .await
                .map_err(classify)?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    async fn set_user_status(&self, id: UserId, status: UserStatus, audit: &AuditRecord) -> Result<bool, StoreError> {
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let updated = sqlx::query("UPDATE users SET status = $2 WHERE id = $1")
                .bind(Id::from(id))
                .bind(status.as_str())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            if updated.rows_affected() != 1 {
                return Ok(false);
            }
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
    }

    async fn grant_permissions(&self, id: UserId, actions: &[String], audit: &AuditRecord) -> Result<bool, StoreError> {
        change_permissions(self, id, actions.to_vec(), true, audit.clone()).await
    }

    async fn revoke_permissions(
        &self,
        id: UserId,
        actions: &[String],
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        change_permissions(self, id, actions.to_vec(), false, audit.clone()).await
    }
}

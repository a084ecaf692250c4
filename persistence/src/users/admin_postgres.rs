//! `AdminUserStore` for the Postgres identity store.

use async_trait::async_trait;
use sqlx::{PgPool, Row};
use tally_engine::UserId;
use uuid::Uuid;

use super::admin::AdminUserStore;
use super::postgres::{PgUserStore, USER_COLUMNS, classify, user_from_row};
use super::{User, UserStatus};
use crate::store::StoreError;

/// Whether the user exists, inside the transaction that changes them (the row lock keeps a
/// concurrent change from interleaving).
async fn lock_user(transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>, id: Uuid) -> Result<bool, StoreError> {
    let found = sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut **transaction)
        .await
        .map_err(classify)?;
    Ok(found.is_some())
}

async fn change_permissions(pool: PgPool, id: Uuid, actions: Vec<String>, grant: bool) -> Result<bool, StoreError> {
    let mut transaction = pool.begin().await.map_err(classify)?;
    if !lock_user(&mut transaction, id).await? {
        return Ok(false);
    }
    let statement = if grant {
        "INSERT INTO user_permissions (user_id, action) SELECT $1, UNNEST($2::text[]) ON CONFLICT DO NOTHING"
    } else {
        "DELETE FROM user_permissions WHERE user_id = $1 AND action = ANY($2::text[])"
    };
    sqlx::query(statement).bind(id).bind(actions).execute(&mut *transaction).await.map_err(classify)?;
    transaction.commit().await.map_err(classify)?;
    Ok(true)
}

#[async_trait]
impl AdminUserStore for PgUserStore {
    async fn list_users(
        &self,
        after: Option<UserId>,
        status: Option<UserStatus>,
        limit: u32,
    ) -> Result<Vec<User>, StoreError> {
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            let rows = sqlx::query(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE ($1::uuid IS NULL OR id > $1) AND ($2::text IS NULL OR status = $2)
                 ORDER BY id LIMIT $3"
            ))
            .bind(after.map(|id| id.as_uuid()))
            .bind(status.map(UserStatus::as_str))
            .bind(i64::from(limit))
            .fetch_all(&mut *transaction)
            .await
            .map_err(classify)?;
            let ids: Vec<Uuid> = rows.iter().map(|row| row.try_get("id")).collect::<Result<_, _>>().map_err(classify)?;
            let grants = sqlx::query("SELECT user_id, action FROM user_permissions WHERE user_id = ANY($1) ORDER BY action")
                .bind(&ids)
                .fetch_all(&mut *transaction)
                .await
                .map_err(classify)?;
            transaction.commit().await.map_err(classify)?;
            rows.iter()
                .zip(&ids)
                .map(|(row, id)| {
                    let mut permissions = std::collections::BTreeSet::new();
                    for grant in &grants {
                        let holder: Uuid = grant.try_get("user_id").map_err(classify)?;
                        if holder == *id {
                            permissions.insert(grant.try_get("action").map_err(classify)?);
                        }
                    }
                    user_from_row(row, permissions)
                })
                .collect()
        })
        .await
    }

    async fn set_user_status(&self, id: UserId, status: UserStatus) -> Result<bool, StoreError> {
        self.run(|pool| async move {
            let updated = sqlx::query("UPDATE users SET status = $2 WHERE id = $1")
                .bind(id.as_uuid())
                .bind(status.as_str())
                .execute(&pool)
                .await
                .map_err(classify)?;
            Ok(updated.rows_affected() == 1)
        })
        .await
    }

    async fn grant_permissions(&self, id: UserId, actions: &[String]) -> Result<bool, StoreError> {
        let actions = actions.to_vec();
        self.run(|pool| change_permissions(pool, id.as_uuid(), actions, true)).await
    }

    async fn revoke_permissions(&self, id: UserId, actions: &[String]) -> Result<bool, StoreError> {
        let actions = actions.to_vec();
        self.run(|pool| change_permissions(pool, id.as_uuid(), actions, false)).await
    }
}

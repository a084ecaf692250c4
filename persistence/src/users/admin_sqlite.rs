//! `AdminUserStore` for the SQLite identity store.

use std::collections::BTreeSet;

use async_trait::async_trait;
use sqlx::SqlitePool;
use tally_engine::UserId;

use super::admin::AdminUserStore;
use super::sqlite::{SqliteUserStore, USER_COLUMNS, classify, id_to_db, user_from_row};
use super::{User, UserStatus};
use crate::store::StoreError;

async fn change_permissions(
    pool: SqlitePool,
    id: String,
    actions: Vec<String>,
    grant: bool,
) -> Result<bool, StoreError> {
    // IMMEDIATE: the existence check and the change happen under one write lock.
    let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
    let found = sqlx::query("SELECT 1 FROM users WHERE id = ?1")
        .bind(&id)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(classify)?;
    if found.is_none() {
        return Ok(false);
    }
    let statement = if grant {
        "INSERT INTO user_permissions (user_id, action) VALUES (?1, ?2) ON CONFLICT DO NOTHING"
    } else {
        "DELETE FROM user_permissions WHERE user_id = ?1 AND action = ?2"
    };
    for action in &actions {
        sqlx::query(statement).bind(&id).bind(action).execute(&mut *transaction).await.map_err(classify)?;
    }
    transaction.commit().await.map_err(classify)?;
    Ok(true)
}

#[async_trait]
impl AdminUserStore for SqliteUserStore {
    async fn list_users(
        &self,
        after: Option<UserId>,
        status: Option<UserStatus>,
        limit: u32,
    ) -> Result<Vec<User>, StoreError> {
        self.run(|pool| async move {
            // One read transaction: the users and their permissions come from one snapshot.
            let mut transaction = pool.begin().await.map_err(classify)?;
            let rows = sqlx::query(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE (?1 IS NULL OR id > ?1) AND (?2 IS NULL OR status = ?2)
                 ORDER BY id LIMIT ?3"
            ))
            .bind(after.map(|id| id_to_db(id.as_uuid())))
            .bind(status.map(UserStatus::as_str))
            .bind(i64::from(limit))
            .fetch_all(&mut *transaction)
            .await
            .map_err(classify)?;
            let mut users = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: String = sqlx::Row::try_get(row, "id").map_err(classify)?;
                let permissions: Vec<String> =
                    sqlx::query_scalar("SELECT action FROM user_permissions WHERE user_id = ?1 ORDER BY action")
                        .bind(id)
                        .fetch_all(&mut *transaction)
                        .await
                        .map_err(classify)?;
                users.push(user_from_row(row, permissions.into_iter().collect::<BTreeSet<_>>())?);
            }
            transaction.commit().await.map_err(classify)?;
            Ok(users)
        })
        .await
    }

    async fn set_user_status(&self, id: UserId, status: UserStatus) -> Result<bool, StoreError> {
        self.run(|pool| async move {
            let updated = sqlx::query("UPDATE users SET status = ?2 WHERE id = ?1")
                .bind(id_to_db(id.as_uuid()))
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
        self.run(|pool| change_permissions(pool, id_to_db(id.as_uuid()), actions, true)).await
    }

    async fn revoke_permissions(&self, id: UserId, actions: &[String]) -> Result<bool, StoreError> {
        let actions = actions.to_vec();
        self.run(|pool| change_permissions(pool, id_to_db(id.as_uuid()), actions, false)).await
    }
}

//! `SessionStore` for the SQLite identity store, on its pool.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::{SessionRecord, SessionStore};
use crate::sqlite::classify;
use crate::store::StoreError;
use crate::users::sqlite::{SqliteUserStore, id_to_db, uuid};

const SESSION_COLUMNS: &str =
    "id, user_id, client_ip, user_agent, created_at, last_activity_at, revoked_at, revoked_reason";

fn session_from_row(row: &SqliteRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: uuid(row, "id")?,
        user_id: UserId::from_uuid(uuid(row, "user_id")?),
        client_ip: row.try_get("client_ip").map_err(classify)?,
        user_agent: row.try_get("user_agent").map_err(classify)?,
        created_at: Timestamp::from_micros(row.try_get("created_at").map_err(classify)?),
        last_activity_at: Timestamp::from_micros(row.try_get("last_activity_at").map_err(classify)?),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at").map_err(classify)?.map(Timestamp::from_micros),
        revoked_reason: row.try_get("revoked_reason").map_err(classify)?,
    })
}

#[async_trait]
impl SessionStore for SqliteUserStore {
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let session = session.clone();
        self.run(|pool| async move {
            sqlx::query(
                "INSERT INTO sessions (id, user_id, client_ip, user_agent, created_at, last_activity_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(id_to_db(session.id))
            .bind(id_to_db(session.user_id.as_uuid()))
            .bind(&session.client_ip)
            .bind(&session.user_agent)
            .bind(session.created_at.as_micros())
            .bind(session.last_activity_at.as_micros())
            .execute(&pool)
            .await
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError> {
        self.run(|pool| async move {
            let row = sqlx::query(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"))
                .bind(id_to_db(id))
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
            row.as_ref().map(session_from_row).transpose()
        })
        .await
    }

    async fn live_sessions_of(&self, user: UserId) -> Result<Vec<SessionRecord>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL
                 ORDER BY created_at, id"
            ))
            .bind(id_to_db(user.as_uuid()))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(session_from_row).collect()
        })
        .await
    }

    async fn revoke_session(&self, id: Uuid, at: Timestamp, reason: &str) -> Result<bool, StoreError> {
        let reason = reason.to_owned();
        self.run(|pool| async move {
            // IMMEDIATE takes the write lock at once instead of upgrading a read lock mid-way.
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            let revoked = sqlx::query(
                "UPDATE sessions SET revoked_at = ?2, revoked_reason = ?3 WHERE id = ?1 AND revoked_at IS NULL",
            )
            .bind(id_to_db(id))
            .bind(at.as_micros())
            .bind(&reason)
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            sqlx::query("UPDATE refresh_tokens SET revoked_at = ?2 WHERE family_id = ?1 AND revoked_at IS NULL")
                .bind(id_to_db(id))
                .bind(at.as_micros())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            transaction.commit().await.map_err(classify)?;
            Ok(revoked.rows_affected() == 1)
        })
        .await
    }

    async fn record_activity(&self, id: Uuid, at: Timestamp) -> Result<(), StoreError> {
        self.run(|pool| async move {
            sqlx::query("UPDATE sessions SET last_activity_at = MAX(last_activity_at, ?2) WHERE id = ?1")
                .bind(id_to_db(id))
                .bind(at.as_micros())
                .execute(&pool)
                .await
                .map_err(classify)?;
            Ok(())
        })
        .await
    }
}

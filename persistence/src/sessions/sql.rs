//! `SessionStore` for both identity stores, written once (`crate::sql`).

use async_trait::async_trait;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::{SessionRecord, SessionStore};
use crate::sql::{BeginWrite, Id, IdentitySql, SqlRow, run_on_backend};
use crate::store::StoreError;

const SESSION_COLUMNS: &str =
    "id, user_id, client_ip, user_agent, created_at, last_activity_at, revoked_at, revoked_reason";

fn session_from_row(row: &impl SqlRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: row.decode("id")?,
        user_id: row.decode("user_id")?,
        client_ip: row.decode("client_ip")?,
        user_agent: row.decode("user_agent")?,
        created_at: row.decode("created_at")?,
        last_activity_at: row.decode("last_activity_at")?,
        revoked_at: row.decode("revoked_at")?,
        revoked_reason: row.decode("revoked_reason")?,
    })
}

#[async_trait]
impl<S: IdentitySql> SessionStore for S {
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let session = session.clone();
        run_on_backend!(self, |pool| {
            sqlx::query(
                "INSERT INTO sessions (id, user_id, client_ip, user_agent, created_at, last_activity_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(Id(session.id))
            .bind(Id::from(session.user_id))
            .bind(&session.client_ip)
            .bind(&session.user_agent)
            .bind(session.created_at.as_micros())
            .bind(session.last_activity_at.as_micros())
            .execute(&pool)
            .await
            .map_err(classify)?;
            Ok(())
        })
    }

    async fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError> {
        run_on_backend!(self, |pool| {
            let row = sqlx::query(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"))
                .bind(Id(id))
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
            row.as_ref().map(session_from_row).transpose()
        })
    }

    async fn live_sessions_of(&self, user: UserId) -> Result<Vec<SessionRecord>, StoreError> {
        run_on_backend!(self, |pool| {
            let rows = sqlx::query(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND revoked_at IS NULL
                 ORDER BY created_at, id"
            ))
            .bind(Id::from(user))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(session_from_row).collect()
        })
    }

    async fn revoke_session(&self, id: Uuid, at: Timestamp, reason: &str) -> Result<bool, StoreError> {
        let reason = reason.to_owned();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let revoked = sqlx::query(
                "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(Id(id))
            .bind(at.as_micros())
            .bind(&reason)
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
                .bind(Id(id))
                .bind(at.as_micros())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            transaction.commit().await.map_err(classify)?;
            Ok(revoked.rows_affected() == 1)
        })
    }

    async fn record_activity(&self, id: Uuid, at: Timestamp) -> Result<(), StoreError> {
        run_on_backend!(self, |pool| {
            sqlx::query(&format!(
                "UPDATE sessions SET last_activity_at = {}(last_activity_at, $2) WHERE id = $1",
                dialect::GREATEST
            ))
            .bind(Id(id))
            .bind(at.as_micros())
            .execute(&pool)
            .await
            .map_err(classify)?;
            Ok(())
        })
    }
}

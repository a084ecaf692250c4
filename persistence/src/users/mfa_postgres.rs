//! `MfaStore` for Postgres, on the `PgUserStore`'s pool.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::mfa::{ApiKeyRecord, MfaStore, TotpRecord, scopes_from_db, scopes_to_db};
use super::postgres::PgUserStore;
use crate::audit::AuditRecord;
use crate::postgres::classify;
use crate::store::StoreError;

fn api_key_from_row(row: &PgRow) -> Result<ApiKeyRecord, StoreError> {
    let scopes: String = row.try_get("scopes").map_err(classify)?;
    Ok(ApiKeyRecord {
        id: row.try_get("id").map_err(classify)?,
        user_id: UserId::from_uuid(row.try_get("user_id").map_err(classify)?),
        name: row.try_get("name").map_err(classify)?,
        key_hash: row.try_get("key_hash").map_err(classify)?,
        scopes: scopes_from_db(&scopes),
        created_at: Timestamp::from_micros(row.try_get("created_at").map_err(classify)?),
    })
}

const API_KEY_COLUMNS: &str = "id, user_id, name, key_hash, scopes, created_at";

#[async_trait]
impl MfaStore for PgUserStore {
    async fn totp(&self, user: UserId) -> Result<Option<TotpRecord>, StoreError> {
        self.run(move |pool| async move {
            let row = sqlx::query("SELECT secret, enabled_at, last_used_step FROM user_totp WHERE user_id = $1")
                .bind(user.as_uuid())
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
            let Some(row) = row else { return Ok(None) };
            let enabled_at: Option<i64> = row.try_get("enabled_at").map_err(classify)?;
            Ok(Some(TotpRecord {
                secret: row.try_get("secret").map_err(classify)?,
                enabled: enabled_at.is_some(),
                last_used_step: row.try_get("last_used_step").map_err(classify)?,
            }))
        })
        .await
    }

    async fn begin_totp(
        &self,
        user: UserId,
        secret: &[u8],
        backup_code_hashes: &[String],
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let secret = secret.to_vec();
        let hashes = backup_code_hashes.to_vec();
        self.run(move |pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            // The upsert leaves an enabled secret alone; zero rows then means "already on".
            let stored = sqlx::query(
                "INSERT INTO user_totp (user_id, secret, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id) DO UPDATE SET secret = EXCLUDED.secret, created_at = EXCLUDED.created_at,
                     last_used_step = NULL
                 WHERE user_totp.enabled_at IS NULL",
            )
            .bind(user.as_uuid())
            .bind(&secret)
            .bind(now.as_micros())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if stored.rows_affected() != 1 {
                return Ok(false);
            }
            sqlx::query("DELETE FROM user_backup_codes WHERE user_id = $1")
                .bind(user.as_uuid())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            sqlx::query("INSERT INTO user_backup_codes (user_id, code_hash) SELECT $1, UNNEST($2::text[])")
                .bind(user.as_uuid())
                .bind(&hashes)
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
        .await
    }

    async fn enable_totp(
        &self,
        user: UserId,
        secret: &[u8],
        step: i64,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let secret = secret.to_vec();
        let audit = audit.clone();
        self.run(move |pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            let updated = sqlx::query(
                "UPDATE user_totp SET enabled_at = $3, last_used_step = $4
                 WHERE user_id = $1 AND secret = $2 AND enabled_at IS NULL",
            )
            .bind(user.as_uuid())
            .bind(&secret)
            .bind(now.as_micros())
            .bind(step)
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

    async fn disable_totp(&self, user: UserId, audit: &AuditRecord) -> Result<bool, StoreError> {
        let audit = audit.clone();
        self.run(move |pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            let deleted = sqlx::query("DELETE FROM user_totp WHERE user_id = $1 AND enabled_at IS NOT NULL")
                .bind(user.as_uuid())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            if deleted.rows_affected() != 1 {
                return Ok(false);
            }
            sqlx::query("DELETE FROM user_backup_codes WHERE user_id = $1")
                .bind(user.as_uuid())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            crate::audit::postgres::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
        .await
    }

    async fn replace_backup_codes(
        &self,
        user: UserId,
        backup_code_hashes: &[String],
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let hashes = backup_code_hashes.to_vec();
        let audit = audit.clone();
        self.run(move |pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            // The TOTP row's lock keeps a concurrent disable from leaving codes without TOTP.
            let enabled =
                sqlx::query("SELECT 1 FROM user_totp WHERE user_id = $1 AND enabled_at IS NOT NULL FOR UPDATE")
                    .bind(user.as_uuid())
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(classify)?;
            if enabled.is_none() {
                return Ok(false);
            }
            sqlx::query("DELETE FROM user_backup_codes WHERE user_id = $1")
                .bind(user.as_uuid())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            sqlx::query("INSERT INTO user_backup_codes (user_id, code_hash) SELECT $1, UNNEST($2::text[])")
                .bind(user.as_uuid())
                .bind(&hashes)
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            crate::audit::postgres::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
        .await
    }

    async fn backup_codes_remaining(&self, user: UserId) -> Result<u64, StoreError> {
        self.run(move |pool| async move {
            let count: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM user_backup_codes WHERE user_id = $1 AND used_at IS NULL")
                    .bind(user.as_uuid())
                    .fetch_one(&pool)
                    .await
                    .map_err(classify)?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    async fn use_totp_step(&self, user: UserId, step: i64) -> Result<bool, StoreError> {
        self.run(move |pool| async move {
            let updated = sqlx::query(
                "UPDATE user_totp SET last_used_step = $2
                 WHERE user_id = $1 AND enabled_at IS NOT NULL AND (last_used_step IS NULL OR last_used_step < $2)",
            )
            .bind(user.as_uuid())
            .bind(step)
            .execute(&pool)
            .await
            .map_err(classify)?;
            Ok(updated.rows_affected() == 1)
        })
        .await
    }

    async fn use_backup_code(&self, user: UserId, code_hash: &str, now: Timestamp) -> Result<bool, StoreError> {
        let code_hash = code_hash.to_owned();
        self.run(move |pool| async move {
            let updated = sqlx::query(
                "UPDATE user_backup_codes SET used_at = $3
                 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL
                   AND EXISTS (SELECT 1 FROM user_totp WHERE user_id = $1 AND enabled_at IS NOT NULL)",
            )
            .bind(user.as_uuid())
            .bind(&code_hash)
            .bind(now.as_micros())
            .execute(&pool)
            .await
            .map_err(classify)?;
            Ok(updated.rows_affected() == 1)
        })
        .await
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord, audit: &AuditRecord) -> Result<(), StoreError> {
        let key = key.clone();
        let audit = audit.clone();
        self.run(move |pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            sqlx::query(
                "INSERT INTO api_keys (id, user_id, name, key_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(key.id)
            .bind(key.user_id.as_uuid())
            .bind(&key.name)
            .bind(&key.key_hash)
            .bind(scopes_to_db(&key.scopes))
            .bind(key.created_at.as_micros())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            crate::audit::postgres::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn api_keys_of(&self, user: UserId, limit: u32) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.run(move |pool| async move {
            let rows = sqlx::query(&format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at, id LIMIT $2"
            ))
            .bind(user.as_uuid())
            .bind(i64::from(limit))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(api_key_from_row).collect()
        })
        .await
    }

    async fn count_api_keys(&self, user: UserId) -> Result<u64, StoreError> {
        self.run(move |pool| async move {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE user_id = $1")
                .bind(user.as_uuid())
                .fetch_one(&pool)
                .await
                .map_err(classify)?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let key_hash = key_hash.to_owned();
        self.run(move |pool| async move {
            let row = sqlx::query(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"))
                .bind(&key_hash)
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
            row.as_ref().map(api_key_from_row).transpose()
        })
        .await
    }

    async fn delete_api_key(&self, user: UserId, id: Uuid, audit: &AuditRecord) -> Result<Option<String>, StoreError> {
        let audit = audit.clone();
        self.run(move |pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            let hash: Option<String> =
                sqlx::query_scalar("DELETE FROM api_keys WHERE id = $1 AND user_id = $2 RETURNING key_hash")
                    .bind(id)
                    .bind(user.as_uuid())
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(classify)?;
            if hash.is_none() {
                return Ok(None);
            }
            crate::audit::postgres::append(&mut transaction, &audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(hash)
        })
        .await
    }
}

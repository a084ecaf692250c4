//! `MfaStore` for both identity stores, written once (`crate::sql`). On SQLite each statement
//! that must be atomic is one statement (SQLite runs it under its write lock), or one `BEGIN
//! IMMEDIATE` transaction.

use async_trait::async_trait;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::mfa::{ApiKeyRecord, MfaStore, TotpRecord, scopes_from_db, scopes_to_db};
use crate::audit::{AppendAudit, AuditRecord};
use crate::sql::{BeginWrite, Id, IdentitySql, SqlRow, Texts, impl_for_connections, run_on_backend};
use crate::store::StoreError;

fn api_key_from_row(row: &impl SqlRow) -> Result<ApiKeyRecord, StoreError> {
    let scopes: String = row.decode("scopes")?;
    Ok(ApiKeyRecord {
        id: row.decode("id")?,
        user_id: row.decode("user_id")?,
        name: row.decode("name")?,
        key_hash: row.decode("key_hash")?,
        scopes: scopes_from_db(&scopes),
        created_at: row.decode("created_at")?,
    })
}

const API_KEY_COLUMNS: &str = "id, user_id, name, key_hash, scopes, created_at";

/// Inserting a user's backup codes, in one statement, inside the caller's transaction.
trait InsertBackupCodes {
    async fn insert_backup_codes(&mut self, user: UserId, hashes: &[String]) -> Result<(), StoreError>;
}

impl_for_connections! {
    impl InsertBackupCodes {
        async fn insert_backup_codes(&mut self, user: UserId, hashes: &[String]) -> Result<(), StoreError> {
            sqlx::query(&format!(
                "INSERT INTO user_backup_codes (user_id, code_hash) SELECT $1, value FROM {}",
                dialect::each(2)
            ))
            .bind(Id::from(user))
            .bind(Texts(hashes.to_vec()))
            .execute(&mut *self)
            .await
            .map_err(classify)?;
            Ok(())
        }
    }
}

#[async_trait]
impl<S: IdentitySql> MfaStore for S {
    async fn totp(&self, user: UserId) -> Result<Option<TotpRecord>, StoreError> {
        run_on_backend!(self, |pool| {
            let row = sqlx::query("SELECT secret, enabled_at, last_used_step FROM user_totp WHERE user_id = $1")
                .bind(Id::from(user))
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
            let Some(row) = row else { return Ok(None) };
            let enabled_at: Option<i64> = row.decode("enabled_at")?;
            Ok(Some(TotpRecord {
                secret: row.decode("secret")?,
                enabled: enabled_at.is_some(),
                last_used_step: row.decode("last_used_step")?,
            }))
        })
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
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            // The upsert leaves an enabled secret alone; zero rows then means "already on".
            let stored = sqlx::query(
                "INSERT INTO user_totp (user_id, secret, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id) DO UPDATE SET secret = EXCLUDED.secret, created_at = EXCLUDED.created_at,
                     last_used_step = NULL
                 WHERE user_totp.enabled_at IS NULL",
            )
            .bind(Id::from(user))
            .bind(&secret)
            .bind(now.as_micros())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if stored.rows_affected() != 1 {
                return Ok(false);
            }
            sqlx::query("DELETE FROM user_backup_codes WHERE user_id = $1")
                .bind(Id::from(user))
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            transaction.insert_backup_codes(user, &hashes).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
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
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let updated = sqlx::query(
                "UPDATE user_totp SET enabled_at = $3, last_used_step = $4
                 WHERE user_id = $1 AND secret = $2 AND enabled_at IS NULL",
            )
            .bind(Id::from(user))
            .bind(&secret)
            .bind(now.as_micros())
            .bind(step)
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

    async fn disable_totp(&self, user: UserId, audit: &AuditRecord) -> Result<bool, StoreError> {
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let deleted = sqlx::query("DELETE FROM user_totp WHERE user_id = $1 AND enabled_at IS NOT NULL")
                .bind(Id::from(user))
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            if deleted.rows_affected() != 1 {
                return Ok(false);
            }
            sqlx::query("DELETE FROM user_backup_codes WHERE user_id = $1")
                .bind(Id::from(user))
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
    }

    async fn replace_backup_codes(
        &self,
        user: UserId,
        backup_code_hashes: &[String],
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let hashes = backup_code_hashes.to_vec();
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            // The TOTP row's lock keeps a concurrent disable from leaving codes without TOTP
            // (on SQLite, the write lock `BEGIN IMMEDIATE` took does).
            let enabled = sqlx::query(&format!(
                "SELECT 1 FROM user_totp WHERE user_id = $1 AND enabled_at IS NOT NULL {}",
                dialect::FOR_UPDATE
            ))
            .bind(Id::from(user))
            .fetch_optional(&mut *transaction)
            .await
            .map_err(classify)?;
            if enabled.is_none() {
                return Ok(false);
            }
            sqlx::query("DELETE FROM user_backup_codes WHERE user_id = $1")
                .bind(Id::from(user))
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            transaction.insert_backup_codes(user, &hashes).await?;
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
    }

    async fn backup_codes_remaining(&self, user: UserId) -> Result<u64, StoreError> {
        run_on_backend!(self, |pool| {
            let count: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM user_backup_codes WHERE user_id = $1 AND used_at IS NULL")
                    .bind(Id::from(user))
                    .fetch_one(&pool)
                    .await
                    .map_err(classify)?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    async fn use_totp_step(&self, user: UserId, step: i64) -> Result<bool, StoreError> {
        run_on_backend!(self, |pool| {
            let updated = sqlx::query(
                "UPDATE user_totp SET last_used_step = $2
                 WHERE user_id = $1 AND enabled_at IS NOT NULL AND (last_used_step IS NULL OR last_used_step < $2)",
            )
            .bind(Id::from(user))
            .bind(step)
            .execute(&pool)
            .await
            .map_err(classify)?;
            Ok(updated.rows_affected() == 1)
        })
    }

    async fn use_backup_code(&self, user: UserId, code_hash: &str, now: Timestamp) -> Result<bool, StoreError> {
        let code_hash = code_hash.to_owned();
        run_on_backend!(self, |pool| {
            let updated = sqlx::query(
                "UPDATE user_backup_codes SET used_at = $3
                 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL
                   AND EXISTS (SELECT 1 FROM user_totp WHERE user_id = $1 AND enabled_at IS NOT NULL)",
            )
            .bind(Id::from(user))
            .bind(&code_hash)
            .bind(now.as_micros())
            .execute(&pool)
            .await
            .map_err(classify)?;
            Ok(updated.rows_affected() == 1)
        })
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord, audit: &AuditRecord) -> Result<(), StoreError> {
        let key = key.clone();
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            sqlx::query(
                "INSERT INTO api_keys (id, user_id, name, key_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(Id(key.id))
            .bind(Id::from(key.user_id))
            .bind(&key.name)
            .bind(&key.key_hash)
            .bind(scopes_to_db(&key.scopes))
            .bind(key.created_at.as_micros())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(())
        })
    }

    async fn api_keys_of(&self, user: UserId, limit: u32) -> Result<Vec<ApiKeyRecord>, StoreError> {
        run_on_backend!(self, |pool| {
            let rows = sqlx::query(&format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at, id LIMIT $2"
            ))
            .bind(Id::from(user))
            .bind(i64::from(limit))
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter().map(api_key_from_row).collect()
        })
    }

    async fn count_api_keys(&self, user: UserId) -> Result<u64, StoreError> {
        run_on_backend!(self, |pool| {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE user_id = $1")
                .bind(Id::from(user))
                .fetch_one(&pool)
                .await
                .map_err(classify)?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let key_hash = key_hash.to_owned();
        run_on_backend!(self, |pool| {
            let row = sqlx::query(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"))
                .bind(&key_hash)
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
            row.as_ref().map(api_key_from_row).transpose()
        })
    }

    async fn delete_api_key(&self, user: UserId, id: Uuid, audit: &AuditRecord) -> Result<Option<String>, StoreError> {
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let hash: Option<String> =
                sqlx::query_scalar("DELETE FROM api_keys WHERE id = $1 AND user_id = $2 RETURNING key_hash")
                    .bind(Id(id))
                    .bind(Id::from(user))
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(classify)?;
            if hash.is_none() {
                return Ok(None);
            }
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(hash)
        })
    }
}

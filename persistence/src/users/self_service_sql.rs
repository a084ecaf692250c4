//! `SelfServiceStore` for both identity stores, written once (`crate::sql`). On SQLite every
//! writing transaction begins `IMMEDIATE` (the database's one write lock, held from its first
//! statement to commit).

use async_trait::async_trait;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::self_service::{CodePurpose, EmailCode, ProfileChange, SelfServiceStore};
use super::sql::UserQueries;
use super::{User, UserStore, VerificationLevel};
use crate::audit::{AppendAudit, AuditRecord};
use crate::sql::{BeginWrite, Id, IdentitySql, run_on_backend};
use crate::store::StoreError;

/// Spends the user's live code for `purpose` if it is still the unspent, unexpired code with
/// `code_hash`; true if it did. A macro, to be expanded in each backend's body (`classify`).
macro_rules! spend_code {
    ($transaction:ident, $user:expr, $purpose:expr, $code_hash:expr, $now:expr) => {
        sqlx::query(
            "UPDATE email_codes SET used_at = $4
             WHERE user_id = $1 AND purpose = $2 AND code_hash = $3 AND used_at IS NULL AND expires_at > $4",
        )
        .bind(Id::from($user))
        .bind($purpose.as_str())
        .bind($code_hash)
        .bind($now.as_micros())
        .execute(&mut *$transaction)
        .await
        .map_err(classify)?
        .rows_affected()
            == 1
    };
}

#[async_trait]
impl<S: IdentitySql> SelfServiceStore for S {
    async fn update_profile(
        &self,
        user: UserId,
        change: &ProfileChange,
        audit: &AuditRecord,
    ) -> Result<Option<User>, StoreError> {
        let change = change.clone();
        let audit = audit.clone();
        let updated = run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            // `$5` says whether the phone changes at all (a NULL `$4` may mean "clear it").
            let updated = sqlx::query(
                "UPDATE users SET first_name = COALESCE($2, first_name), last_name = COALESCE($3, last_name),
                                  phone = CASE WHEN $5 THEN $4 ELSE phone END
                 WHERE id = $1",
            )
            .bind(Id::from(user))
            .bind(&change.first_name)
            .bind(&change.last_name)
            .bind(change.phone.clone().flatten())
            .bind(change.phone.is_some())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            if updated.rows_affected() != 1 {
                return Ok(false);
            }
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })?;
        if !updated {
            return Ok(None);
        }
        self.user_by_id(user).await
    }

    async fn set_password(
        &self,
        user: UserId,
        password_hash: &str,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let password_hash = password_hash.to_owned();
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let updated = sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
                .bind(Id::from(user))
                .bind(&password_hash)
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            if updated.rows_affected() != 1 {
                return Ok(false);
            }
            // A reset code mailed before this change must not undo it (whoever read that mail
            // could otherwise take the account back for the rest of the code's life).
            sqlx::query("UPDATE email_codes SET used_at = $3 WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL")
                .bind(Id::from(user))
                .bind(CodePurpose::PasswordReset.as_str())
                .bind(now.as_micros())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
    }

    async fn issue_code(&self, code: &EmailCode, audit: &AuditRecord) -> Result<bool, StoreError> {
        let code = code.clone();
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            if !transaction.lock_user(code.user.as_uuid()).await? {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO email_codes (user_id, purpose, code_hash, created_at, expires_at, attempts, used_at)
                 VALUES ($1, $2, $3, $4, $5, 0, NULL)
                 ON CONFLICT (user_id, purpose) DO UPDATE SET code_hash = EXCLUDED.code_hash,
                     created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, attempts = 0, used_at = NULL",
            )
            .bind(Id::from(code.user))
            .bind(code.purpose.as_str())
            .bind(&code.code_hash)
            .bind(code.created_at.as_micros())
            .bind(code.expires_at.as_micros())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
    }

    async fn take_code_attempt(
        &self,
        user: UserId,
        purpose: CodePurpose,
        now: Timestamp,
        attempts_max: u32,
    ) -> Result<Option<String>, StoreError> {
        run_on_backend!(self, |pool| {
            // One statement: the bound holds however many tries arrive at once.
            sqlx::query_scalar(
                "UPDATE email_codes SET attempts = attempts + 1
                 WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3 AND attempts < $4
                 RETURNING code_hash",
            )
            .bind(Id::from(user))
            .bind(purpose.as_str())
            .bind(now.as_micros())
            .bind(i64::from(attempts_max))
            .fetch_optional(&pool)
            .await
            .map_err(classify)
        })
    }

    async fn redeem_password_reset(
        &self,
        user: UserId,
        code_hash: &str,
        password_hash: &str,
        now: Timestamp,
        audit: &AuditRecord,
        revoked_keys: &[(Uuid, AuditRecord)],
    ) -> Result<bool, StoreError> {
        let (code_hash, password_hash) = (code_hash.to_owned(), password_hash.to_owned());
        let audit = audit.clone();
        let revoked_keys = revoked_keys.to_vec();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            if !spend_code!(transaction, user, CodePurpose::PasswordReset, &code_hash, now) {
                return Ok(false);
            }
            sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
                .bind(Id::from(user))
                .bind(&password_hash)
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            transaction.append_audit(&audit).await?;
            // Every API key of the user goes: each one the caller listed with its entry (an
            // entry only for a key still there), then any other.
            for (key, entry) in &revoked_keys {
                let deleted = sqlx::query("DELETE FROM api_keys WHERE id = $1 AND user_id = $2")
                    .bind(Id(*key))
                    .bind(Id::from(user))
                    .execute(&mut *transaction)
                    .await
                    .map_err(classify)?;
                if deleted.rows_affected() == 1 {
                    transaction.append_audit(entry).await?;
                }
            }
            sqlx::query("DELETE FROM api_keys WHERE user_id = $1")
                .bind(Id::from(user))
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
    }

    async fn redeem_email_verification(
        &self,
        user: UserId,
        code_hash: &str,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let code_hash = code_hash.to_owned();
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            if !spend_code!(transaction, user, CodePurpose::EmailVerification, &code_hash, now) {
                return Ok(false);
            }
            sqlx::query("UPDATE users SET email_verified_at = COALESCE(email_verified_at, $2) WHERE id = $1")
                .bind(Id::from(user))
                .bind(now.as_micros())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(true)
        })
    }

    async fn set_verification_level(
        &self,
        user: UserId,
        level: VerificationLevel,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let updated = sqlx::query("UPDATE users SET verification_level = $2 WHERE id = $1")
                .bind(Id::from(user))
                .bind(level.as_str())
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
}

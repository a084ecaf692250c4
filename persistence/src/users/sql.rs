//! `UserStore` for both identity stores, written once (`crate::sql`), and the reads of a
//! user's permissions and roles that the admin and role stores share (`UserQueries`).

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::{
    CreateUserError, RefreshTokenRecord, RefreshUse, RoleGrant, SigningKeyRecord, User, UserStatus, UserStore,
    VerificationLevel, normalize_email,
};
use crate::audit::{AppendAudit, AuditRecord};
use crate::sql::{
    BeginSnapshot, BeginWrite, Id, IdentitySql, Ids, SqlRow, SqlStore, Texts, impl_for_connections, run_on_backend,
    unique_violation,
};
use crate::store::{StoreError, corrupt};

pub(crate) const USER_COLUMNS: &str = "id, email, password_hash, first_name, last_name, status, created_at, phone, \
                                        email_verified_at, verification_level";

/// A user from a row of `USER_COLUMNS`, with their direct permissions and roles as read apart.
pub(crate) fn user_from_row(
    row: &impl SqlRow,
    permissions: BTreeSet<String>,
    roles: Vec<RoleGrant>,
) -> Result<User, StoreError> {
    let status: String = row.decode("status")?;
    let level: String = row.decode("verification_level")?;
    Ok(User {
        id: row.decode("id")?,
        email: row.decode("email")?,
        password_hash: row.decode("password_hash")?,
        first_name: row.decode("first_name")?,
        last_name: row.decode("last_name")?,
        status: UserStatus::parse(&status).ok_or_else(|| corrupt(format!("unknown user status {status:?}")))?,
        permissions,
        created_at: row.decode("created_at")?,
        phone: row.decode("phone")?,
        email_verified_at: row.decode("email_verified_at")?,
        verification_level: VerificationLevel::parse(&level)
            .ok_or_else(|| corrupt(format!("unknown verification level {level:?}")))?,
        roles,
    })
}

/// A user's direct permissions and role grants.
pub(crate) type Grants = (BTreeSet<String>, Vec<RoleGrant>);

/// Queries that run inside a caller's transaction.
pub(crate) trait UserQueries {
    /// The direct permissions and role grants of each of `users` (a user with neither maps to
    /// empty ones); roles by normalized name.
    async fn grants_of(&mut self, users: &[Uuid]) -> Result<BTreeMap<Uuid, Grants>, StoreError>;

    /// Whether the user exists, inside the transaction that changes them. On Postgres the row
    /// lock keeps a concurrent change from interleaving; on SQLite the transaction's
    /// `IMMEDIATE` write lock already does.
    async fn lock_user(&mut self, id: Uuid) -> Result<bool, StoreError>;
}

impl_for_connections! {
    impl UserQueries {
        async fn grants_of(&mut self, users: &[Uuid]) -> Result<BTreeMap<Uuid, Grants>, StoreError> {
            let mut grants: BTreeMap<Uuid, Grants> = users.iter().map(|user| (*user, Grants::default())).collect();
            let permissions = sqlx::query(&format!(
                "SELECT user_id, action FROM user_permissions WHERE user_id IN (SELECT value FROM {})
                 ORDER BY action",
                dialect::each(1)
            ))
            .bind(Ids(users.to_vec()))
            .fetch_all(&mut *self)
            .await
            .map_err(classify)?;
            for row in &permissions {
                let user: Uuid = row.decode("user_id")?;
                grants.entry(user).or_default().0.insert(row.decode("action")?);
            }
            let roles = sqlx::query(&format!(
                "SELECT ur.user_id, r.id, r.name, ra.action FROM user_roles ur
                 JOIN roles r ON r.id = ur.role_id
                 LEFT JOIN role_actions ra ON ra.role_id = r.id
                 WHERE ur.user_id IN (SELECT value FROM {})
                 ORDER BY ur.user_id, r.name_normalized, r.id, ra.action",
                dialect::each(1)
            ))
            .bind(Ids(users.to_vec()))
            .fetch_all(&mut *self)
            .await
            .map_err(classify)?;
            let mut rows_of: BTreeMap<Uuid, Vec<(Uuid, String, Option<String>)>> = BTreeMap::new();
            for row in &roles {
                let user: Uuid = row.decode("user_id")?;
                rows_of.entry(user).or_default().push((row.decode("id")?, row.decode("name")?, row.decode("action")?));
            }
            for (user, rows) in rows_of {
                grants.entry(user).or_default().1 = super::roles::group_grants(rows);
            }
            Ok(grants)
        }

        async fn lock_user(&mut self, id: Uuid) -> Result<bool, StoreError> {
            let found = sqlx::query(&format!("SELECT 1 FROM users WHERE id = $1 {}", dialect::FOR_UPDATE))
                .bind(Id(id))
                .fetch_optional(&mut *self)
                .await
                .map_err(classify)?;
            Ok(found.is_some())
        }
    }
}

/// Which user to read: by id, or by normalized email.
enum UserKey {
    Id(Uuid),
    Email(String),
}

fn generation_to_db(generation: u32) -> Result<i32, StoreError> {
    i32::try_from(generation).map_err(|_| corrupt(format!("key generation {generation} beyond INTEGER")))
}

#[async_trait]
impl<S: IdentitySql> UserStore for S {
    async fn create_user(&self, user: &User, audit: &AuditRecord) -> Result<(), CreateUserError> {
        let user = user.clone();
        let audit = audit.clone();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            let inserted = sqlx::query(
                "INSERT INTO users (id, email, email_normalized, password_hash, first_name, last_name, status,
                                    created_at, phone, email_verified_at, verification_level)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(Id::from(user.id))
            .bind(&user.email)
            .bind(normalize_email(&user.email))
            .bind(&user.password_hash)
            .bind(&user.first_name)
            .bind(&user.last_name)
            .bind(user.status.as_str())
            .bind(user.created_at.as_micros())
            .bind(&user.phone)
            .bind(user.email_verified_at.map(|at| at.as_micros()))
            .bind(user.verification_level.as_str())
            .execute(&mut *transaction)
            .await;
            // On failure the transaction rolls back when dropped; nothing of the user is kept.
            if let Err(error) = inserted {
                return Ok(Err(match unique_violation(&error) {
                    Some(constraint) if constraint.contains("email") => CreateUserError::EmailTaken,
                    Some(_) => CreateUserError::IdTaken,
                    None => CreateUserError::Store(classify(error)),
                }));
            }
            if !user.permissions.is_empty() {
                sqlx::query(&format!(
                    "INSERT INTO user_permissions (user_id, action) SELECT $1, value FROM {}",
                    dialect::each(2)
                ))
                .bind(Id::from(user.id))
                .bind(Texts(user.permissions.iter().cloned().collect()))
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            }
            transaction.append_audit(&audit).await?;
            transaction.commit().await.map_err(classify)?;
            Ok(Ok(()))
        })?
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        load_user(self, UserKey::Id(id.as_uuid())).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        // Postgres text cannot hold NUL, so such an address names no user; asking would be a
        // protocol error, not an answer (schemathesis found a login 500 this way).
        if email.contains('\0') {
            return Ok(None);
        }
        load_user(self, UserKey::Email(normalize_email(email))).await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        run_on_backend!(self, |pool| {
            let rows = sqlx::query(
                "SELECT generation, kid, algorithm, private_key_pkcs8, created_at FROM jwt_signing_keys
                 ORDER BY generation",
            )
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter()
                .map(|row| {
                    let generation: i32 = row.decode("generation")?;
                    Ok(SigningKeyRecord {
                        generation: u32::try_from(generation)
                            .map_err(|_| corrupt(format!("negative key generation {generation}")))?,
                        kid: row.decode("kid")?,
                        algorithm: row.decode("algorithm")?,
                        private_key_pkcs8: row.decode("private_key_pkcs8")?,
                        created_at: row.decode("created_at")?,
                    })
                })
                .collect()
        })
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<bool, StoreError> {
        let key = key.clone();
        run_on_backend!(self, |pool| {
            let inserted = sqlx::query(
                "INSERT INTO jwt_signing_keys (generation, kid, algorithm, private_key_pkcs8, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (generation) DO NOTHING",
            )
            .bind(generation_to_db(key.generation)?)
            .bind(&key.kid)
            .bind(&key.algorithm)
            .bind(&key.private_key_pkcs8)
            .bind(key.created_at.as_micros())
            .execute(&pool)
            .await
            .map_err(classify)?;
            Ok(inserted.rows_affected() == 1)
        })
    }

    async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), StoreError> {
        let token = token.clone();
        run_on_backend!(self, |pool| {
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, user_id, family_id, issued_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&token.token_hash)
            .bind(Id::from(token.user_id))
            .bind(Id(token.family_id))
            .bind(token.issued_at.as_micros())
            .bind(token.expires_at.as_micros())
            .execute(&pool)
            .await
            .map_err(classify)?;
            Ok(())
        })
    }

    async fn spend_refresh_token(&self, token_hash: &str, now: Timestamp) -> Result<RefreshUse, StoreError> {
        let token_hash = token_hash.to_owned();
        run_on_backend!(self, |pool| {
            let mut transaction = pool.begin_write().await.map_err(classify)?;
            // The row lock (Postgres) or the write lock held from the start (SQLite) makes the
            // check and the spend one step: a concurrent use of the same token waits here and
            // then finds it spent.
            let row = sqlx::query(&format!(
                "SELECT user_id, family_id, expires_at, used_at, revoked_at FROM refresh_tokens
                 WHERE token_hash = $1 {}",
                dialect::FOR_UPDATE
            ))
            .bind(&token_hash)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(classify)?;
            let Some(row) = row else { return Ok(RefreshUse::Invalid) };
            let family_id: Uuid = row.decode("family_id")?;
            let used_at: Option<i64> = row.decode("used_at")?;
            let revoked_at: Option<i64> = row.decode("revoked_at")?;
            let expires_at: i64 = row.decode("expires_at")?;
            let outcome = if used_at.is_some() {
                sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
                    .bind(Id(family_id))
                    .bind(now.as_micros())
                    .execute(&mut *transaction)
                    .await
                    .map_err(classify)?;
                RefreshUse::Reused { family_id }
            } else if revoked_at.is_some() || expires_at <= now.as_micros() {
                RefreshUse::Invalid
            } else {
                sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1")
                    .bind(&token_hash)
                    .bind(now.as_micros())
                    .execute(&mut *transaction)
                    .await
                    .map_err(classify)?;
                RefreshUse::Spent { user_id: row.decode("user_id")?, family_id }
            };
            transaction.commit().await.map_err(classify)?;
            Ok(outcome)
        })
    }
}

/// Reads one user, their permissions and roles in one snapshot, so a role change is never
/// seen half applied.
async fn load_user(store: &impl SqlStore, key: UserKey) -> Result<Option<User>, StoreError> {
    run_on_backend!(store, |pool| {
        let mut transaction = pool.begin_snapshot().await.map_err(classify)?;
        let row = match &key {
            UserKey::Id(id) => {
                sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
                    .bind(Id(*id))
                    .fetch_optional(&mut *transaction)
                    .await
            }
            UserKey::Email(email) => {
                sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE email_normalized = $1"))
                    .bind(email)
                    .fetch_optional(&mut *transaction)
                    .await
            }
        }
        .map_err(classify)?;
        let Some(row) = row else { return Ok(None) };
        let id: Uuid = row.decode("id")?;
        let (permissions, roles) = transaction.grants_of(&[id]).await?.remove(&id).unwrap_or_default();
        transaction.commit().await.map_err(classify)?;
        user_from_row(&row, permissions, roles).map(Some)
    })
}

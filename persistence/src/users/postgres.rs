//! The Postgres `UserStore` (sqlx 0.8.6), on its own pool and runtime against the ledger's
//! database. `reads::postgres` adds the ledger read-model queries to the same pool.

use std::collections::BTreeSet;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::{
    CreateUserError, RefreshTokenRecord, RefreshUse, RoleGrant, SigningKeyRecord, User, UserStatus, UserStore,
    VerificationLevel, normalize_email,
};
use crate::audit::AuditRecord;
use crate::postgres::classify;
use crate::runtime::StoreRuntime;
use crate::store::StoreError;
use crate::store::corrupt;

/// Connections in the identity pool. Logins and registrations are rare next to transfers,
/// and the ledger read model (accounts by owner) is one indexed query per request; four
/// connections serve both on two cores without starving the ledger's own pool of server slots.
const POOL_CONNECTIONS_MAX: u32 = 4;

pub struct PgUserStore {
    pool: PgPool,
    runtime: StoreRuntime,
}

impl std::fmt::Debug for PgUserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgUserStore").finish_non_exhaustive()
    }
}

impl PgUserStore {
    /// Connects (without migrating). `url` is a `postgres://` URL.
    pub async fn connect(url: &str) -> Result<PgUserStore, StoreError> {
        let runtime = StoreRuntime::new("tally-pg-users")?;
        let pool = crate::postgres::connect_pool(&runtime, url, POOL_CONNECTIONS_MAX).await?;
        Ok(PgUserStore { pool, runtime })
    }

    /// Applies the versioned migrations in `persistence/migrations/postgres` not yet applied:
    /// the same set the ledger store applies, so either may run first. Postgres serialises
    /// concurrent migrators with an advisory lock.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.run(|pool| async move {
            sqlx::migrate!("./migrations/postgres")
                .run(&pool)
                .await
                .map_err(|error| StoreError::Unavailable(format!("migration: {error}")))
        })
        .await
    }

    /// Runs `work` with the pool on the store's runtime.
    pub(crate) async fn run<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(PgPool) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.runtime.run(work(self.pool.clone())).await
    }
}

impl crate::sql::SqlStore for PgUserStore {
    fn sql_pool(&self) -> crate::sql::SqlPool {
        crate::sql::SqlPool::Postgres(self.pool.clone())
    }

    fn sql_runtime(&self) -> &StoreRuntime {
        &self.runtime
    }
}

/// The name of the unique constraint a violation broke, if the error is one.
fn unique_violation(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(database) if database.is_unique_violation() => {
            Some(database.constraint().unwrap_or_default().to_owned())
        }
        _ => None,
    }
}

pub(crate) const USER_COLUMNS: &str = "id, email, password_hash, first_name, last_name, status, created_at, phone, \
                                        email_verified_at, verification_level";

/// A user from a row of `USER_COLUMNS`, with their direct permissions and roles as read apart.
pub(crate) fn user_from_row(
    row: &PgRow,
    permissions: BTreeSet<String>,
    roles: Vec<RoleGrant>,
) -> Result<User, StoreError> {
    let status: String = row.try_get("status").map_err(classify)?;
    let level: String = row.try_get("verification_level").map_err(classify)?;
    let verified_at: Option<i64> = row.try_get("email_verified_at").map_err(classify)?;
    Ok(User {
        id: UserId::from_uuid(row.try_get("id").map_err(classify)?),
        email: row.try_get("email").map_err(classify)?,
        password_hash: row.try_get("password_hash").map_err(classify)?,
        first_name: row.try_get("first_name").map_err(classify)?,
        last_name: row.try_get("last_name").map_err(classify)?,
        status: UserStatus::parse(&status).ok_or_else(|| corrupt(format!("unknown user status {status:?}")))?,
        permissions,
        created_at: Timestamp::from_micros(row.try_get("created_at").map_err(classify)?),
        phone: row.try_get("phone").map_err(classify)?,
        email_verified_at: verified_at.map(Timestamp::from_micros),
        verification_level: VerificationLevel::parse(&level)
            .ok_or_else(|| corrupt(format!("unknown verification level {level:?}")))?,
        roles,
    })
}

/// The roles of each of `users` with their actions: `(user, role id, role name, action)` rows,
/// roles by normalized name, grouped per user by the caller.
pub(crate) async fn role_rows(
    connection: &mut sqlx::PgConnection,
    users: &[Uuid],
) -> Result<Vec<(Uuid, Uuid, String, Option<String>)>, StoreError> {
    let rows = sqlx::query(
        "SELECT ur.user_id, r.id, r.name, ra.action FROM user_roles ur
         JOIN roles r ON r.id = ur.role_id
         LEFT JOIN role_actions ra ON ra.role_id = r.id
         WHERE ur.user_id = ANY($1)
         ORDER BY ur.user_id, r.name_normalized, r.id, ra.action",
    )
    .bind(users)
    .fetch_all(&mut *connection)
    .await
    .map_err(classify)?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("user_id").map_err(classify)?,
                row.try_get("id").map_err(classify)?,
                row.try_get("name").map_err(classify)?,
                row.try_get("action").map_err(classify)?,
            ))
        })
        .collect()
}

/// `user`'s role grants out of `role_rows`' answer.
pub(crate) fn grants_of(rows: &[(Uuid, Uuid, String, Option<String>)], user: Uuid) -> Vec<RoleGrant> {
    super::roles::group_grants(
        rows.iter()
            .filter(|(holder, ..)| *holder == user)
            .map(|(_, id, name, action)| (*id, name.clone(), action.clone()))
            .collect(),
    )
}

/// Reads one user (selected by `column = value`), their permissions and roles in one snapshot.
async fn load_user(pool: PgPool, column: &'static str, value: UserKey) -> Result<Option<User>, StoreError> {
    // One snapshot for the three reads (a READ COMMITTED transaction would take one per
    // statement), so a role change is never seen half applied.
    let mut transaction = pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(classify)?;
    let query = format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = $1");
    let row = match value {
        UserKey::Id(id) => sqlx::query(&query).bind(id).fetch_optional(&mut *transaction).await,
        UserKey::Email(email) => sqlx::query(&query).bind(email).fetch_optional(&mut *transaction).await,
    }
    .map_err(classify)?;
    let Some(row) = row else { return Ok(None) };
    let id: Uuid = row.try_get("id").map_err(classify)?;
    let permissions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM user_permissions WHERE user_id = $1 ORDER BY action")
            .bind(id)
            .fetch_all(&mut *transaction)
            .await
            .map_err(classify)?;
    let roles = role_rows(&mut transaction, &[id]).await?;
    transaction.commit().await.map_err(classify)?;
    user_from_row(&row, permissions.into_iter().collect(), grants_of(&roles, id)).map(Some)
}

enum UserKey {
    Id(Uuid),
    Email(String),
}

async fn insert_user(transaction: &mut Transaction<'_, Postgres>, user: &User) -> Result<(), CreateUserError> {
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, email_normalized, password_hash, first_name, last_name, status, created_at,
                            phone, email_verified_at, verification_level)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(user.id.as_uuid())
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
    .execute(&mut **transaction)
    .await;
    if let Err(error) = inserted {
        return Err(match unique_violation(&error) {
            Some(constraint) if constraint.contains("email") => CreateUserError::EmailTaken,
            Some(_) => CreateUserError::IdTaken,
            None => CreateUserError::Store(classify(error)),
        });
    }
    if !user.permissions.is_empty() {
        sqlx::query("INSERT INTO user_permissions (user_id, action) SELECT $1, UNNEST($2::text[])")
            .bind(user.id.as_uuid())
            .bind(user.permissions.iter().cloned().collect::<Vec<_>>())
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
    }
    Ok(())
}

fn generation_to_db(generation: u32) -> Result<i32, StoreError> {
    i32::try_from(generation).map_err(|_| corrupt(format!("key generation {generation} beyond INTEGER")))
}

#[async_trait]
impl UserStore for PgUserStore {
    async fn create_user(&self, user: &User, audit: &AuditRecord) -> Result<(), CreateUserError> {
        let user = user.clone();
        let audit = audit.clone();
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            match insert_user(&mut transaction, &user).await {
                Ok(()) => {
                    crate::audit::postgres::append(&mut transaction, &audit).await?;
                    transaction.commit().await.map_err(classify)?;
                    Ok(Ok(()))
                }
                // The transaction rolls back when dropped; nothing of the user is kept.
                Err(error) => Ok(Err(error)),
            }
        })
        .await?
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.run(|pool| load_user(pool, "id", UserKey::Id(id.as_uuid()))).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        // Postgres text cannot hold NUL, so such an address names no user; asking would be a
        // protocol error, not an answer (schemathesis found a login 500 this way).
        if email.contains('\0') {
            return Ok(None);
        }
        let email = normalize_email(email);
        self.run(|pool| load_user(pool, "email_normalized", UserKey::Email(email))).await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.run(|pool| async move {
            let rows = sqlx::query(
                "SELECT generation, kid, algorithm, private_key_pkcs8, created_at FROM jwt_signing_keys
                 ORDER BY generation",
            )
            .fetch_all(&pool)
            .await
            .map_err(classify)?;
            rows.iter()
                .map(|row| {
                    let generation: i32 = row.try_get("generation").map_err(classify)?;
                    Ok(SigningKeyRecord {
                        generation: u32::try_from(generation)
                            .map_err(|_| corrupt(format!("negative key generation {generation}")))?,
                        kid: row.try_get("kid").map_err(classify)?,
                        algorithm: row.try_get("algorithm").map_err(classify)?,
                        private_key_pkcs8: row.try_get("private_key_pkcs8").map_err(classify)?,
                        created_at: Timestamp::from_micros(row.try_get("created_at").map_err(classify)?),
                    })
                })
                .collect()
        })
        .await
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<bool, StoreError> {
        let key = key.clone();
        self.run(|pool| async move {
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
        .await
    }

    async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), StoreError> {
        let token = token.clone();
        self.run(|pool| async move {
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, user_id, family_id, issued_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&token.token_hash)
            .bind(token.user_id.as_uuid())
            .bind(token.family_id)
            .bind(token.issued_at.as_micros())
            .bind(token.expires_at.as_micros())
            .execute(&pool)
            .await
            .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn spend_refresh_token(&self, token_hash: &str, now: Timestamp) -> Result<RefreshUse, StoreError> {
        let token_hash = token_hash.to_owned();
        self.run(|pool| async move {
            let mut transaction = pool.begin().await.map_err(classify)?;
            // The row lock makes the check and the spend one step: a concurrent use of the same
            // token waits here and then finds it spent.
            let row = sqlx::query(
                "SELECT user_id, family_id, expires_at, used_at, revoked_at FROM refresh_tokens
                 WHERE token_hash = $1 FOR UPDATE",
            )
            .bind(&token_hash)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(classify)?;
            let Some(row) = row else { return Ok(RefreshUse::Invalid) };
            let family_id: Uuid = row.try_get("family_id").map_err(classify)?;
            let used_at: Option<i64> = row.try_get("used_at").map_err(classify)?;
            let revoked_at: Option<i64> = row.try_get("revoked_at").map_err(classify)?;
            let expires_at: i64 = row.try_get("expires_at").map_err(classify)?;
            let outcome = if used_at.is_some() {
                sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
                    .bind(family_id)
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
                RefreshUse::Spent { user_id: UserId::from_uuid(row.try_get("user_id").map_err(classify)?), family_id }
            };
            transaction.commit().await.map_err(classify)?;
            Ok(outcome)
        })
        .await
    }
}

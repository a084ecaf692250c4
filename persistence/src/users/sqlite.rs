//! The SQLite `UserStore` (sqlx 0.8.6), on its own pool and runtime against the ledger's
//! database file. `reads::sqlite` adds the ledger read-model queries to the same pool.
//!
//! The file is shared with the ledger store's pool. WAL lets readers run beside either
//! writer; the two writers (the journal and, rarely, a registration or a token spend) take
//! turns on SQLite's write lock, each waiting up to `BUSY_TIMEOUT` for the other.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::{
    CreateUserError, RefreshTokenRecord, RefreshUse, RoleGrant, SigningKeyRecord, User, UserStatus, UserStore,
    VerificationLevel, normalize_email,
};
use crate::audit::AuditRecord;
use crate::runtime::StoreRuntime;
use crate::sqlite::classify;
use crate::store::StoreError;
use crate::store::corrupt;

/// Connections in the identity pool: reads (user look-ups, accounts by owner) run beside each
/// other under WAL; writes take turns anyway.
const POOL_CONNECTIONS_MAX: u32 = 4;

/// How long a query waits for a pooled connection before the store reports itself unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long SQLite waits on the write lock (held by the journal writer's commit) before
/// answering `SQLITE_BUSY`. A journal commit takes milliseconds; two seconds is a stall.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

pub struct SqliteUserStore {
    pool: SqlitePool,
    runtime: StoreRuntime,
}

impl std::fmt::Debug for SqliteUserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteUserStore").finish_non_exhaustive()
    }
}

impl SqliteUserStore {
    /// Opens (creating if missing, with its parent directories) the database at `url`, a
    /// `sqlite://path/to/file.db` URL, with the same durability settings as the ledger store
    /// (WAL, `synchronous=FULL`), without migrating.
    pub async fn open(url: &str) -> Result<SqliteUserStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|error| StoreError::Corrupt(format!("bad sqlite url {url:?}: {error}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        if let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|error| {
                StoreError::Unavailable(format!("cannot create directory {}: {error}", parent.display()))
            })?;
        }
        let runtime = StoreRuntime::new("tally-sqlite-users")?;
        let pool = runtime
            .run(async move {
                SqlitePoolOptions::new()
                    .max_connections(POOL_CONNECTIONS_MAX)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(classify)
            })
            .await?;
        Ok(SqliteUserStore { pool, runtime })
    }

    /// Applies the versioned migrations in `persistence/migrations/sqlite` not yet applied:
    /// the same set the ledger store applies, so either may run first.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.run(|pool| async move {
            sqlx::migrate!("./migrations/sqlite").run(&pool).await.map_err(|error| match error {
                sqlx::migrate::MigrateError::Execute(error) => classify(error),
                other => StoreError::Corrupt(format!("migration: {other}")),
            })
        })
        .await
    }

    /// Runs `work` with the pool on the store's runtime.
    pub(crate) async fn run<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(SqlitePool) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.runtime.run(work(self.pool.clone())).await
    }
}

impl crate::sql::SqlStore for SqliteUserStore {
    fn sql_pool(&self) -> crate::sql::SqlPool {
        crate::sql::SqlPool::Sqlite(self.pool.clone())
    }

    fn sql_runtime(&self) -> &StoreRuntime {
        &self.runtime
    }
}

/// The stored form of an id: hyphenated lowercase UUID text, as in the ledger tables.
pub(crate) fn id_to_db(id: Uuid) -> String {
    id.hyphenated().to_string()
}

pub(crate) fn uuid_from_db(text: &str, column: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|error| corrupt(format!("{column} {text:?} is not a UUID: {error}")))
}

pub(crate) fn uuid(row: &SqliteRow, column: &str) -> Result<Uuid, StoreError> {
    let text: String = row.try_get(column).map_err(classify)?;
    uuid_from_db(&text, column)
}

pub(crate) const USER_COLUMNS: &str = "id, email, password_hash, first_name, last_name, status, created_at, phone, \
                                        email_verified_at, verification_level";

/// A user from a row of `USER_COLUMNS`, with their direct permissions and roles as read apart.
pub(crate) fn user_from_row(
    row: &SqliteRow,
    permissions: BTreeSet<String>,
    roles: Vec<RoleGrant>,
) -> Result<User, StoreError> {
    let status: String = row.try_get("status").map_err(classify)?;
    let level: String = row.try_get("verification_level").map_err(classify)?;
    let verified_at: Option<i64> = row.try_get("email_verified_at").map_err(classify)?;
    Ok(User {
        id: UserId::from_uuid(uuid(row, "id")?),
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

/// The roles of one user with their actions, by normalized name.
pub(crate) async fn roles_of(
    connection: &mut sqlx::SqliteConnection,
    user: &str,
) -> Result<Vec<RoleGrant>, StoreError> {
    let rows = sqlx::query(
        "SELECT r.id, r.name, ra.action FROM user_roles ur
         JOIN roles r ON r.id = ur.role_id
         LEFT JOIN role_actions ra ON ra.role_id = r.id
         WHERE ur.user_id = ?1
         ORDER BY r.name_normalized, r.id, ra.action",
    )
    .bind(user)
    .fetch_all(&mut *connection)
    .await
    .map_err(classify)?;
    let rows = rows
        .iter()
        .map(|row| {
            Ok((uuid(row, "id")?, row.try_get("name").map_err(classify)?, row.try_get("action").map_err(classify)?))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(super::roles::group_grants(rows))
}

/// Reads one user (selected by `column = value`) and their permissions in one snapshot (a WAL
/// read transaction sees one committed state).
async fn load_user(pool: SqlitePool, column: &'static str, value: String) -> Result<Option<User>, StoreError> {
    let mut transaction = pool.begin().await.map_err(classify)?;
    let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = ?1"))
        .bind(value)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(classify)?;
    let Some(row) = row else { return Ok(None) };
    let id: String = row.try_get("id").map_err(classify)?;
    let permissions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM user_permissions WHERE user_id = ?1 ORDER BY action")
            .bind(&id)
            .fetch_all(&mut *transaction)
            .await
            .map_err(classify)?;
    let roles = roles_of(&mut transaction, &id).await?;
    transaction.commit().await.map_err(classify)?;
    user_from_row(&row, permissions.into_iter().collect(), roles).map(Some)
}

async fn insert_user(transaction: &mut Transaction<'_, Sqlite>, user: &User) -> Result<(), CreateUserError> {
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, email_normalized, password_hash, first_name, last_name, status, created_at,
                            phone, email_verified_at, verification_level)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .bind(id_to_db(user.id.as_uuid()))
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
        return Err(match &error {
            // SQLite names the columns of the broken constraint in its message
            // ("UNIQUE constraint failed: users.email_normalized"), not the constraint.
            sqlx::Error::Database(database) if database.is_unique_violation() => {
                if database.message().contains("email_normalized") {
                    CreateUserError::EmailTaken
                } else {
                    CreateUserError::IdTaken
                }
            }
            _ => CreateUserError::Store(classify(error)),
        });
    }
    for action in &user.permissions {
        sqlx::query("INSERT INTO user_permissions (user_id, action) VALUES (?1, ?2)")
            .bind(id_to_db(user.id.as_uuid()))
            .bind(action)
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
    }
    Ok(())
}

#[async_trait]
impl UserStore for SqliteUserStore {
    async fn create_user(&self, user: &User, audit: &AuditRecord) -> Result<(), CreateUserError> {
        let user = user.clone();
        let audit = audit.clone();
        self.run(|pool| async move {
            // IMMEDIATE takes the write lock at once, so the transaction never has to upgrade
            // a read lock (which SQLite answers with an immediate BUSY under contention).
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            match insert_user(&mut transaction, &user).await {
                Ok(()) => {
                    crate::audit::sqlite::append(&mut transaction, &audit).await?;
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
        self.run(|pool| load_user(pool, "id", id_to_db(id.as_uuid()))).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let email = normalize_email(email);
        self.run(|pool| load_user(pool, "email_normalized", email)).await
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
                    let generation: i64 = row.try_get("generation").map_err(classify)?;
                    Ok(SigningKeyRecord {
                        generation: u32::try_from(generation)
                            .map_err(|_| corrupt(format!("key generation {generation} out of range")))?,
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
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (generation) DO NOTHING",
            )
            .bind(i64::from(key.generation))
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
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(&token.token_hash)
            .bind(id_to_db(token.user_id.as_uuid()))
            .bind(id_to_db(token.family_id))
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
            // IMMEDIATE holds the write lock from the read to the spend: a concurrent use of
            // the same token waits and then finds it spent.
            let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
            let row = sqlx::query(
                "SELECT user_id, family_id, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = ?1",
            )
            .bind(&token_hash)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(classify)?;
            let Some(row) = row else { return Ok(RefreshUse::Invalid) };
            let family_text: String = row.try_get("family_id").map_err(classify)?;
            let family_id = uuid_from_db(&family_text, "family_id")?;
            let used_at: Option<i64> = row.try_get("used_at").map_err(classify)?;
            let revoked_at: Option<i64> = row.try_get("revoked_at").map_err(classify)?;
            let expires_at: i64 = row.try_get("expires_at").map_err(classify)?;
            let outcome = if used_at.is_some() {
                sqlx::query("UPDATE refresh_tokens SET revoked_at = ?2 WHERE family_id = ?1 AND revoked_at IS NULL")
                    .bind(&family_text)
                    .bind(now.as_micros())
                    .execute(&mut *transaction)
                    .await
                    .map_err(classify)?;
                RefreshUse::Reused { family_id }
            } else if revoked_at.is_some() || expires_at <= now.as_micros() {
                RefreshUse::Invalid
            } else {
                sqlx::query("UPDATE refresh_tokens SET used_at = ?2 WHERE token_hash = ?1")
                    .bind(&token_hash)
                    .bind(now.as_micros())
                    .execute(&mut *transaction)
                    .await
                    .map_err(classify)?;
                RefreshUse::Spent { user_id: UserId::from_uuid(uuid(&row, "user_id")?), family_id }
            };
            transaction.commit().await.map_err(classify)?;
            Ok(outcome)
        })
        .await
    }
}

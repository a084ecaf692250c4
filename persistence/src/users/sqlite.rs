//! The SQLite identity store (sqlx 0.8.6), on its own pool and runtime against the ledger's
//! database file. The domain stores (`UserStore` in `sql.rs`, …) are written once for both
//! backends on its `SqlStore` face; `reads` adds the ledger read-model queries.
//!
//! The file is shared with the ledger store's pool. WAL lets readers run beside either
//! writer; the two writers (the journal and, rarely, a registration or a token spend) take
//! turns on SQLite's write lock, each waiting up to `BUSY_TIMEOUT` for the other.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::runtime::StoreRuntime;
use crate::sqlite::classify;
use crate::store::StoreError;

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

impl crate::sql::IdentitySql for SqliteUserStore {}

impl crate::sql::SqlStore for SqliteUserStore {
    fn sql_pool(&self) -> crate::sql::SqlPool {
        crate::sql::SqlPool::Sqlite(self.pool.clone())
    }

    fn sql_runtime(&self) -> &StoreRuntime {
        &self.runtime
    }
}

//! The SQLite identity store (sqlx 0.8.6), on its own pool and runtime against the ledger's
//! database file. The domain stores (`UserStore` in `sql.rs`, …) are written once for both
//! backends on its `SqlStore` face; `reads` adds the ledger read-model queries.
//!
//! The file is shared with the ledger store's pool. WAL lets readers run beside either
//! writer; the two writers (the journal and, rarely, a registration or a token spend) take
//! turns on SQLite's write lock, each waiting up to `sqlite::BUSY_TIMEOUT` for the other.

use sqlx::sqlite::SqlitePool;

use crate::runtime::StoreRuntime;
use crate::store::StoreError;

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
        let (pool, runtime) = crate::sqlite::open_pool(url, "tally-sqlite-users").await?;
        Ok(SqliteUserStore { pool, runtime })
    }

    /// Applies the versioned migrations in `persistence/migrations/sqlite` not yet applied:
    /// the same set the ledger store applies, so either may run first.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::sql::migrate(self).await
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

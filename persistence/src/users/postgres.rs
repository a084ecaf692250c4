//! The Postgres identity store (sqlx 0.8.6), on its own pool and runtime against the ledger's
//! database. The domain stores (`UserStore` in `sql.rs`, …) are written once for both
//! backends on its `SqlStore` face; `reads` adds the ledger read-model queries.

use sqlx::postgres::PgPool;

use crate::runtime::StoreRuntime;
use crate::store::StoreError;

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
        crate::sql::migrate(self).await
    }
}

impl crate::sql::IdentitySql for PgUserStore {}

impl crate::sql::SqlStore for PgUserStore {
    fn sql_pool(&self) -> crate::sql::SqlPool {
        crate::sql::SqlPool::Postgres(self.pool.clone())
    }

    fn sql_runtime(&self) -> &StoreRuntime {
        &self.runtime
    }
}

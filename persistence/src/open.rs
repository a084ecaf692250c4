//! Opening a store from a `TALLY_DATABASE_URL`.

use std::sync::Arc;

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

/// Where `tally serve` keeps its data when no URL is given: an SQLite file under
/// `./tally-data/`, so Tally runs with no set-up at all.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://tally-data/tally.db";

/// Opens the store the URL names (`postgres://…` or `sqlite://path`) and applies its
/// migrations.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PgStore::connect(url).await?;
        store.migrate().await?;
        Ok(Arc::new(store))
    } else if url.starts_with("sqlite:") {
        let store = SqliteStore::open(url).await?;
        store.migrate().await?;
        Ok(Arc::new(store))
    } else {
        Err(StoreError::Corrupt(format!("unsupported database url (want postgres:// or sqlite://): {url}")))
    }
}

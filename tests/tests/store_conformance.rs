//! Every store against the one conformance suite (`tally_tests::conformance`): the in-memory
//! reference store, the SQLite store and the Postgres store, each scenario on a fresh store
//! (Postgres: a fresh database on the cluster `scripts/test` starts).

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use tally_persistence::sqlite::SqliteStore;
use tally_persistence::{MemoryStore, Store};
use tally_tests::conformance;

/// A SQLite database file under the system temp directory, unique to one test, deleted (with
/// its WAL and shared-memory files) when the test ends, passed or failed.
struct TempDb {
    dir: PathBuf,
}

impl TempDb {
    fn new(test: &str) -> TempDb {
        let dir = std::env::temp_dir().join(format!("tally-conformance-{test}-{}", uuid::Uuid::new_v4()));
        TempDb { dir }
    }

    /// A URL in a directory that does not exist yet: opening must create it.
    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.join("nested").join("ledger.db").display())
    }

    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(&self.url()).await.unwrap())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

macro_rules! conformance_tests {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    tally_tests::conformance::$scenario(super::memory()).await;
                }
            )*
        }

        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = super::TempDb::new(stringify!($scenario));
                    tally_tests::conformance::$scenario(db.open().await).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (store, _) = tally_tests::postgres::fresh_store("conformance").await;
                    tally_tests::conformance::$scenario(store).await;
                }
            )*
        }
    };
}

conformance_tests!(
    accounts_round_trip,
    holds_placed_again_round_trip,
    changes_to_rows_still_committing_land,
    exact_amounts_round_trip,
    transfers_round_trip,
    postings_and_live_holds,
    committed_seq_and_gaps,
    wallets_round_trip,
    pricing_round_trips,
    idempotency_keys_find_their_transfers,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_restart() {
    // A memory store cannot be reopened; the same store stands in for the reopened one, which
    // still checks that a new journal numbers on from its committed_seq.
    let store = memory();
    conformance::restart(|| {
        let store = store.clone();
        async move { store }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restart() {
    let db = TempDb::new("restart");
    conformance::restart(|| db.open()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart() {
    let (_, url) = tally_tests::postgres::fresh_store("restart").await;
    conformance::restart(|| {
        let url = url.clone();
        async move {
            let store: Arc<dyn Store> = Arc::new(tally_persistence::postgres::PgStore::connect(&url).await.unwrap());
            store
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_migrate_is_idempotent_and_reopening_keeps_the_data() {
    let db = TempDb::new("migrate");
    let store = SqliteStore::open(&db.url()).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.committed_seqs().await.unwrap(), Vec::<u64>::new(), "a new database has no shards yet");
    assert_eq!(store.open_shards(2).await.unwrap(), vec![0, 0], "two shards, nothing committed");
    drop(store);
    let store = SqliteStore::open(&db.url()).await.unwrap();
    assert_eq!(store.committed_seqs().await.unwrap(), vec![0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_is_usable_from_a_current_thread_runtime_and_dropped_inside_one() {
    // The journal writer calls the store from its own current-thread runtime, and a store may
    // be dropped inside any async context: neither may depend on the runtime that opened it.
    let db = TempDb::new("runtimes");
    let store = db.open().await;
    let handle = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            assert_eq!(store.committed_seqs().await.unwrap(), Vec::<u64>::new());
            drop(store);
        });
    });
    handle.join().unwrap();
}

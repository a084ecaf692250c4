//! Every store against the one conformance suite (`tally_tests::conformance`): the in-memory
//! reference store, the SQLite store and the Postgres store, each scenario on a fresh store
//! (Postgres: a fresh database on the cluster `scripts/test` starts).

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use tally_persistence::sqlite::SqliteStore;
use tally_persistence::{MemoryStore, Store, StoreReads};
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
    wallet_assets_through_two_journals_keep_their_arrival_order,
    pricing_round_trips,
    idempotency_keys_find_their_transfers,
    a_key_given_back_is_free_again,
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
async fn memory_a_batch_is_known_by_its_own_link() {
    conformance::a_batch_is_known_by_its_own_link(memory(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_batch_is_known_by_its_own_link() {
    let db = TempDb::new("own_link");
    conformance::a_batch_is_known_by_its_own_link(db.open().await, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_batch_is_known_by_its_own_link() {
    let (store, _) = tally_tests::postgres::fresh_store("own_link").await;
    conformance::a_batch_is_known_by_its_own_link(store, true).await;
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

/// Postgres replaces every transfer row a batch may find stored in one statement, the legs of
/// still-running sagas included (`upsert_transfers`: each row's legs are a slice of two flat
/// arrays). Two sagas cut by two commits and a row without legs, in one batch: each saga reads
/// back exactly its own legs, in posting order, and the other row none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sagas_cut_by_two_commits_keep_each_its_own_legs() {
    use rust_decimal::Decimal;
    use tally_engine::transfer::SagaStep;
    use tally_engine::{AccountKind, Currency, PendingReason, TransferId, TransferStatus};

    let (store, url) = tally_tests::postgres::fresh_store("legs").await;
    let mut driver = conformance::Driver::start(store).await;
    let one = Decimal::ONE;
    // The source may go below zero (a credit limit), so its holds need no funding first.
    let a = driver.open_account(Currency::USD, AccountKind::User, Decimal::from(100));
    let [b, c, d] = [(); 3].map(|()| driver.open_account(Currency::USD, AccountKind::User, Decimal::ZERO));
    driver.durable().await;

    // Batch 1: t1 and t2 hold at their source and credit their destination (new `processing`
    // rows with one leg each); t3 stops pending (a new row in that state).
    let request = driver.request(a, b, one);
    let t1 = driver.start_transfer(request);
    let request = driver.request(a, c, one);
    let t2 = driver.start_transfer(request);
    let request = driver.request(a, d, one);
    let t3 = driver.start_transfer(request);
    for (transfer, destination) in [(t1, b), (t2, c)] {
        driver.hold(a, transfer, one);
        driver.step(transfer, SagaStep::Held);
        driver.credit(destination, transfer, one);
        driver.step(transfer, SagaStep::Credited);
    }
    driver.step(t3, SagaStep::Held);
    driver.update_transfer(t3, |transfer, at| {
        transfer.transition(TransferStatus::Pending, at).unwrap();
        transfer.pending_reason = Some(PendingReason::ManualExecution);
    });
    driver.durable().await;

    // Batch 2: each saga posts at its source, still running; t3 is executed (a row without
    // legs). All three rows exist, so all three are the one upsert.
    let before = driver.settle().await;
    driver.post(a, t1);
    driver.post(a, t2);
    driver.transition(t3, TransferStatus::Processing);
    driver.durable_as_one_batch(before).await;
    driver.assert_store_matches().await;

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let legs = |id: TransferId| {
        let pool = pool.clone();
        async move {
            let row: (Option<Vec<uuid::Uuid>>, Option<Vec<i64>>) =
                sqlx::query_as("SELECT leg_accounts, leg_versions FROM transfers WHERE id = $1")
                    .bind(id.as_uuid())
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            let postings: Vec<(uuid::Uuid, i64)> =
                sqlx::query_as("SELECT account_id, version FROM postings WHERE transfer_id = $1 ORDER BY seq")
                    .bind(id.as_uuid())
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            (row, postings)
        }
    };
    for (id, accounts) in [(t1, [b, a]), (t2, [c, a])] {
        let ((leg_accounts, leg_versions), postings) = legs(id).await;
        let expected: Vec<uuid::Uuid> = accounts.iter().map(|account| account.as_uuid()).collect();
        assert_eq!(leg_accounts, Some(expected.clone()), "transfer {id}: its own legs' accounts, in order");
        assert_eq!(postings.iter().map(|(account, _)| *account).collect::<Vec<_>>(), expected);
        let versions: Vec<i64> = postings.iter().map(|(_, version)| *version).collect();
        assert_eq!(leg_versions, Some(versions), "transfer {id}: each leg's account version after its posting");
    }
    let ((leg_accounts, leg_versions), _) = legs(t3).await;
    assert_eq!((leg_accounts, leg_versions), (None, None), "a row without legs has none");
    driver.shutdown().await;
}

/// Postgres writes a small batch of transfers as one call (`postgres/write_batch.rs`) and a
/// large one by `COPY` and `UNNEST` statements (`ONE_CALL_ROWS_MAX` rows apart). Both ways
/// must store the same: here the same two batches at both sizes, one that cuts every saga
/// after money moved (new `processing` rows with legs, holds placed) and one that ends them
/// (the rows replaced, holds removed, events).
#[tokio::test]
async fn postgres_small_and_large_batches_store_the_same() {
    use rust_decimal::Decimal;
    use tally_engine::transfer::SagaStep;
    use tally_engine::{AccountKind, Currency, TransferStatus};

    for sagas in [2, 40] {
        let (store, url) = tally_tests::postgres::fresh_store(&format!("batch_sizes_{sagas}")).await;
        let mut driver = conformance::Driver::start(store).await;
        let one = Decimal::ONE;
        let source = driver.open_account(Currency::EUR, AccountKind::User, Decimal::from(1000));
        let destination = driver.open_account(Currency::EUR, AccountKind::User, Decimal::ZERO);
        driver.durable().await;

        let before = driver.settle().await;
        let transfers: Vec<_> = (0..sagas)
            .map(|_| {
                let request = driver.request(source, destination, one);
                let transfer = driver.start_transfer(request);
                driver.hold(source, transfer, one);
                driver.step(transfer, SagaStep::Held);
                driver.credit(destination, transfer, one);
                driver.step(transfer, SagaStep::Credited);
                transfer
            })
            .collect();
        driver.durable_as_one_batch(before).await;
        driver.assert_store_matches().await;
        driver.assert_non_terminal_transfers_match().await;

        let before = driver.settle().await;
        for &transfer in &transfers {
            driver.post(source, transfer);
            driver.step(transfer, SagaStep::Posted);
            driver.transition(transfer, TransferStatus::Completed);
        }
        driver.durable_as_one_batch(before).await;
        driver.assert_store_matches().await;
        driver.assert_non_terminal_transfers_match().await;
        driver.shutdown().await;
        assert_feed_of_one_shard(&url, &transfers).await;
    }
}

/// The events the test above made, read back through the feed from their batches' rows
/// (migration 0061): the two accounts opened, then each transfer's completion, in seq order,
/// the same whole and a page of one at a time, filtered by type, with the hash chain intact.
async fn assert_feed_of_one_shard(url: &str, transfers: &[tally_engine::TransferId]) {
    use tally_persistence::events::chain::ChainReport;
    use tally_persistence::events::{EventStore, EventType, FeedPosition};

    let feed = tally_persistence::users::postgres::PgUserStore::connect(url).await.unwrap();
    let start = FeedPosition::default();
    let all = feed.events_after(&start, None, 1_000).await.unwrap();
    let kinds: Vec<EventType> = all.iter().map(|event| event.kind).collect();
    let mut expected = vec![EventType::AccountOpened; 2];
    expected.extend(std::iter::repeat_n(EventType::TransferCompleted, transfers.len()));
    assert_eq!(kinds, expected);
    assert!(all.windows(2).all(|pair| pair[0].seq < pair[1].seq), "{all:?}");
    let completed: Vec<uuid::Uuid> = all[2..].iter().map(|event| event.object).collect();
    assert_eq!(completed, transfers.iter().map(|transfer| transfer.as_uuid()).collect::<Vec<_>>());

    let mut paged = Vec::new();
    let mut position = start.clone();
    while let [event] = feed.events_after(&position, None, 1).await.unwrap().as_slice() {
        position.advance(event.shard, event.seq);
        paged.push(event.clone());
    }
    assert_eq!(paged, all);

    let only = [EventType::TransferCompleted];
    assert_eq!(feed.events_after(&start, Some(&only), 1_000).await.unwrap(), all[2..]);
    let behind = feed.backlog(&start, Some(&only), 1_000).await.unwrap();
    assert_eq!(behind.events, transfers.len() as u64);
    assert!(matches!(feed.verify_ledger_chain().await.unwrap(), ChainReport::Intact { .. }));
}

/// Migration 0061 moves the events a Postgres store kept a row each into batch rows: after the
/// upgrade the feed serves every one of them with the same fields and bytes (a NULL `data`
/// included), in the same order, and a position inside the old history resumes after it.
#[tokio::test]
async fn postgres_events_stored_a_row_each_are_served_the_same_after_the_upgrade() {
    use tally_persistence::events::{EventStore, EventType, FeedPosition, StoredEvent};
    use tally_persistence::users::postgres::PgUserStore;

    let url = tally_tests::postgres::fresh_database("events_upgrade").await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let mut before = sqlx::migrate!("../persistence/migrations/postgres");
    before.migrations = before.migrations.iter().filter(|migration| migration.version < 61).cloned().collect();
    before.run(&pool).await.unwrap();
    sqlx::query("INSERT INTO journal_shards (shard, committed_seq) VALUES (0, 9), (1, 4)")
        .execute(&pool)
        .await
        .unwrap();
    let object = uuid::Uuid::from_u128;
    let stored = vec![
        StoredEvent {
            shard: 0,
            seq: 3,
            kind: EventType::AccountOpened,
            object: object(1),
            occurred_at: tally_engine::Timestamp::from_micros(10),
            data: Some(r#"{"id":"a","balance":"1.00"}"#.to_owned()),
        },
        StoredEvent {
            shard: 1,
            seq: 2,
            kind: EventType::TransferCompleted,
            object: object(2),
            occurred_at: tally_engine::Timestamp::from_micros(11),
            data: None,
        },
        StoredEvent {
            shard: 0,
            seq: 5,
            kind: EventType::TransferCompleted,
            object: object(3),
            occurred_at: tally_engine::Timestamp::from_micros(12),
            data: Some("{\"note\":\"é \\u0000 ✓\"}".to_owned()),
        },
        StoredEvent {
            shard: 0,
            seq: 9,
            kind: EventType::TransferPending,
            object: object(4),
            occurred_at: tally_engine::Timestamp::from_micros(12),
            data: Some("{}".to_owned()),
        },
    ];
    for event in &stored {
        sqlx::query(
            "INSERT INTO events (shard, seq, type, object_id, occurred_at, data) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(i16::try_from(event.shard).unwrap())
        .bind(i64::try_from(event.seq).unwrap())
        .bind(event.kind.as_str())
        .bind(event.object)
        .bind(event.occurred_at.as_micros())
        .bind(event.data.as_deref())
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    // The current store migrates the rest, 0061 among them.
    let store = tally_persistence::postgres::PgStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let feed = PgUserStore::connect(&url).await.unwrap();
    assert_eq!(feed.events_after(&FeedPosition::default(), None, 100).await.unwrap(), stored);
    let inside = FeedPosition { default_after: 0, shards: vec![(0, 3), (1, 2)] };
    assert_eq!(feed.events_after(&inside, None, 100).await.unwrap(), stored[2..]);
}

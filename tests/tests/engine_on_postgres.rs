//! The engine on a real Postgres: transfers are durable when acknowledged, the store's

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! snapshots and postings agree, and a restarted engine sees every change.

use std::sync::Arc;
use std::time::Duration;
use tally_persistence::StoreReads;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_actors::{Engine, EngineConfig};
use tally_engine::{Account, Currency, TransferKind, TransferRequest, TransferStatus, UserId};
use tally_tests::{assert_store_consistent, internal_request, postgres};

/// An internal transfer requested by the source's owner.
fn internal(engine: &Engine, source: &Account, destination: &Account, amount: Decimal) -> TransferRequest {
    TransferRequest { initiated_by: source.owner, ..internal_request(engine, source, destination, amount) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_transfers_are_in_postgres_and_survive_a_restart() {
    let (store, url) = postgres::fresh_store("engine").await;
    let engine = Engine::start(store.clone(), EngineConfig::default()).await.unwrap();
    let owner = UserId::from_u128(1);
    let mut accounts = Vec::new();
    for _ in 0..8 {
        accounts.push(engine.open_account(owner, Currency::ETH, Decimal::ZERO).await.unwrap());
    }
    for account in &accounts {
        let funded = engine
            .adjust(TransferKind::AdminCredit, account.id, dec!(10.000000000000000001), None, None, None)
            .await
            .unwrap();
        assert_eq!(funded.status, TransferStatus::Completed);
    }
    let transfers = (0..400).map(|i| {
        let (source, destination) = (&accounts[i % 8], &accounts[(i + 3) % 8]);
        engine.transfer(internal(&engine, source, destination, dec!(0.000000000000000001)))
    });
    let results = futures::future::join_all(transfers).await;
    for result in &results {
        let transfer = result.as_ref().unwrap();
        // Acknowledged means durable: the store already has it, without waiting.
        let stored = store.load_transfer(transfer.id).await.unwrap().unwrap();
        assert_eq!(stored.value.status, TransferStatus::Completed);
    }
    let balances: Vec<Decimal> = futures::future::join_all(accounts.iter().map(|a| engine.account(a.id)))
        .await
        .into_iter()
        .map(|a| a.unwrap().balance())
        .collect();
    engine.shutdown(Duration::from_secs(5)).await;
    assert_store_consistent(store.as_ref()).await;
    drop(engine);
    drop(store);

    let reopened = Arc::new(tally_persistence::postgres::PgStore::connect(&url).await.unwrap());
    let engine = Engine::start(reopened.clone(), EngineConfig::default()).await.unwrap();
    for (account, balance) in accounts.iter().zip(&balances) {
        assert_eq!(engine.account(account.id).await.unwrap().balance(), *balance, "18 decimals survive");
    }
    let total: Decimal = balances.iter().sum();
    assert_eq!(total, dec!(80.000000000000000008));
    engine.shutdown(Duration::from_secs(5)).await;
}

/// The wall clock going back across a restart does not reorder an account's postings: the
/// restarted engine books no earlier than the last committed batch, so the postings after a
/// snapshot are still found after it, and a third start sees the right balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_that_went_back_across_a_restart_loses_no_posting() {
    let (store, url) = postgres::fresh_store("clockback").await;
    let owner = UserId::from_u128(1);
    // First run: an hour ahead of the machine's clock. Shutdown writes the snapshots, booked
    // an hour from now.
    let ahead = Arc::new(tally_tests::clock::ShiftedClock::default());
    ahead.advance(Duration::from_secs(3_600));
    let engine = Engine::start_with(store.clone(), EngineConfig::default(), ahead, Arc::new(tally_actors::RandomIds))
        .await
        .unwrap();
    let account = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    engine.adjust(TransferKind::AdminCredit, account.id, dec!(10), None, None, None).await.unwrap();
    engine.shutdown(Duration::from_secs(5)).await;
    drop(engine);
    drop(store);

    // Second run: the clock is back to now, an hour before those snapshots.
    let store = Arc::new(tally_persistence::postgres::PgStore::connect(&url).await.unwrap());
    let engine = Engine::start(store.clone(), EngineConfig::default()).await.unwrap();
    engine.adjust(TransferKind::AdminCredit, account.id, dec!(5), None, None, None).await.unwrap();
    assert_eq!(engine.account(account.id).await.unwrap().balance(), dec!(15));
    // Halt: no snapshot is written, so the third run must find the posting after the snapshot.
    engine.halt().await;
    drop(engine);
    drop(store);

    let store = Arc::new(tally_persistence::postgres::PgStore::connect(&url).await.unwrap());
    let engine = Engine::start(store.clone(), EngineConfig::default()).await.unwrap();
    assert_eq!(engine.account(account.id).await.unwrap().balance(), dec!(15), "the second run's posting counts");
    engine.shutdown(Duration::from_secs(5)).await;
}

/// The hold of a saga whose transfer has no row yet is kept back from the store by the
/// journal's writer (persistence/src/batch.rs). While it is kept, the account loaded again
/// from the store (after passivation) comes back with it; once released, without it; written
/// with its transfer's row when the transfer gets one (here: pending). After a crash the kept
/// hold is simply gone, with nothing of its transfer in the store, and the ledger is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_kept_back_from_the_store_comes_back_with_its_passivated_account_and_goes_with_its_release() {
    use tally_engine::{AccountCommand, Record, Transfer, TransferId, transfer::SagaStep};

    let (store, url) = postgres::fresh_store("keptholds").await;
    let mut config = EngineConfig::default();
    config.actors.idle_timeout = Duration::ZERO;
    // Swept by hand below.
    config.actors.passivation_sweep_interval = Duration::from_secs(3_600);
    let engine = Engine::start(store.clone(), config.clone()).await.unwrap();
    let owner = UserId::from_u128(1);
    let alice = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    let bob = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    engine.adjust(TransferKind::AdminCredit, alice.id, dec!(100), None, None, None).await.unwrap();
    let journal = engine.journals().shard(engine.shard_of(alice.id.as_uuid())).clone();
    // A saga's first records, as its steps 1 and 2 make them in its source's journal: the
    // transfer started, then the hold.
    let start = |id: TransferId| {
        let transfer = Transfer::start(TransferRequest { id, ..internal(&engine, &alice, &bob, dec!(30)) });
        journal.append(Record::Transfer(Box::new(transfer.clone()))).unwrap();
        transfer
    };
    let hold = |transfer: TransferId| AccountCommand::Hold { transfer, amount: dec!(30), currency: Currency::USD };
    let stored_holds = |store: Arc<tally_persistence::postgres::PgStore>, transfer: TransferId| async move {
        store.live_holds().await.unwrap().into_iter().filter(|hold| hold.transfer == transfer).count()
    };

    let first = start(engine.new_transfer_id());
    engine.accounts().command(alice.id, hold(first.id)).await.unwrap();
    engine.journals().barrier().await.unwrap();
    assert_eq!(stored_holds(store.clone(), first.id).await, 0, "kept back, not written");
    assert_eq!(engine.journals().kept_holds_of(alice.id), vec![(first.id, dec!(30))]);
    tally_tests::passivate(&engine, alice.id).await;
    let loaded = engine.account(alice.id).await.unwrap();
    assert_eq!(loaded.position.hold_of(first.id), Some(dec!(30)), "loaded from the store with the kept hold");
    assert_eq!(loaded.available().unwrap(), dec!(70));

    engine.accounts().command(alice.id, AccountCommand::Release { transfer: first.id }).await.unwrap();
    engine.journals().barrier().await.unwrap();
    assert!(engine.journals().kept_holds_of(alice.id).is_empty(), "released: no longer kept");
    assert_eq!(stored_holds(store.clone(), first.id).await, 0, "and never written");
    tally_tests::passivate(&engine, alice.id).await;
    let loaded = engine.account(alice.id).await.unwrap();
    assert_eq!(loaded.position.hold_of(first.id), None, "a released hold does not come back");
    assert_eq!(loaded.available().unwrap(), dec!(100));

    // A transfer that gets a row takes its kept hold into the store with it.
    let mut second = start(engine.new_transfer_id());
    engine.accounts().command(alice.id, hold(second.id)).await.unwrap();
    engine.journals().barrier().await.unwrap();
    assert_eq!(stored_holds(store.clone(), second.id).await, 0);
    second.status = TransferStatus::Pending;
    second.step = SagaStep::Held;
    journal.append(Record::Transfer(Box::new(second.clone()))).unwrap();
    engine.journals().barrier().await.unwrap();
    assert_eq!(stored_holds(store.clone(), second.id).await, 1, "written with the pending transfer's row");
    assert!(engine.journals().kept_holds_of(alice.id).is_empty());
    tally_tests::passivate(&engine, alice.id).await;
    assert_eq!(
        engine.account(alice.id).await.unwrap().position.hold_of(second.id),
        Some(dec!(30)),
        "once, from the store"
    );

    // A crash with a hold kept: the restarted engine has neither the hold nor its transfer.
    let third = start(engine.new_transfer_id());
    engine.accounts().command(alice.id, hold(third.id)).await.unwrap();
    engine.journals().barrier().await.unwrap();
    assert_eq!(engine.journals().kept_holds_of(alice.id), vec![(third.id, dec!(30))]);
    engine.halt().await;
    drop(engine);
    drop(store);
    let store = Arc::new(tally_persistence::postgres::PgStore::connect(&url).await.unwrap());
    let engine = Engine::start(store.clone(), config).await.unwrap();
    assert!(store.load_transfer(third.id).await.unwrap().is_none(), "its transfer was never written");
    let account = engine.account(alice.id).await.unwrap();
    assert_eq!(account.position.hold_of(third.id), None);
    assert_eq!(account.position.hold_of(second.id), Some(dec!(30)), "the pending transfer keeps its hold");
    assert_eq!(account.available().unwrap(), dec!(70));
    engine.shutdown(Duration::from_secs(5)).await;
    assert_store_consistent(store.as_ref()).await;
}

/// The journal's writer plans its statements once, on the tables as they are when it first
/// runs them (or when statistics change), and keeps those plans (`persistence/src/postgres.rs`,
/// `writer_options`). On a fresh database that is on tiny tables, where a hash join over a
/// sequential scan is the cheapest plan for a keyed write; kept, it would scan the whole table
/// on every commit as the ledger grows. Here the writer's plans are made on tiny tables (every kind of write:
/// new accounts, a status change, single transfers, a burst written by `COPY`, pending
/// transfers with their holds executed and rejected, balance snapshots), then each table gets
/// tens of thousands of rows, and the same writes again must not scan any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_writer_never_scans_a_table_even_with_plans_made_on_empty_tables() {
    use sqlx::Row;
    use tally_engine::StatusAction;

    const TABLES: [&str; 6] = ["accounts", "holds", "transfers", "postings", "journal_batches", "event_batches"];
    let (store, url) = postgres::fresh_store("writerplans").await;
    let mut config = EngineConfig::default();
    // Balance snapshots written within the test, not 30 s later.
    config.journal.snapshot_interval = Duration::from_millis(50);
    let engine = Engine::start(store.clone(), config).await.unwrap();
    let owner = UserId::from_u128(1);

    // One round of every write the journal makes for the ledger.
    let round = |engine: Engine| async move {
        let accounts: Vec<Account> =
            futures::future::join_all((0..4).map(|_| engine.open_account(owner, Currency::USD, Decimal::ZERO)))
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
        for account in &accounts {
            engine.adjust(TransferKind::AdminCredit, account.id, dec!(1000), None, None, None).await.unwrap();
        }
        engine.set_account_status(accounts[3].id, StatusAction::Block).await.unwrap();
        engine.set_account_status(accounts[3].id, StatusAction::Unblock).await.unwrap();
        for i in 0..3 {
            engine.transfer(internal(&engine, &accounts[i], &accounts[i + 1], dec!(1))).await.unwrap();
        }
        // Pending external transfers: their holds placed now, and removed as they are decided
        // below, amid a burst of transfers, so that the removals land in batches past the
        // one-call size, written statement by statement.
        let mut pending = Vec::new();
        for i in 0..8 {
            let mut request = internal(&engine, &accounts[i % 4], &accounts[i % 4], dec!(5));
            request.kind = TransferKind::External;
            request.destination = tally_engine::system_accounts::settlement(Currency::USD);
            let transfer = engine.transfer(request).await.unwrap();
            assert_eq!(transfer.status, TransferStatus::Pending);
            pending.push(transfer.id);
        }
        let burst =
            (0..300).map(|i| engine.transfer(internal(&engine, &accounts[i % 4], &accounts[(i + 1) % 4], dec!(0.01))));
        let decisions = pending.iter().enumerate().map(|(i, id)| {
            let engine = engine.clone();
            let id = *id;
            async move {
                match i % 3 {
                    0 => engine.execute(id).await,
                    1 => engine.reject(id).await,
                    _ => engine.cancel(id).await,
                }
                .unwrap()
            }
        });
        let (transfers, _) = futures::join!(futures::future::join_all(burst), futures::future::join_all(decisions));
        for result in transfers {
            assert_eq!(result.unwrap().status, TransferStatus::Completed);
        }
        // Past the snapshot interval: the changed balances are written.
        tokio::time::sleep(Duration::from_millis(200)).await;
        engine.adjust(TransferKind::AdminCredit, accounts[0].id, dec!(1), None, None, None).await.unwrap();
        engine.journals().barrier().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        engine.journals().barrier().await.unwrap();
    };

    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
    // This connection's own counts (below) must not count as scans either.
    sqlx::query("SET enable_seqscan = off").execute(&mut db).await.unwrap();
    // Statistics stay those of the tiny tables until the end: an autovacuum `ANALYZE` after
    // the rows below arrive would have the writer plan again, for large tables.
    for table in TABLES {
        sqlx::query(&format!("ALTER TABLE {table} SET (autovacuum_enabled = off)")).execute(&mut db).await.unwrap();
    }
    // Table statistics reach `pg_stat_user_tables` when a backend flushes them: at most every
    // second while busy, within ten seconds once idle. Caught up when every row in the table
    // has been counted as inserted (nothing here deletes from these three).
    async fn caught_up(db: &mut sqlx::PgConnection) -> std::collections::HashMap<String, i64> {
        for _ in 0..300 {
            let rows = sqlx::query(
                "SELECT relname::text AS name, seq_scan, n_tup_ins,
                        (SELECT count(*) FROM transfers) AS transfers, (SELECT count(*) FROM postings) AS postings,
                        (SELECT count(*) FROM journal_batches) AS batches
                 FROM pg_stat_user_tables",
            )
            .fetch_all(&mut *db)
            .await
            .unwrap();
            let inserted = |table: &str| {
                rows.iter().find(|row| row.get::<String, _>("name") == table).map(|row| row.get::<i64, _>("n_tup_ins"))
            };
            let first = &rows[0];
            if inserted("transfers") == Some(first.get("transfers"))
                && inserted("postings") == Some(first.get("postings"))
                && inserted("journal_batches") == Some(first.get("batches"))
            {
                return rows.iter().map(|row| (row.get("name"), row.get("seq_scan"))).collect();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("table statistics did not catch up within 30 s");
    }

    // The writer's plans are made here, on (nearly) empty tables; then made again on tables
    // that statistics say are tiny (`ANALYZE`, which autovacuum runs on its own as a fresh
    // ledger starts, invalidates plans): where a whole-table scan looks cheapest.
    round(engine.clone()).await;
    sqlx::query("ANALYZE").execute(&mut db).await.unwrap();
    round(engine.clone()).await;

    // Tens of thousands of rows in every table the writer touches (rows of nothing the
    // engine knows: other accounts, other shards).
    for statement in [
        "INSERT INTO accounts (id, owner_id, currency, kind, status, balance, held, credit_limit, created_at)
         SELECT gen_random_uuid(), NULL, 'USD', 'user', 'active', 0, 0, 0, 0 FROM generate_series(1, 30000)",
        "INSERT INTO holds (account_id, transfer_id, amount, seq)
         SELECT gen_random_uuid(), gen_random_uuid(), 1, 0 FROM generate_series(1, 30000)",
        "INSERT INTO transfers (id, kind, status, step, source_id, destination_id, amount, currency, fee,
                                destination_amount, destination_currency, created_at, seq)
         SELECT gen_random_uuid(), 'internal', 'completed', 'done', gen_random_uuid(), gen_random_uuid(), 1, 'USD', 0,
                1, 'USD', 0, 0 FROM generate_series(1, 30000)",
        "INSERT INTO postings (account_id, booked_at, version, transfer_id, currency, direction, amount, balance_after, shard, seq)
         SELECT gen_random_uuid(), 0, 1, gen_random_uuid(), 'USD', 'credit', 1, 1, 900, 0 FROM generate_series(1, 30000)",
        "INSERT INTO journal_batches (shard, last_seq, first_seq, hash)
         SELECT 900, n, n, '\\x00' FROM generate_series(1, 30000) AS n",
        "INSERT INTO event_batches (shard, last_seq, first_seq, occurred_at, seqs, types, objects, data)
         SELECT 900, n, n, 0, ARRAY[n], ARRAY['x'], ARRAY[gen_random_uuid()], ARRAY['{}'] FROM generate_series(1, 30000) AS n",
    ] {
        sqlx::query(statement).execute(&mut db).await.unwrap();
    }
    // Every backend's counts from the rounds above, flushed: an idle backend flushes its
    // pending statistics within 10 s (PostgreSQL 15's `PGSTAT_IDLE_INTERVAL`), and `caught_up`
    // sees only the writers' inserts. A scan from before the rows below (recovery's of `holds`
    // at start, or a read of a table nearly empty then, both legitimate; `holds` counts 3 by
    // here) once reached the counts only after `before`, and failed the check in CI.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let before = caught_up(&mut db).await;

    round(engine.clone()).await;
    engine.shutdown(Duration::from_secs(5)).await;
    let after = caught_up(&mut db).await;
    for table in TABLES {
        assert_eq!(
            after[table], before[table],
            "{table} was scanned whole while the journal wrote to it (its seq_scan count rose)"
        );
    }
}

/// A database that takes no writes for a while (what a client meets during a failover, or on
/// a primary turned standby: SQLSTATE 25006) is waited out like an outage: the transfer
/// committed meanwhile is not acknowledged while it lasts, and completes once writes are taken
/// again, with the journal still running. It used to count as corrupt data, so the journal
/// stopped for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_takes_no_writes_for_a_while_is_waited_out_not_taken_for_corruption() {
    use sqlx::Connection;
    let (store, url) = postgres::fresh_store("readonly").await;
    let database = url.rsplit_once('/').unwrap().1.to_owned();
    let engine = Engine::start(store.clone(), EngineConfig::default()).await.unwrap();
    let owner = UserId::from_u128(1);
    let alice = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    let bob = engine.open_account(owner, Currency::USD, Decimal::ZERO).await.unwrap();
    engine.adjust(TransferKind::AdminCredit, alice.id, dec!(100), None, None, None).await.unwrap();

    // Every new session is read-only from now on, and the engine's sessions are ended so that
    // its writers connect again.
    let mut admin = sqlx::PgConnection::connect(&postgres::admin_url()).await.unwrap();
    let sessions_ended = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    );
    sqlx::query(&format!("ALTER DATABASE {database} SET default_transaction_read_only = on"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(&sessions_ended).execute(&mut admin).await.unwrap();
    let transfer = {
        let engine = engine.clone();
        let request = internal(&engine, &alice, &bob, dec!(10));
        tokio::spawn(async move { engine.transfer(request).await })
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!transfer.is_finished(), "not acknowledged while the database takes no writes");
    assert!(!engine.journals().has_failed(), "the journal waits; it did not stop");

    sqlx::query(&format!("ALTER DATABASE {database} SET default_transaction_read_only = off"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(&sessions_ended).execute(&mut admin).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(30), transfer).await.unwrap().unwrap().unwrap();
    assert_eq!(done.status, TransferStatus::Completed);
    // The test's own pooled sessions were ended too: the first read on each may fail once,
    // and the pool may hold more of them than a handful of retries would use up.
    let mut stored = store.load_transfer(done.id).await;
    for _ in 0..50 {
        if stored.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        stored = store.load_transfer(done.id).await;
    }
    assert_eq!(stored.unwrap().unwrap().value.status, TransferStatus::Completed);
    assert_eq!(engine.account(bob.id).await.unwrap().balance(), dec!(10));
    engine.shutdown(Duration::from_secs(5)).await;
    assert_store_consistent(store.as_ref()).await;
}

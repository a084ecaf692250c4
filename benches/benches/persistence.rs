//! Durable throughput against real databases (issue 3; DESIGN.md §5 and §9).
//!
//! 1. Journal: records/s that one `Journal` commits into Postgres and into SQLite, for each
//!    `batch_records_max` in `BATCH_SIZES`. The records are what the engine writes: the
//!    openings of `JOURNAL_ACCOUNTS` accounts (and the USD settlement account), one admin
//!    funding transfer per account, then `JOURNAL_TRANSFERS` internal transfers between random
//!    accounts, each a saga's five records (transfer started, hold on the source, credit on the
//!    destination, post on the source, transfer completed). Every account record is built by
//!    `decide`/`apply` on a model `Account`, so its `after` snapshot is the real one. Sagas
//!    run in waves of `WAVE_TRANSFERS`, the way concurrent sagas interleave in the journal, so
//!    a hold is placed and removed in different commits at small batch sizes and nets out in
//!    one at large ones. The driver appends everything it can (up to `APPEND_WINDOW_RECORDS`
//!    unacknowledged) and waits for the last `append_acked`: records/s = N / elapsed.
//! 2. Engine: durable in-process transfers/s on Postgres through the real `Engine` (actors,
//!    sagas, journal, `PgStore`), 10,000 funded accounts, uniform random pairs, with 1,024 and
//!    4,096 transfers in flight. Each transfer answers only once its final record is durable.
//!    DESIGN.md §9 asks ≥ 100,000 durable transfers/s (batched, over HTTP); this is the same
//!    engine without HTTP, so it is the ceiling for that figure.
//!
//! Back of the envelope (2 cores, Postgres 15 on the same machine, loopback TCP).
//!
//! Disk. `pg_test_fsync` on this VM: ~0.1 ms per 8 kB `fdatasync`, a few times that for the
//! tens to hundreds of kB of WAL one large commit writes. One fsync per commit, so it matters
//! only at small batches: at 64 records a commit, 0.1-0.5 ms of fsync alone caps a serial
//! committer near 130,000-640,000 records/s; at 8,192 it is noise. SQLite (WAL,
//! `synchronous=FULL`) also fsyncs once per commit.
//!
//! Network. A Postgres commit is BEGIN, the `committed_seq` fence, one `UNNEST` statement per
//! kind of row present (accounts opened, snapshots, holds removed, holds placed, postings,
//! transfers) and COMMIT: ~9 loopback round trips of ~30-60 µs each (both ends must be
//! scheduled on two busy cores), ~0.5 ms a commit. With the fsync, ~1 ms of fixed cost per
//! commit: ~60,000 records/s at 64 a batch, negligible at 4,096 and up.
//!
//! CPU per record. Postgres: a record becomes about one row write (two postings per five
//! records; a coalesced snapshot update per account per batch; a transfer upserted once or
//! twice; holds that do not net out); each row is a heap tuple plus 1-3 btree insertions and
//! WAL, ~5-15 µs on one backend. The journal has one writer and so one backend: that backend's
//! core bounds large batches near 1/(~10 µs) ≈ 70,000-150,000 records/s. Tally's side (the
//! `BatchPlan`, encoding arrays, the actors when the engine runs) is ~1-3 µs a record on the
//! other core. SQLite: one prepared statement per row, each a round trip to sqlx's connection
//! worker thread plus SQLite's own b-tree work, ~10-20 µs: ~50,000-100,000 records/s whatever
//! the batch, once fsync is amortised.
//!
//! Engine. A transfer is five records, so the 100,000 transfers/s budget needs ~500,000
//! records/s from the journal, 3-7x the one-backend ceiling above, and the actors, the sagas
//! and Postgres all share the same two cores. Expect ~15,000-30,000 durable transfers/s here,
//! bounded by the serial commit (one Postgres backend busy all the time) and by the cores:
//! meeting the budget needs commits split across several backends (parallel writers over
//! disjoint records, or COPY instead of UNNEST) and more cores. The run prints records per
//! commit, time per commit and the CPU of Postgres and of Tally, so the bound is visible.
//!
//! Memory. The pre-built journal workload is ~N × 300 bytes (a few hundred MB at most); the
//! engine's `PgStore` keeps nothing per transfer, so memory is the actors and the journal
//! queue, bounded by its admission depth.
//!
//! Configuration: `TALLY_BENCH_DATABASE_URL` (required; an admin URL: each run creates and
//! drops its own database), `TALLY_BENCH_JOURNAL_TRANSFERS` (default 50,000: ~310,000 records
//! per run), `TALLY_BENCH_ENGINE_TRANSFERS` (default 100,000 per in-flight depth). A filter
//! argument runs only the sections whose name contains it: `journal/postgres`,
//! `journal/sqlite`, `engine/postgres`.

// A benchmark that cannot set up, or whose data comes out wrong, should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_actors::{ActorKind, Engine, EngineConfig};
use tally_benches::pg::{BenchDatabase, CpuSample, CpuUsage, PgCpuWatch, admin_url_or_exit};
use tally_benches::{Outcomes, SplitMix64, fund_accounts, open_accounts, run_transfers, user, wait_durable};
use tally_engine::transfer::SagaStep;
use tally_engine::{
    Account, AccountCommand, AccountId, AccountKind, Currency, Record, Timestamp, Transfer, TransferId, TransferKind,
    TransferRequest, TransferStatus, system_accounts,
};
use tally_persistence::postgres::PgStore;
use tally_persistence::sqlite::SqliteStore;
use tally_persistence::{DurableAck, Journal, JournalConfig, Journals, Store, StoreReads};

/// The `batch_records_max` values measured: from "commit almost every saga step" to the
/// default (8,192).
const BATCH_SIZES: [usize; 4] = [64, 512, 4_096, 8_192];
/// Accounts in the journal workload: as many as DESIGN.md §9's transfer budgets assume.
const JOURNAL_ACCOUNTS: usize = 10_000;
const JOURNAL_TRANSFERS_DEFAULT: usize = 50_000;
/// Sagas interleaved in the journal workload: each of their five steps appears for all of
/// them before the next step, as with 1,024 transfers in flight in the engine.
const WAVE_TRANSFERS: usize = 1_024;
/// The driver acknowledges every `APPEND_CHUNK`-th record and keeps at most
/// `APPEND_WINDOW_RECORDS` unacknowledged: four of the largest batches, so the writer always
/// finds a full batch waiting, and well below the journal's hard bound (265,536).
const APPEND_CHUNK: usize = 1_024;
const APPEND_WINDOW_RECORDS: usize = 32_768;

/// Funded accounts in the engine scenario (DESIGN.md §9: "10k accounts").
const ENGINE_ACCOUNTS: usize = 10_000;
const ENGINE_TRANSFERS_DEFAULT: usize = 100_000;
/// Untimed transfers before each timed run: actors resident, connections and caches warm.
const ENGINE_WARM_UP_TRANSFERS: usize = 10_000;
/// Transfers in flight: 1,024 is the mailbox bound (`ActorConfig::mailbox_capacity_max`),
/// 4,096 keeps the journal's queue deep while staying far below the saga bound (32,768).
const ENGINE_IN_FLIGHT: [usize; 2] = [1_024, 4_096];
/// Openings in flight while setting up: one journal record each, far below admission.
const OPENINGS_IN_FLIGHT: usize = 4_096;

/// Every account's funding: far more than the transfers of `AMOUNT` can spend, so no
/// transfer is refused for funds.
const FUNDING: Decimal = dec!(1_000_000_000.00);
const AMOUNT: Decimal = dec!(1.00);
const CURRENCY: Currency = Currency::USD;
/// DESIGN.md §9: batched durable transfers ≥ 100,000/s.
const TARGET_TRANSFERS_PER_SECOND: f64 = 100_000.0;

fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(text) => text.replace('_', "").parse().unwrap_or_else(|error| panic!("{name}={text}: {error}")),
        Err(_) => default,
    }
}

fn now() -> Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX));
    Timestamp::from_micros(micros)
}

// ---- the journal workload --------------------------------------------------------------------

/// The records one journal run appends, built once and cloned for each run.
struct Workload {
    records: Vec<Record>,
    openings: usize,
    funding_records: usize,
    transfer_records: usize,
    /// What the user accounts hold at the end, for the check after each run.
    user_total: Decimal,
}

/// Decides and applies `command` on the model account and returns the record the account
/// actor would append.
fn step(account: &mut Account, command: AccountCommand) -> Record {
    let event = account.decide(&command).expect("the model ledger allows the step").expect("a new step, not a repeat");
    account.apply(&event).expect("the step applies");
    Record::Account { account: account.id, currency: account.currency, event, after: account.snapshot() }
}

/// One wave of sagas, `(source, destination)` indices into `ledger`, appended step by step
/// as concurrent sagas would append them.
fn saga_wave(
    ledger: &mut [Account],
    pairs: &[(usize, usize)],
    kind: TransferKind,
    amount: Decimal,
    at: Timestamp,
    records: &mut Vec<Record>,
) {
    let mut transfers: Vec<Transfer> = pairs
        .iter()
        .map(|&(source, destination)| {
            Transfer::start(TransferRequest {
                id: TransferId::from_uuid(uuid::Uuid::new_v4()),
                kind,
                source: ledger[source].id,
                destination: ledger[destination].id,
                amount,
                currency: CURRENCY,
                fee: Decimal::ZERO,
                reference: None,
                description: None,
                beneficiary: None,
                initiated_by: None,
                created_at: at,
                metadata: Default::default(),
            })
        })
        .collect();
    records.extend(transfers.iter().map(|transfer| Record::Transfer(Box::new(transfer.clone()))));
    for (transfer, &(source, _)) in transfers.iter_mut().zip(pairs) {
        let hold = AccountCommand::Hold { transfer: transfer.id, amount, currency: CURRENCY };
        records.push(step(&mut ledger[source], hold));
        transfer.step = SagaStep::Held;
    }
    for (transfer, &(_, destination)) in transfers.iter_mut().zip(pairs) {
        let credit = AccountCommand::Credit { transfer: transfer.id, amount, currency: CURRENCY };
        records.push(step(&mut ledger[destination], credit));
        transfer.step = SagaStep::Credited;
    }
    for (transfer, &(source, _)) in transfers.iter_mut().zip(pairs) {
        records.push(step(&mut ledger[source], AccountCommand::Post { transfer: transfer.id }));
        transfer.step = SagaStep::Posted;
    }
    for transfer in &mut transfers {
        transfer.transition(TransferStatus::Completed, at).expect("processing may complete");
        records.push(Record::Transfer(Box::new(transfer.clone())));
    }
}

fn build_workload(n_accounts: usize, n_transfers: usize) -> Workload {
    let at = now();
    // Index 0 is the settlement account that funds everyone; 1..=n_accounts are users.
    let settlement = Account::open(
        system_accounts::settlement(CURRENCY),
        None,
        CURRENCY,
        AccountKind::Settlement,
        Decimal::ZERO,
        at,
    );
    let mut ledger = vec![settlement];
    ledger.extend((0..n_accounts).map(|_| {
        let id = AccountId::from_uuid(uuid::Uuid::new_v4());
        Account::open(id, Some(user()), CURRENCY, AccountKind::User, Decimal::ZERO, at)
    }));
    let mut records: Vec<Record> =
        ledger.iter().map(|account| Record::AccountOpened(Box::new(account.clone()))).collect();
    let openings = records.len();

    let funding: Vec<(usize, usize)> = (1..=n_accounts).map(|user| (0, user)).collect();
    for wave in funding.chunks(WAVE_TRANSFERS) {
        saga_wave(&mut ledger, wave, TransferKind::AdminCredit, FUNDING, at, &mut records);
    }
    let funding_records = records.len() - openings;

    let mut random = SplitMix64::new(0x7a11_0003);
    let mut remaining = n_transfers;
    while remaining > 0 {
        let wave_len = remaining.min(WAVE_TRANSFERS);
        let pairs: Vec<(usize, usize)> = (0..wave_len)
            .map(|_| {
                let (source, destination) = random.distinct_pair(n_accounts);
                (1 + source, 1 + destination)
            })
            .collect();
        saga_wave(&mut ledger, &pairs, TransferKind::Internal, AMOUNT, at, &mut records);
        remaining -= wave_len;
    }
    let transfer_records = records.len() - openings - funding_records;
    let user_total = ledger[1..].iter().map(Account::balance).sum();
    Workload { records, openings, funding_records, transfer_records, user_total }
}

/// Appends every record, at most `APPEND_WINDOW_RECORDS` unacknowledged, and returns when the
/// last one is durable.
async fn append_all(journal: &Journal, records: Vec<Record>) {
    let total = records.len();
    let mut acks: VecDeque<DurableAck> = VecDeque::new();
    for (index, record) in records.into_iter().enumerate() {
        let last_of_chunk = (index + 1) % APPEND_CHUNK == 0 || index + 1 == total;
        if !last_of_chunk {
            journal.append(record).expect("the window keeps the journal below its bound");
            continue;
        }
        let (_, ack) = journal.append_acked(record).expect("the window keeps the journal below its bound");
        acks.push_back(ack);
        if acks.len() * APPEND_CHUNK > APPEND_WINDOW_RECORDS {
            acks.pop_front().expect("a chunk in flight").wait().await.expect("the journal commits");
        }
    }
    // Commits are in order: the last ack covers every record before it.
    while let Some(ack) = acks.pop_front() {
        ack.wait().await.expect("the journal commits");
    }
}

/// Where a run's CPU is sampled: Postgres's processes for one database, or only this process.
enum Watch {
    Postgres(Box<PgCpuWatch>),
    Local,
}

impl Watch {
    async fn sample(&mut self) -> CpuSample {
        match self {
            Watch::Postgres(watch) => watch.sample().await,
            Watch::Local => CpuSample::local(),
        }
    }
}

#[derive(Debug, Clone)]
struct JournalResult {
    store: &'static str,
    batch_records_max: usize,
    records: usize,
    elapsed: Duration,
    batches: u64,
    cpu: CpuUsage,
}

impl JournalResult {
    fn records_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self) {
        let batches = self.batches.max(1) as f64;
        println!(
            "journal/{:<8} batch_records_max={:>5}: {:>9.0} records/s ({} records in {:.2} s; {:.0} records/commit, \
             {:.2} ms/commit; {})",
            self.store,
            self.batch_records_max,
            self.records_per_second(),
            self.records,
            self.elapsed.as_secs_f64(),
            self.records as f64 / batches,
            self.elapsed.as_secs_f64() * 1e3 / batches,
            self.cpu,
        );
    }
}

/// One timed run: a fresh journal over `store` (empty), the whole workload appended, then the
/// store checked outside the timing.
async fn journal_run(
    store_name: &'static str,
    store: Arc<dyn Store>,
    batch_records_max: usize,
    workload: &Workload,
    watch: &mut Watch,
) -> JournalResult {
    let committed_seqs = store.open_shards(1).await.expect("read the committed sequence");
    assert_eq!(committed_seqs, vec![0], "each run starts on an empty store");
    let config = JournalConfig { batch_records_max, ..JournalConfig::default() };
    let journals = Journals::new(&committed_seqs, config, Arc::new(tally_persistence::batch::now));
    let journal = journals.shard(0).clone();
    let writers = Arc::clone(&store).journal_writers(0).await.expect("journal writers connect");
    tokio::spawn(journal.clone().run_writer(writers));
    let records = workload.records.clone();
    let n_records = records.len();

    let cpu_before = watch.sample().await;
    let started = Instant::now();
    append_all(&journal, records).await;
    let elapsed = started.elapsed();
    let cpu = watch.sample().await.since(&cpu_before);
    let batches = journal.stats().batches.load(Ordering::Relaxed);
    journals.shutdown().await;

    // Pair assertion: what the journal committed reads back as a balanced ledger.
    assert_eq!(store.committed_seqs().await.expect("read back"), vec![n_records as u64], "every record committed");
    let (summary, violations) = tally_persistence::check::check(store.as_ref()).await.expect("check the store");
    assert!(violations.is_empty(), "{store_name} at batch {batch_records_max}: {violations:?}");
    assert_eq!(summary.accounts, workload.openings, "every account stored");
    let stored_total: Decimal = store
        .all_accounts()
        .await
        .expect("read accounts")
        .iter()
        .filter(|account| account.kind == AccountKind::User)
        .map(Account::balance)
        .sum();
    assert_eq!(stored_total, workload.user_total, "the users hold what the model ledger says");

    JournalResult { store: store_name, batch_records_max, records: n_records, elapsed, batches, cpu }
}

async fn journal_postgres(admin_url: &str, workload: &Workload) -> Vec<JournalResult> {
    let mut results = Vec::new();
    for batch_records_max in BATCH_SIZES {
        let database = BenchDatabase::create(admin_url, "bench_journal").await;
        let store = PgStore::connect(database.url()).await.expect("connect to the benchmark database");
        store.migrate().await.expect("migrate");
        let mut watch = Watch::Postgres(Box::new(PgCpuWatch::connect(admin_url, database.name()).await));
        let result = journal_run("postgres", Arc::new(store), batch_records_max, workload, &mut watch).await;
        result.print();
        results.push(result);
        drop(watch);
        database.drop_now().await;
    }
    results
}

async fn journal_sqlite(workload: &Workload) -> Vec<JournalResult> {
    let mut results = Vec::new();
    for batch_records_max in BATCH_SIZES {
        let directory = std::env::temp_dir().join(format!("tally-bench-journal-{}", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", directory.join("ledger.db").display());
        let store = SqliteStore::open(&url).await.expect("open the SQLite file");
        let result = journal_run("sqlite", Arc::new(store), batch_records_max, workload, &mut Watch::Local).await;
        result.print();
        results.push(result);
        std::fs::remove_dir_all(&directory).expect("remove the SQLite file");
    }
    results
}

// ---- durable transfers through the engine ----------------------------------------------------

#[derive(Debug, Clone)]
struct EngineResult {
    in_flight_max: usize,
    transfers: usize,
    elapsed: Duration,
    batches: u64,
    records: u64,
    cpu: CpuUsage,
}

impl EngineResult {
    fn transfers_per_second(&self) -> f64 {
        self.transfers as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self) {
        let batches = self.batches.max(1) as f64;
        let rate = self.transfers_per_second();
        println!(
            "engine/postgres in_flight={:>5}: {:>7.0} durable transfers/s ({} in {:.2} s; target {:.0}/s {}); \
             journal {:.0} records/s, {:.1} records/transfer, {:.0} records/commit, {:.2} ms/commit; {}",
            self.in_flight_max,
            rate,
            self.transfers,
            self.elapsed.as_secs_f64(),
            TARGET_TRANSFERS_PER_SECOND,
            if rate >= TARGET_TRANSFERS_PER_SECOND { "met" } else { "MISSED" },
            self.records as f64 / self.elapsed.as_secs_f64(),
            self.records as f64 / self.transfers as f64,
            self.records as f64 / batches,
            self.elapsed.as_secs_f64() * 1e3 / batches,
            self.cpu,
        );
    }
}

async fn engine_postgres(admin_url: &str, n_transfers: usize) -> Vec<EngineResult> {
    let database = BenchDatabase::create(admin_url, "bench_engine").await;
    let store = Arc::new(PgStore::connect(database.url()).await.expect("connect to the benchmark database"));
    store.migrate().await.expect("migrate");
    let config = EngineConfig::default();
    let funding_in_flight = config.actors.mailbox_capacity_max as usize;
    let engine = Engine::start(Arc::clone(&store) as Arc<dyn Store>, config).await.expect("engine starts on Postgres");
    let mut watch = PgCpuWatch::connect(admin_url, database.name()).await;

    let set_up = Instant::now();
    let mut accounts = Vec::with_capacity(ENGINE_ACCOUNTS);
    open_accounts(&engine, ENGINE_ACCOUNTS, CURRENCY, OPENINGS_IN_FLIGHT, |account| accounts.push(account.id)).await;
    // Work-around: activate the settlement account with one read before the funding burst
    // sends it up to 1,024 calls at once. A burst at an actor that has not run `started()` yet
    // overflows actix's default mailbox (16); `Registry::roundtrip` reads that `try_send`
    // error as "actor gone" and starts a second incarnation beside the first, whose holds then
    // disagree with the snapshot in the store. The assertion on activations below catches it.
    engine.account(system_accounts::settlement(CURRENCY)).await.expect("the settlement account activates");
    fund_accounts(&engine, &accounts, FUNDING, funding_in_flight).await;
    wait_durable(&engine).await;
    println!(
        "engine/postgres: opened and funded {ENGINE_ACCOUNTS} accounts in {:.2} s (durable, untimed)",
        set_up.elapsed().as_secs_f64()
    );

    let outcomes = Outcomes::default();
    let mut random = SplitMix64::new(0x7a11_0004);
    let mut results = Vec::new();
    for in_flight_max in ENGINE_IN_FLIGHT {
        let mut pick = |_| {
            let (source, destination) = random.distinct_pair(accounts.len());
            (accounts[source], accounts[destination])
        };
        run_transfers(&engine, ENGINE_WARM_UP_TRANSFERS, in_flight_max, AMOUNT, CURRENCY, &outcomes, &mut pick).await;
        wait_durable(&engine).await;

        let totals_before = engine.journals().totals();
        let batches_before = totals_before.batches;
        let records_before = totals_before.committed_records;
        let cpu_before = watch.sample().await;
        let started = Instant::now();
        run_transfers(&engine, n_transfers, in_flight_max, AMOUNT, CURRENCY, &outcomes, &mut pick).await;
        let elapsed = started.elapsed();
        let cpu = watch.sample().await.since(&cpu_before);
        let result = EngineResult {
            in_flight_max,
            transfers: n_transfers,
            elapsed,
            batches: engine.journals().totals().batches - batches_before,
            records: engine.journals().totals().committed_records - records_before,
            cpu,
        };
        result.print();
        results.push(result);
    }

    // Outside the timing: every transfer completed, each account had exactly one incarnation
    // (the users opened, the settlement account activated once), and the store holds a
    // balanced ledger in which the users' money is exactly what was funded.
    outcomes.assert_all_completed("engine/postgres");
    let account_health = engine.health(0).kind(ActorKind::Account).cloned().expect("account health");
    assert_eq!(
        (account_health.activations, account_health.restarts),
        (ENGINE_ACCOUNTS as u64 + 1, 0),
        "one incarnation per account, no restarts"
    );
    wait_durable(&engine).await;
    engine.shutdown(Duration::from_secs(10)).await;
    drop(engine);
    let (_, violations) = tally_persistence::check::check(store.as_ref()).await.expect("check the store");
    assert!(violations.is_empty(), "engine/postgres: {violations:?}");
    let users_total: Decimal = store
        .all_accounts()
        .await
        .expect("read accounts")
        .iter()
        .filter(|account| account.kind == AccountKind::User)
        .map(Account::balance)
        .sum();
    assert_eq!(users_total, FUNDING * Decimal::from(ENGINE_ACCOUNTS), "transfers conserve the users' total");
    println!(
        "engine/postgres: {} transfers completed, none failed; tally check passed",
        outcomes.completed.load(Ordering::Relaxed)
    );
    drop(watch);
    drop(store);
    database.drop_now().await;
    results
}

// ---- main ------------------------------------------------------------------------------------

fn main() {
    let admin_url = admin_url_or_exit("persistence");
    // `cargo bench` passes `--bench`; any other argument filters the sections by name.
    let filters: Vec<String> = std::env::args().skip(1).filter(|argument| !argument.starts_with("--")).collect();
    let selected = |section: &str| filters.is_empty() || filters.iter().any(|filter| section.contains(filter.as_str()));
    let journal_transfers = env_count("TALLY_BENCH_JOURNAL_TRANSFERS", JOURNAL_TRANSFERS_DEFAULT);
    let engine_transfers = env_count("TALLY_BENCH_ENGINE_TRANSFERS", ENGINE_TRANSFERS_DEFAULT);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");

    let mut journal_results = Vec::new();
    if selected("journal/postgres") || selected("journal/sqlite") {
        let built = Instant::now();
        let workload = build_workload(JOURNAL_ACCOUNTS, journal_transfers);
        println!(
            "journal workload: {} records ({} openings, {} funding, {} for {journal_transfers} transfers), built in {:.2} s \
             (untimed)",
            workload.records.len(),
            workload.openings,
            workload.funding_records,
            workload.transfer_records,
            built.elapsed().as_secs_f64()
        );
        if selected("journal/postgres") {
            journal_results.extend(runtime.block_on(journal_postgres(&admin_url, &workload)));
        }
        if selected("journal/sqlite") {
            journal_results.extend(runtime.block_on(journal_sqlite(&workload)));
        }
    }
    let engine_results = if selected("engine/postgres") {
        runtime.block_on(engine_postgres(&admin_url, engine_transfers))
    } else {
        vec![]
    };

    println!("\nsummary");
    for result in &journal_results {
        println!(
            "  journal/{:<8} batch_records_max={:>5}  {:>9.0} records/s",
            result.store,
            result.batch_records_max,
            result.records_per_second()
        );
    }
    for result in &engine_results {
        println!(
            "  engine/postgres  in_flight={:>5}        {:>9.0} durable transfers/s (target {:.0})",
            result.in_flight_max,
            result.transfers_per_second(),
            TARGET_TRANSFERS_PER_SECOND
        );
    }
}

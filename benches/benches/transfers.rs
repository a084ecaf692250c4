//! In-process transfers per second through the actors, on the `MemoryStore` (DESIGN.md §9:
//! "in-process engine, no HTTP, no database ≥ 1,000,000 transfers/s"; "one hot account in
//! every transfer ≥ 50% of the uniform rate").
//!
//! Nothing is mocked below the `Engine` facade: each transfer runs its saga on the source's
//! shard, its three steps (hold, credit, post) are messages to account actors, every step's
//! record goes through the write-behind journal into the store, and the answer waits for the
//! durable ack of the transfer's final record. Only the database is replaced by the in-memory
//! store.
//!
//! Back of the envelope, and what was measured (2-core development machine).
//!
//! CPU. One transfer is: validation and a saga task sent to the source's shard thread (a
//! cross-thread wake-up from the driver); three actor round trips (hold, credit, post: an actix
//! message in, a oneshot reply out), the credit on the other shard's thread for half of the
//! transfers; the transfer's records appended to its saga's journal; the journal's writer, a
//! task on that shard's thread, applying each batch to the store (hash map inserts, a posting
//! per balance change); and the durable ack back through a oneshot to the driver. Two shard
//! threads and the driver share the two cores. Measured (README, "In-process benchmarks"):
//! ~75,000 transfers/s, ~13 µs of wall time per transfer, no single function of the engine
//! above 3 % of the samples. The 1,000,000/s budget needs a transfer that crosses no thread
//! and sends no actor message, which is not this design.
//!
//! Hot account. Every transfer sends one step (hold or post when it is the source, credit
//! when it is the destination; two steps in the first case) to the same actor, which handles
//! them one at a time on one shard: at ~1 µs a step the actor alone caps the rate near
//! 700,000/s, so the hot case should be bounded by the same shared costs as the uniform one,
//! less the second shard's help for half of the steps.
//!
//! Memory. The `MemoryStore` keeps every transfer (~300 bytes with its map slot) and two
//! postings (~70 bytes each), about 500 bytes per transfer for the life of a scenario: a
//! scenario of ~3,000,000 transfers holds ~1.5 GB. That is the store's growth, not the
//! engine's, and each scenario starts a fresh engine and store.
//!
//! Bounds. A batch keeps at most `IN_FLIGHT_UNIFORM` (4,096) transfers in flight: deep enough
//! to keep both shards and the journal busy, well under the journal's admission bound (65,536
//! records, ~5 per transfer) and the saga bound (32,768). The hot scenario keeps at most the
//! hot account's mailbox bound (`mailbox_capacity_max`, 1,024) in flight: each saga has at
//! most one message at the hot actor at a time, so no transfer is refused as overloaded,
//! which is the engine protecting itself, not a failure to measure. The uniform scenario is
//! also run at that depth, so the hot/uniform ratio compares like with like.

// A benchmark that cannot set up, or whose transfers fail, should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_actors::{Engine, EngineConfig};
use tally_benches::{
    Outcomes, SplitMix64, fund_accounts, next_seed, open_accounts, run_transfers, start_engine, wait_durable,
};
use tally_engine::{AccountId, Currency};
use tally_persistence::{MemoryStore, StoreReads};

/// The allocator `tally serve` runs with (`http/src/main.rs`), so the engine is measured as it
/// is deployed: on glibc's malloc, its slow paths (`_int_malloc`, `_int_free`,
/// `malloc_consolidate`, `unlink_chunk`) were ~17 % of this bench's samples (`perf record`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Funded accounts in each scenario (DESIGN.md §9: "10k accounts").
const ACCOUNTS_N: usize = 10_000;
/// Transfers per criterion iteration. 10,000 is large against the in-flight depth, so the
/// ramp-up and drain at either end of a batch are a small part of its time.
const BATCH_TRANSFERS: usize = 10_000;
/// Transfers in flight in the uniform scenario (see "Bounds" above).
const IN_FLIGHT_UNIFORM: usize = 4_096;
/// Openings in flight while setting up: one journal record each, far below admission.
const OPENINGS_IN_FLIGHT: usize = 4_096;
/// Each account's funding: 10^9 USD. No account can run dry: a scenario makes a few million
/// transfers of `AMOUNT`, so even the hot account, the source of half of them, spends a few
/// million at most.
const FUNDING: Decimal = dec!(1_000_000_000.00);
const AMOUNT: Decimal = dec!(1.00);
const CURRENCY: Currency = Currency::USD;

/// One engine with its funded accounts, set up once and shared by every batch of a scenario.
struct Scenario {
    engine: Engine,
    store: Arc<MemoryStore>,
    accounts: Vec<AccountId>,
    outcomes: Outcomes,
    seeds: AtomicU64,
}

impl Scenario {
    async fn set_up() -> Scenario {
        let config = EngineConfig::default();
        let funding_in_flight = config.actors.mailbox_capacity_max as usize;
        let (engine, store) = start_engine(config).await;
        let mut accounts = Vec::with_capacity(ACCOUNTS_N);
        open_accounts(&engine, ACCOUNTS_N, CURRENCY, OPENINGS_IN_FLIGHT, |account| accounts.push(account.id)).await;
        fund_accounts(&engine, &accounts, FUNDING, funding_in_flight).await;
        wait_durable(&engine).await;
        Scenario { engine, store, accounts, outcomes: Outcomes::default(), seeds: AtomicU64::new(1) }
    }

    /// One batch: every transfer between two random distinct accounts.
    async fn uniform_batch(&self, in_flight_max: usize) {
        let mut random = SplitMix64::new(next_seed(&self.seeds));
        let accounts = &self.accounts;
        run_transfers(&self.engine, BATCH_TRANSFERS, in_flight_max, AMOUNT, CURRENCY, &self.outcomes, |_| {
            let (source, destination) = random.distinct_pair(accounts.len());
            (accounts[source], accounts[destination])
        })
        .await;
    }

    /// One batch: `accounts[0]` is the source of every even transfer and the destination of
    /// every odd one, so its balance stays level; the other side is random.
    async fn hot_batch(&self, in_flight_max: usize) {
        let mut random = SplitMix64::new(next_seed(&self.seeds));
        let accounts = &self.accounts;
        run_transfers(&self.engine, BATCH_TRANSFERS, in_flight_max, AMOUNT, CURRENCY, &self.outcomes, |index| {
            let hot = accounts[0];
            let other = accounts[1 + random.below(accounts.len() - 1)];
            if index % 2 == 0 { (hot, other) } else { (other, hot) }
        })
        .await;
    }

    /// Outside the timing: no transfer failed, money was conserved among the user accounts,
    /// every actor agrees with the store once everything is durable, and no hold is left.
    /// Then shuts the engine down.
    async fn check_and_shut_down(self, name: &str) {
        self.outcomes.assert_all_completed(name);
        wait_durable(&self.engine).await;
        let mut total = Decimal::ZERO;
        for &id in &self.accounts {
            let live = self.engine.account(id).await.expect("account readable");
            let stored = self.store.load_account(id).await.expect("store readable").expect("account stored");
            assert_eq!(live.balance(), stored.value.balance(), "{name}: actor and store agree on {id}");
            assert_eq!(live.held(), Decimal::ZERO, "{name}: no hold left on {id}");
            total += live.balance();
        }
        let funded = FUNDING * Decimal::from(self.accounts.len());
        assert_eq!(total, funded, "{name}: transfers between user accounts conserve their total");
        let health = self.engine.health(0);
        assert_eq!(health.sagas_failed, 0, "{name}: no saga failed");
        let completed = self.outcomes.completed.load(Ordering::Relaxed);
        println!("{name}: {completed} transfers completed, none failed; ledger checks passed");
        self.engine.shutdown(Duration::from_secs(5)).await;
    }
}

fn transfers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let mut group = c.benchmark_group("transfers");
    group.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(BATCH_TRANSFERS as u64));
    let in_flight_hot = EngineConfig::default().actors.mailbox_capacity_max as usize;

    let uniform = runtime.block_on(Scenario::set_up());
    for in_flight_max in [IN_FLIGHT_UNIFORM, in_flight_hot] {
        group.bench_function(BenchmarkId::new("uniform", format!("in_flight={in_flight_max}")), |b| {
            b.to_async(&runtime).iter(|| uniform.uniform_batch(in_flight_max));
        });
    }
    runtime.block_on(uniform.check_and_shut_down("uniform"));

    let hot = runtime.block_on(Scenario::set_up());
    group.bench_function(BenchmarkId::new("hot", format!("in_flight={in_flight_hot}")), |b| {
        b.to_async(&runtime).iter(|| hot.hot_batch(in_flight_hot));
    });
    runtime.block_on(hot.check_and_shut_down("hot"));

    group.finish();
}

criterion_group!(benches, transfers);
criterion_main!(benches);

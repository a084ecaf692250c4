//! Shared set-up for Tally's benchmarks: start an engine on the in-memory store, open and fund
//! accounts concurrently, drive batches of transfers with a bounded number in flight, and read
//! the process's resident memory.
//!
//! Everything here talks to the `Engine` facade only, like the HTTP layer does: the benchmarks
//! measure the same path a request takes once it is parsed.

// A benchmark that cannot set itself up should abort loudly rather than measure nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod pg;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rust_decimal::Decimal;
use tally_actors::{ActorKind, Engine, EngineConfig, TransferError};
use tally_engine::{Account, AccountId, Currency, TransferKind, TransferRequest, TransferStatus, UserId};
use tally_persistence::MemoryStore;

/// Starts an engine on a fresh `MemoryStore`: the real journal and the real actors, with a
/// store that applies commits in memory instead of writing to a database.
pub async fn start_engine(config: EngineConfig) -> (Engine, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::start(store.clone(), config).await.expect("engine starts on the memory store");
    (engine, store)
}

/// A fresh random owner for an account.
pub fn user() -> UserId {
    UserId::from_uuid(uuid::Uuid::new_v4())
}

/// Opens `n_accounts` user accounts in `currency` (no credit limit), at most `in_flight_max`
/// at once, and hands each opened account to `on_opened` as its opening becomes durable.
/// Opening starts the account's actor, so afterwards every one of them is resident.
///
/// `in_flight_max` must stay below the journal's admission bound (65,536 records by default):
/// each opening appends one record.
pub async fn open_accounts(
    engine: &Engine,
    n_accounts: usize,
    currency: Currency,
    in_flight_max: usize,
    mut on_opened: impl FnMut(Account),
) {
    let openings = futures::stream::iter(0..n_accounts)
        .map(|_| engine.open_account(user(), currency, Decimal::ZERO))
        .buffer_unordered(in_flight_max);
    futures::pin_mut!(openings);
    while let Some(opened) = openings.next().await {
        on_opened(opened.expect("account opens"));
    }
}

/// Credits `amount` to each account from its currency's settlement account (an admin
/// adjustment), at most `in_flight_max` at once.
///
/// Every adjustment goes through the one settlement account, so `in_flight_max` must not
/// exceed its mailbox bound (`ActorConfig::mailbox_capacity_max`) or adjustments are refused
/// as overloaded.
pub async fn fund_accounts(engine: &Engine, accounts: &[AccountId], amount: Decimal, in_flight_max: usize) {
    let adjustments = futures::stream::iter(accounts.iter().copied())
        .map(|account| async move {
            engine
                .adjust(TransferKind::AdminCredit, account, amount, None, Some("benchmark funding".to_owned()), None)
                .await
        })
        .buffer_unordered(in_flight_max);
    futures::pin_mut!(adjustments);
    while let Some(funded) = adjustments.next().await {
        let transfer = funded.expect("funding succeeds");
        assert_eq!(transfer.status, TransferStatus::Completed, "funding completes");
    }
}

/// An internal transfer of `amount` from `source` to `destination`, with a fresh id.
pub fn transfer_request(
    engine: &Engine,
    source: AccountId,
    destination: AccountId,
    amount: Decimal,
    currency: Currency,
) -> TransferRequest {
    TransferRequest {
        id: engine.new_transfer_id(),
        kind: TransferKind::Internal,
        source,
        destination,
        amount,
        currency,
        fee: Decimal::ZERO,
        reference: None,
        description: None,
        beneficiary: None,
        initiated_by: None,
        created_at: engine.now(),
        metadata: Default::default(),
    }
}

/// What a run of transfers came to, accumulated over every batch of a scenario, so the
/// scenario can assert on it after the timed part.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub completed: AtomicU64,
    /// Answered, but with a status other than `completed` (none is expected: internal
    /// transfers run automatically).
    pub not_completed: AtomicU64,
    pub failed: AtomicU64,
    /// The first error seen, to say why a scenario failed.
    pub first_error: std::sync::Mutex<Option<TransferError>>,
}

impl Outcomes {
    fn record(&self, result: Result<tally_engine::Transfer, TransferError>) {
        match result {
            Ok(transfer) if transfer.status == TransferStatus::Completed => {
                self.completed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {
                self.not_completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                first.get_or_insert(error);
            }
        }
    }

    /// Panics unless every transfer so far completed.
    pub fn assert_all_completed(&self, scenario: &str) {
        let completed = self.completed.load(Ordering::Relaxed);
        let not_completed = self.not_completed.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let first = self.first_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        assert!(
            failed == 0 && not_completed == 0,
            "{scenario}: {failed} transfers failed and {not_completed} did not complete out of {}; first error: {first:?}",
            completed + not_completed + failed
        );
    }
}

/// Submits `n_transfers` transfers of `amount`, keeping at most `in_flight_max` in flight, and
/// waits until every one has answered (each answer waits for its durable ack). `pick` chooses
/// the source and destination of the i-th transfer.
///
/// One task drives the batch: it makes each request (a fresh v4 id, a clock read) and awaits
/// the answers; the work itself runs on the actor shards and the journal thread.
pub async fn run_transfers(
    engine: &Engine,
    n_transfers: usize,
    in_flight_max: usize,
    amount: Decimal,
    currency: Currency,
    outcomes: &Outcomes,
    mut pick: impl FnMut(usize) -> (AccountId, AccountId),
) {
    let transfers = futures::stream::iter(0..n_transfers)
        .map(|index| {
            let (source, destination) = pick(index);
            engine.transfer(transfer_request(engine, source, destination, amount, currency))
        })
        .buffer_unordered(in_flight_max);
    futures::pin_mut!(transfers);
    while let Some(result) = transfers.next().await {
        outcomes.record(result);
    }
}

/// Waits until every record appended so far is committed to the store.
pub async fn wait_durable(engine: &Engine) {
    engine.journals().barrier().await.expect("journal commits everything appended");
}

/// Account actors running now (started and not yet stopped), from the engine's health.
pub fn live_account_actors(engine: &Engine) -> i64 {
    engine.health(0).kind(ActorKind::Account).map_or(0, |health| health.active)
}

/// Waits (up to `limit`) until at least `n_actors` account actors have started: opening an
/// account starts its actor on its shard, which may finish just after the opening is durable.
/// Returns how many were running when it stopped waiting.
pub async fn wait_for_account_actors(engine: &Engine, n_actors: i64, limit: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let live = live_account_actors(engine);
        if live >= n_actors || started.elapsed() >= limit {
            return live;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The process's resident set size in bytes, from the `VmRSS` line of `/proc/self/status`.
///
/// `VmRSS` is reported in kB by the kernel, so no page size is assumed (`/proc/self/statm`
/// counts pages, and reading the page size needs `sysconf`, which is `unsafe` FFI that this
/// workspace forbids). Linux only; elsewhere this returns an error.
pub fn resident_bytes() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or_else(|| std::io::Error::other("no VmRSS line in /proc/self/status"))?;
    let kilobytes: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|error| std::io::Error::other(format!("VmRSS is not a number: {error}")))?;
    Ok(kilobytes * 1024)
}

/// A small deterministic pseudo-random generator (SplitMix64), so a benchmark's choice of
/// accounts is the same on every run and costs a few nanoseconds, with no dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0). The modulo bias is below 10^-15 for the bounds
    /// used here, far below anything a benchmark could notice.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    /// Two distinct indices in `0..bound` (`bound` >= 2).
    pub fn distinct_pair(&mut self, bound: usize) -> (usize, usize) {
        let first = self.below(bound);
        // Pick from the other bound - 1 indices and skip over `first`.
        let mut second = self.below(bound - 1);
        if second >= first {
            second += 1;
        }
        (first, second)
    }
}

/// A per-batch seed: a different stream of accounts for every batch of a scenario.
pub fn next_seed(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5EED
}

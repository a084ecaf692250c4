//! Bytes per resident idle account actor (DESIGN.md §9: "resident idle account actor ≤ 1 KiB
//! each (1M accounts ≤ 1 GiB)").
//!
//! Method. The workspace forbids `unsafe`, so there is no counting allocator; instead the
//! benchmark reads the process's resident set (`VmRSS`) around two phases and divides by the
//! number of accounts:
//!
//! 1. Store share. A `Journal` over a separate `MemoryStore` commits N `AccountOpened` records
//!    shaped exactly like `Engine::open_account`'s, in chunks as the engine would see them.
//!    The RSS growth is what the store alone keeps per account. That store stays alive to the
//!    end, so phase 2 cannot reuse its pages.
//! 2. Engine. An engine on a fresh `MemoryStore` opens N accounts, `OPENINGS_IN_FLIGHT` at a
//!    time. Opening starts each account's actor, so once every opening is durable and every
//!    actor has started, all N are resident and idle. The RSS growth is the store's copy plus
//!    the registry slot, the actix actor (its state, context and mailbox) and the task that
//!    runs it on its shard.
//!
//! "Actor + registry per account" is phase 2 minus phase 1: the price of keeping an account
//! live, which is what the 1 KiB budget bounds. The transient cost of an opening (journal
//! queue entry, oneshot ack) is bounded by the in-flight depth, so it is a few MB at most, a
//! few bytes per account at 1M. The allocator's free lists and arena slack do count: they are
//! part of what an account really costs the process.
//!
//! Back of the envelope. Memory: an `Account` is ~150 bytes inline (id, owner, currency,
//! position with three `Decimal`s and empty hold and credit collections); the store keeps it in
//! a hash map whose table doubles, ~1.1-2.3 slots per entry: ~250-500 bytes per account. The
//! actor keeps its own copy of the `Account`, an `Arc<Slot>` in a `DashMap`, an actix
//! `Context` with its mailbox channel (an `Arc`'d queue with a stub node) and a spawned task:
//! perhaps 600-1,000 bytes, so 1M accounts are ~1-1.5 GB in all and the 1 KiB budget is tight.
//! CPU: an opening is one journal append, one actor start on a shard and a durable ack, a few
//! µs; 1M openings take a few seconds to tens of seconds on 2 cores.
//!
//! Configuration: `TALLY_BENCH_ACCOUNTS` (default 1,000,000) sets N, so it can be smoke-run
//! with 10,000. The result line is printed whether or not the target is met; the process exits
//! non-zero only if the benchmark itself fails.

// A benchmark that cannot set up should abort loudly rather than report a wrong figure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tally_actors::{AccountActor, EngineConfig};
use tally_benches::{open_accounts, resident_bytes, start_engine, user, wait_durable, wait_for_account_actors};
use tally_engine::{Account, AccountId, AccountKind, Currency, Record};
use tally_persistence::{JournalConfig, Journals, Loaded, MemoryStore, Store};

const ACCOUNTS_DEFAULT: usize = 1_000_000;
/// Openings in flight: one journal record each, a sixth of the admission bound (65,536), and
/// deep enough that the shards and the journal never wait for the driver.
const OPENINGS_IN_FLIGHT: usize = 10_000;
/// The budget of DESIGN.md §9.
const TARGET_BYTES_PER_ACTOR: f64 = 1_024.0;
/// Longest wait for the last actors to report started after their openings are durable.
const ACTORS_STARTED_WAIT: Duration = Duration::from_secs(60);

fn main() {
    let n_accounts = match std::env::var("TALLY_BENCH_ACCOUNTS") {
        Ok(text) => text.replace('_', "").parse::<usize>().unwrap_or_else(|error| {
            eprintln!("TALLY_BENCH_ACCOUNTS={text:?} is not a count: {error}");
            std::process::exit(2);
        }),
        Err(_) => ACCOUNTS_DEFAULT,
    };
    if n_accounts == 0 {
        eprintln!("TALLY_BENCH_ACCOUNTS must be at least 1");
        std::process::exit(2);
    }
    // `cargo bench` passes `--bench` to every target; this one takes no other arguments.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(measure(n_accounts));
}

async fn measure(n_accounts: usize) {
    let n = n_accounts as f64;
    println!("actor_memory: {n_accounts} accounts, {OPENINGS_IN_FLIGHT} openings in flight");
    println!(
        "  static sizes: Account {} B, Loaded<Account> {} B, AccountActor {} B",
        std::mem::size_of::<Account>(),
        std::mem::size_of::<Loaded<Account>>(),
        std::mem::size_of::<AccountActor>(),
    );

    // Phase 1: the store's share.
    let store_only = Arc::new(MemoryStore::new());
    let rss_before_store = resident_bytes().expect("resident memory readable");
    let started = Instant::now();
    commit_openings(Arc::clone(&store_only), n_accounts).await;
    let rss_after_store = resident_bytes().expect("resident memory readable");
    let store_bytes = rss_after_store.saturating_sub(rss_before_store) as f64;
    println!(
        "  store only: +{:.1} MiB RSS in {:.1} s = {:.0} bytes/account",
        store_bytes / 1_048_576.0,
        started.elapsed().as_secs_f64(),
        store_bytes / n,
    );

    // Phase 2: the engine. Passivation is pushed out of reach, so every actor stays resident
    // however long the opening takes (the default idle time-out is 60 s).
    let mut config = EngineConfig::default();
    config.actors.idle_timeout = Duration::from_secs(24 * 3_600);
    config.actors.passivation_sweep_interval = Duration::from_secs(3_600);
    let (engine, _store) = start_engine(config).await;
    let live_before = tally_benches::live_account_actors(&engine);
    let rss_before_engine = resident_bytes().expect("resident memory readable");
    let started = Instant::now();
    let mut opened = 0_usize;
    open_accounts(&engine, n_accounts, Currency::USD, OPENINGS_IN_FLIGHT, |_| opened += 1).await;
    wait_durable(&engine).await;
    let opening_secs = started.elapsed().as_secs_f64();
    let expected_live = live_before + i64::try_from(n_accounts).expect("count fits in i64");
    let live = wait_for_account_actors(&engine, expected_live, ACTORS_STARTED_WAIT).await;
    let rss_after_engine = resident_bytes().expect("resident memory readable");
    assert_eq!(opened, n_accounts, "every account opened");
    assert!(live >= expected_live, "only {live} of {expected_live} account actors started");
    assert!(engine.accounts().live() >= n_accounts, "every account has a registry slot");
    let engine_bytes = rss_after_engine.saturating_sub(rss_before_engine) as f64;
    println!(
        "  engine: {n_accounts} accounts opened in {opening_secs:.1} s ({:.0}/s), {} account actors live",
        n / opening_secs,
        live,
    );
    println!(
        "  engine: +{:.1} MiB RSS = {:.0} bytes/account in total (store copy + registry + actor)",
        engine_bytes / 1_048_576.0,
        engine_bytes / n,
    );
    let actor_bytes = (engine_bytes - store_bytes) / n;
    println!(
        "  1M accounts would hold {:.2} GiB in total, {:.2} GiB of it actors + registry",
        engine_bytes / n * 1e6 / 1_073_741_824.0,
        actor_bytes * 1e6 / 1_073_741_824.0,
    );
    let verdict = if actor_bytes <= TARGET_BYTES_PER_ACTOR { "met" } else { "MISSED" };
    println!(
        "resident idle account actor: {actor_bytes:.0} bytes/actor (target <= {TARGET_BYTES_PER_ACTOR:.0}, {verdict})"
    );

    engine.shutdown(Duration::from_secs(5)).await;
    drop(store_only);
}

/// Commits `n_accounts` `AccountOpened` records, as `Engine::open_account` makes them, through
/// a journal into `store`: `OPENINGS_IN_FLIGHT` appended, then their last ack awaited.
async fn commit_openings(store: Arc<MemoryStore>, n_accounts: usize) {
    let seqs = store.open_shards(1).await.expect("shards open");
    let journals = Journals::new(&seqs, JournalConfig::default(), Arc::new(tally_persistence::batch::now));
    let journal = journals.shard(0).clone();
    let writers = Arc::clone(&store).journal_writers(0).await.expect("a writer");
    tokio::spawn(journal.clone().run_writer(writers));
    let mut remaining = n_accounts;
    while remaining > 0 {
        let chunk = remaining.min(OPENINGS_IN_FLIGHT);
        let mut last_ack = None;
        for _ in 0..chunk {
            let account = Account::open(
                AccountId::from_uuid(uuid::Uuid::new_v4()),
                Some(user()),
                Currency::USD,
                AccountKind::User,
                Decimal::ZERO,
                tally_engine::Timestamp::from_micros(0),
            );
            let (_, ack) = journal.append_acked(Record::AccountOpened(Box::new(account))).expect("journal has room");
            last_ack = Some(ack);
        }
        if let Some(ack) = last_ack {
            ack.wait().await.expect("journal commits");
        }
        remaining -= chunk;
    }
    journals.shutdown().await;
}

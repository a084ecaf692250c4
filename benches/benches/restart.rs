//! Restart to ready with 1,000,000 accounts and 10,000,000 postings on Postgres (DESIGN.md §9:
//! "restart to ready with 1M accounts, 10M postings ≤ 5 s"; §5: "recovery is snapshot + replay
//! of later postings; it must not need to scan the whole history").
//!
//! Method. A fresh database is migrated, the engine's system accounts are committed through the
//! real `PgStore`, and then the history is written in bulk with SQL (`INSERT ... SELECT` over
//! `generate_series`), as if the engine had run for a long time:
//!
//! - `N_ACCOUNTS` USD user accounts with random v4 ids;
//! - one admin funding transfer per account from the USD settlement account, then internal
//!   transfers between accounts (each account the source of the same number, destinations
//!   spread by a multiplicative hash), `N_POSTINGS / 2` transfers in all, each `completed`
//!   with its two postings (credit of the destination, then debit of the source) at the
//!   sequence numbers the saga's five records would have had;
//! - every posting's `balance_after` from a running sum per account, then each account's
//!   `balance` and `snapshot_seq` from its postings (one `UPDATE ... FROM (SELECT ... GROUP
//!   BY ...)`), and `journal_state.committed_seq` at the last sequence number.
//!
//! The secondary indexes are dropped for the load and built again after it from their own
//! definitions, then the database is vacuumed, analysed and checkpointed, as a long-running
//! database would be. SQL checks then prove the data is a consistent ledger (each currency sums
//! to zero, balances equal posting sums, no user overdrawn, nothing in flight). All of that is
//! the population, timed and printed apart from the restart.
//!
//! The restart, timed `RESTARTS` times: connect a new `PgStore` (and run the no-op migration
//! check), then `Engine::start`, which starts the journal at the committed sequence, makes sure
//! the system accounts exist, and runs recovery before it returns (ready). Then the first
//! `engine.account(id)` of a never-activated account (an actor activation: load the snapshot
//! and holds, start the actor) and `ACTIVATIONS_AFTER` more, one at a time.
//!
//! Back of the envelope (2 cores, Postgres on the same machine, loopback TCP).
//!
//! Disk. Restart reads no history: recovery asks for non-terminal transfers (a partial index
//! that is empty here) and live holds (an empty table), so it touches a few pages whatever the
//! size of `postings`. A cold read of one 8 kB page is ~0.1-1 ms on this VM's disk; the
//! population leaves them in the OS cache. The population itself writes ~3 GB (tables, indexes
//! and as much again of WAL): at a few hundred MB/s, ten seconds of pure I/O, while its CPU
//! (below) takes minutes.
//!
//! Network. Start-up is sequential round trips of ~50 µs: connecting the pool (~5 ms), the
//! migration check (a few queries), `committed_seq`, 114 system-account loads of ~5 round trips
//! each (~30-60 ms: one repeatable-read transaction per account), and recovery's two queries
//! and a barrier. ~100 ms in all: far inside the 5 s budget, and independent of the 10M
//! postings. An activation is one load (~5 round trips, ~0.3-1 ms) plus an actor start.
//!
//! CPU per record. Population: Postgres generates, sorts and inserts each row at ~2-5 µs for
//! the heap and ~1-2 µs per index entry: 10M postings with a window sort, 5M transfers, 1M
//! accounts rewritten once, 6 index builds: ~1-3 minutes on these cores. Restart: nothing per
//! record; a few ms of CPU for parsing the 114 system accounts.
//!
//! Configuration: `TALLY_BENCH_DATABASE_URL` (required: an admin URL; the benchmark creates and
//! drops its own database), `TALLY_BENCH_RESTART_ACCOUNTS` (default 1,000,000) and
//! `TALLY_BENCH_RESTART_POSTINGS` (default 10,000,000; even, and at least twice the accounts,
//! since every account is funded by one transfer). Results print whether or not the target is
//! met; the process fails only if the benchmark itself fails.

// A benchmark that cannot set up, or whose data comes out inconsistent, should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use sqlx::{Connection, PgConnection, Row};
use tally_actors::{Engine, EngineConfig};
use tally_benches::SplitMix64;
use tally_benches::pg::{BenchDatabase, admin_url_or_exit};
use tally_engine::{AccountId, Currency, Record, Timestamp, system_accounts};
use tally_persistence::postgres::PgStore;
use tally_persistence::{SequencedRecord, Store, StoreReads};

const ACCOUNTS_DEFAULT: usize = 1_000_000;
const POSTINGS_DEFAULT: usize = 10_000_000;
/// DESIGN.md §9.
const TARGET_READY: Duration = Duration::from_secs(5);
/// Restarts measured: the first after population, then two more of the same database.
const RESTARTS: usize = 3;
/// Activations timed after the first one of each restart, one at a time.
const ACTIVATIONS_AFTER: usize = 100;
const CURRENCY: Currency = Currency::USD;
/// Multiplier that spreads transfer sources over accounts. Prime, and larger than any account
/// count, so `u * SPREAD % n` visits every account once per `n` consecutive transfers and each
/// account is the source of the same number of transfers.
const SPREAD: i64 = 2_654_435_761;
/// The largest internal transfer, in cents (100.00): funding covers every account's
/// spending with room to spare.
const AMOUNT_MAX_CENTS: i64 = 10_000;
/// Microseconds between two transfers' `created_at` in the made-up history.
const TRANSFER_SPACING_MICROS: i64 = 100;
/// Tables whose secondary indexes are dropped for the load and built again after it.
const BULK_TABLES: [&str; 3] = ["accounts", "postings", "transfers"];

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

fn to_usize(value: i64) -> usize {
    usize::try_from(value).expect("a count is not negative")
}

fn to_i64(value: usize) -> i64 {
    i64::try_from(value).expect("sizes fit in BIGINT")
}

/// What the population made, for the restarts to check against.
struct Population {
    phases: Vec<(&'static str, Duration)>,
    committed_seq: u64,
    /// Accounts never activated, with the balance the store holds for each.
    samples: Vec<(AccountId, Decimal)>,
}

/// Times one population phase and prints it as it finishes.
async fn phase<T>(phases: &mut Vec<(&'static str, Duration)>, name: &'static str, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let value = work.await;
    let elapsed = started.elapsed();
    println!("  population: {name:<44} {:>8.2} s", elapsed.as_secs_f64());
    phases.push((name, elapsed));
    value
}

async fn execute(connection: &mut PgConnection, sql: &str) -> u64 {
    sqlx::query(sql)
        .execute(&mut *connection)
        .await
        .unwrap_or_else(|error| panic!("{error}\nin: {sql}"))
        .rows_affected()
}

async fn count(connection: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&mut *connection).await.unwrap_or_else(|error| panic!("{error}\nin: {sql}"))
}

async fn populate(url: &str, n_accounts: usize, n_postings: usize) -> Population {
    let mut phases = Vec::new();
    let n_transfers = n_postings / 2;
    let (accounts, transfers) = (to_i64(n_accounts), to_i64(n_transfers));
    let created_at = now();

    // The schema, and the engine's system accounts written by the real store, so the restart
    // finds them as it would after any earlier run.
    let system_seq = phase(&mut phases, "migrate, system accounts via PgStore", async {
        let store = PgStore::connect(url).await.expect("connect to the benchmark database");
        store.migrate().await.expect("migrate");
        let records: Vec<SequencedRecord> = system_accounts::all_system_accounts(created_at)
            .into_iter()
            .zip(1..)
            .map(|(account, seq)| SequencedRecord { seq, record: Record::AccountOpened(Box::new(account)) })
            .collect();
        store.open_shards(1).await.expect("open the journal's shard");
        store.commit(0, &records).await.expect("commit the system accounts");
        to_i64(records.len())
    })
    .await;
    // Sequence numbers: user account n was opened at `system_seq + 1 + n`; transfer t's five
    // saga records are `first_transfer_seq + 5t + 0..=4` (started, held, credited, posted,
    // completed), so its credit posting is at +2, its debit at +3, its last transfer row at +4.
    let first_transfer_seq = system_seq + accounts + 1;
    let committed_seq = first_transfer_seq + 5 * transfers - 1;
    // Every account is the source of at most `rounds` internal transfers of at most 100.00:
    // ceil((transfers - accounts) / accounts).
    let rounds = (transfers - 1) / accounts;
    let funding = Decimal::new((AMOUNT_MAX_CENTS * (rounds + 1)).max(100_000), 2);
    let history_start = created_at.as_micros() - transfers * TRANSFER_SPACING_MICROS;

    let mut connection = PgConnection::connect(url).await.expect("connect for the bulk load");
    // One session does the load: memory for its sorts and hashes and for its temporary tables
    // (set before the first one exists); no fsync wait per statement, since nothing is
    // acknowledged to anyone until the final checkpoint.
    for setting in [
        "SET work_mem = '2GB'",
        "SET maintenance_work_mem = '2GB'",
        "SET temp_buffers = '1GB'",
        "SET synchronous_commit = off",
    ] {
        execute(&mut connection, setting).await;
    }

    let indexes: Vec<(String, String)> = phase(&mut phases, "drop secondary indexes", async {
        let rows = sqlx::query(
            "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
             WHERE c.relname = ANY($1) AND c.relnamespace = 'public'::regnamespace
               AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)",
        )
        .bind(BULK_TABLES.map(str::to_owned).to_vec())
        .fetch_all(&mut connection)
        .await
        .expect("list the secondary indexes");
        let indexes: Vec<(String, String)> = rows.iter().map(|row| (row.get("name"), row.get("definition"))).collect();
        for (name, _) in &indexes {
            execute(&mut connection, &format!("DROP INDEX {name}")).await;
        }
        indexes
    })
    .await;

    phase(&mut phases, "accounts", async {
        execute(
            &mut connection,
            &format!(
                "CREATE TEMP TABLE bench_accounts AS
                 SELECT n, gen_random_uuid() AS id FROM generate_series(0::bigint, {accounts} - 1) AS n"
            ),
        )
        .await;
        execute(&mut connection, "ANALYZE bench_accounts").await;
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, owner_id, currency, kind, status, balance, held, credit_limit, created_at, version, booked_at)
             SELECT id, gen_random_uuid(), $1, 'user', 'active', 0, 0, 0, $2, 0, 0 FROM bench_accounts ORDER BY id",
        )
        .bind(CURRENCY.code())
        .bind(created_at.as_micros())
        .execute(&mut connection)
        .await
        .expect("insert the accounts");
        assert_eq!(inserted.rows_affected(), n_accounts as u64);
    })
    .await;

    phase(&mut phases, "transfer plan (temporary table)", async {
        // Transfer t < n_accounts funds account t from settlement; the rest move up to 100.00
        // between two distinct accounts.
        sqlx::query(
            "CREATE TEMP TABLE bench_plan AS
             SELECT n AS t, gen_random_uuid() AS transfer_id, 'admin_credit' AS kind, $1::uuid AS source_id,
                    id AS destination_id, $2::numeric AS amount
             FROM bench_accounts
             UNION ALL
             SELECT g.t, gen_random_uuid(), 'internal', s.id, d.id, g.amount
             FROM (SELECT t, src, (src + 1 + (t - $3) * 40503 % ($3 - 1)) % $3 AS dst,
                          round((((t - $3) * 7919) % $5 + 1)::numeric / 100, 2) AS amount
                   FROM (SELECT t, (t - $3) * $4 % $3 AS src FROM generate_series($3, $6 - 1) AS t) AS u) AS g
             JOIN bench_accounts s ON s.n = g.src
             JOIN bench_accounts d ON d.n = g.dst",
        )
        .bind(system_accounts::settlement(CURRENCY).as_uuid())
        .bind(funding)
        .bind(accounts)
        .bind(SPREAD)
        .bind(AMOUNT_MAX_CENTS)
        .bind(transfers)
        .execute(&mut connection)
        .await
        .expect("plan the transfers");
        execute(&mut connection, "ANALYZE bench_plan").await;
    })
    .await;

    phase(&mut phases, "transfers", async {
        let inserted = sqlx::query(
            "INSERT INTO transfers (id, kind, status, step, source_id, destination_id, amount, currency, fee,
                                    destination_amount, destination_currency, created_at, completed_at, seq)
             SELECT transfer_id, kind, 'completed', 'posted', source_id, destination_id, amount, $1, 0.00,
                    amount, $1, $2 + t * $3, $2 + t * $3 + $3 / 2, $4 + 5 * t + 4
             FROM bench_plan ORDER BY transfer_id",
        )
        .bind(CURRENCY.code())
        .bind(history_start)
        .bind(TRANSFER_SPACING_MICROS)
        .bind(first_transfer_seq)
        .execute(&mut connection)
        .await
        .expect("insert the transfers");
        assert_eq!(inserted.rows_affected(), n_transfers as u64);
    })
    .await;

    phase(&mut phases, "postings (with running balance_after)", async {
        let inserted = sqlx::query(
            "INSERT INTO postings (account_id, booked_at, version, transfer_id, currency, direction, amount,
                                   balance_after, shard, seq)
             SELECT account_id, booked_at, row_number() OVER (PARTITION BY account_id ORDER BY seq), transfer_id, $1,
                    direction, amount,
                    SUM(CASE WHEN direction = 'credit' THEN amount ELSE -amount END)
                        OVER (PARTITION BY account_id ORDER BY seq),
                    0, seq
             FROM (SELECT $2 + 5 * t + 2 AS seq, $3 + t * $4 + $4 / 2 AS booked_at, transfer_id,
                          destination_id AS account_id, 'credit' AS direction, amount
                   FROM bench_plan
                   UNION ALL
                   SELECT $2 + 5 * t + 3, $3 + t * $4 + $4 / 2, transfer_id, source_id, 'debit', amount
                   FROM bench_plan) AS p
             ORDER BY account_id, seq",
        )
        .bind(CURRENCY.code())
        .bind(first_transfer_seq)
        .bind(history_start)
        .bind(TRANSFER_SPACING_MICROS)
        .execute(&mut connection)
        .await
        .expect("insert the postings");
        assert_eq!(inserted.rows_affected(), n_postings as u64);
    })
    .await;

    phase(&mut phases, "balance snapshots from postings", async {
        let updated = execute(
            &mut connection,
            "UPDATE accounts AS a SET balance = s.balance, version = s.version, booked_at = s.booked_at
             FROM (SELECT account_id, SUM(CASE WHEN direction = 'credit' THEN amount ELSE -amount END) AS balance,
                          MAX(version) AS version, MAX(booked_at) AS booked_at
                   FROM postings GROUP BY account_id) AS s
             WHERE a.id = s.account_id",
        )
        .await;
        // Every user account and the settlement account have postings.
        assert_eq!(updated, n_accounts as u64 + 1);
        let advanced = sqlx::query("UPDATE journal_shards SET committed_seq = $1 WHERE shard = 0")
            .bind(committed_seq)
            .execute(&mut connection)
            .await
            .expect("set the committed sequence");
        assert_eq!(advanced.rows_affected(), 1);
    })
    .await;

    // Accounts to activate after each restart: distinct, spread over the whole table.
    let mut random = SplitMix64::new(0x7a11_0005);
    let wanted = (RESTARTS * (1 + ACTIVATIONS_AFTER)).min(n_accounts);
    let mut picked = std::collections::HashSet::new();
    let mut picks: Vec<i64> = Vec::with_capacity(wanted);
    while picks.len() < wanted {
        let n = to_i64(random.below(n_accounts));
        if picked.insert(n) {
            picks.push(n);
        }
    }
    let rows = sqlx::query(
        "SELECT a.id, a.balance FROM unnest($1::int8[]) WITH ORDINALITY AS p(n, ord)
         JOIN bench_accounts b ON b.n = p.n JOIN accounts a ON a.id = b.id ORDER BY p.ord",
    )
    .bind(&picks)
    .fetch_all(&mut connection)
    .await
    .expect("pick accounts to activate");
    let samples: Vec<(AccountId, Decimal)> =
        rows.iter().map(|row| (AccountId::from_uuid(row.get("id")), row.get("balance"))).collect();
    execute(&mut connection, "DROP TABLE bench_plan, bench_accounts").await;

    phase(&mut phases, "rebuild secondary indexes", async {
        for (_, definition) in &indexes {
            execute(&mut connection, definition).await;
        }
    })
    .await;
    phase(&mut phases, "vacuum, analyze, checkpoint", async {
        execute(&mut connection, "VACUUM (ANALYZE)").await;
        execute(&mut connection, "CHECKPOINT").await;
    })
    .await;

    phase(&mut phases, "verify: a consistent ledger (SQL)", async {
        let posting_sums = "SELECT account_id, SUM(CASE WHEN direction = 'credit' THEN amount ELSE -amount END) AS sum
                            FROM postings GROUP BY account_id";
        let checks = [
            ("SELECT count(*) FROM accounts WHERE kind = 'user'".to_owned(), to_i64(n_accounts)),
            ("SELECT count(*) FROM postings".to_owned(), to_i64(n_postings)),
            ("SELECT count(*) FROM transfers WHERE status = 'completed'".to_owned(), transfers),
            (
                "SELECT count(*) FROM (SELECT currency FROM accounts GROUP BY currency HAVING SUM(balance) <> 0) AS c"
                    .to_owned(),
                0,
            ),
            (
                format!(
                    "SELECT count(*) FROM accounts a LEFT JOIN ({posting_sums}) s ON s.account_id = a.id
                 WHERE a.balance <> COALESCE(s.sum, 0)"
                ),
                0,
            ),
            (
                "SELECT count(*) FROM accounts a JOIN postings p ON p.account_id = a.id AND p.version = a.version
                 WHERE p.balance_after <> a.balance"
                    .to_owned(),
                0,
            ),
            ("SELECT count(*) FROM accounts WHERE kind = 'user' AND balance - held + credit_limit < 0".to_owned(), 0),
            ("SELECT count(*) FROM transfers WHERE status IN ('processing', 'pending')".to_owned(), 0),
            ("SELECT count(*) FROM holds".to_owned(), 0),
            (
                "SELECT count(*) FROM postings WHERE seq > (SELECT committed_seq FROM journal_shards WHERE shard = 0)"
                    .to_owned(),
                0,
            ),
        ];
        for (sql, expected) in &checks {
            assert_eq!(count(&mut connection, sql).await, *expected, "{sql}");
        }
    })
    .await;
    connection.close().await.expect("close the bulk-load connection");
    let committed_seq = u64::try_from(committed_seq).expect("positive");

    // Pair assertion: the invariants `tally check` holds the store to, read back through the
    // real `PgStore`, as a restarted engine would see the data.
    phase(&mut phases, "verify: tally check through PgStore", async {
        let store = PgStore::connect(url).await.expect("connect");
        let (summary, violations) = tally_persistence::check::check(&store).await.expect("check the store");
        assert!(
            violations.is_empty(),
            "the populated ledger breaks invariants: {:?}",
            &violations[..violations.len().min(5)]
        );
        assert_eq!(summary.accounts, n_accounts + to_usize(system_seq), "every account checked");
        assert_eq!(store.committed_seqs().await.expect("committed sequence")[0], committed_seq);
    })
    .await;
    Population { phases, committed_seq, samples }
}

/// One restart's figures.
struct Restart {
    connect: Duration,
    start: Duration,
    ready: Duration,
    first_activation: Duration,
    activations_after: Vec<Duration>,
}

async fn restart(url: &str, population: &Population, samples: &[(AccountId, Decimal)]) -> Restart {
    let began = Instant::now();
    let store = PgStore::connect(url).await.expect("connect");
    store.migrate().await.expect("migrations already applied");
    let connect = began.elapsed();
    let engine = Engine::start(Arc::new(store), EngineConfig::default()).await.expect("engine starts");
    let ready = began.elapsed();
    assert!(engine.is_ready(), "Engine::start returns after recovery");
    let start = ready - connect;

    let first_activation = activate(&engine, samples[0]).await;
    let mut activations_after = Vec::with_capacity(samples.len() - 1);
    for &sample in &samples[1..] {
        activations_after.push(activate(&engine, sample).await);
    }

    // Recovery had nothing to do and the system accounts existed: the restart wrote nothing.
    let committed = engine.store().committed_seqs().await.expect("read the committed sequence");
    assert_eq!(
        committed.first().copied(),
        Some(population.committed_seq),
        "a restart of a quiet ledger appends no record"
    );
    engine.shutdown(Duration::from_secs(5)).await;
    Restart { connect, start, ready, first_activation, activations_after }
}

/// Times `engine.account(id)` for an account with no actor yet, and checks what it loaded.
async fn activate(engine: &Engine, (id, balance): (AccountId, Decimal)) -> Duration {
    let started = Instant::now();
    let account = engine.account(id).await.expect("the account activates");
    let elapsed = started.elapsed();
    assert_eq!(account.balance(), balance, "the actor loads the balance the store holds");
    elapsed
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

async fn run(admin_url: &str, n_accounts: usize, n_postings: usize) {
    let database = BenchDatabase::create(admin_url, "bench_restart").await;
    println!(
        "restart: {n_accounts} accounts, {n_postings} postings ({} transfers) on database {}",
        n_postings / 2,
        database.name()
    );
    let population_started = Instant::now();
    let population = populate(database.url(), n_accounts, n_postings).await;
    let population_time = population_started.elapsed();
    println!("  population: total {:.1} s", population_time.as_secs_f64());
    let size: String = {
        let mut connection = PgConnection::connect(database.url()).await.expect("connect");
        let size = sqlx::query_scalar("SELECT pg_size_pretty(pg_database_size(current_database()))")
            .fetch_one(&mut connection)
            .await
            .expect("database size");
        connection.close().await.expect("close");
        size
    };
    println!("  database size: {size}");

    let mut restarts = Vec::new();
    for (index, samples) in population.samples.chunks(1 + ACTIVATIONS_AFTER).take(RESTARTS).enumerate() {
        let figures = restart(database.url(), &population, samples).await;
        let mut after = figures.activations_after.clone();
        after.sort();
        let median = after.get(after.len() / 2).copied().unwrap_or_default();
        let worst = after.last().copied().unwrap_or_default();
        println!(
            "restart {}: ready in {:.3} s (connect + migration check {:.1} ms, Engine::start incl. recovery {:.1} ms; \
             target {:.0} s {}); first activation {:.2} ms; next {} activations median {:.2} ms, max {:.2} ms",
            index + 1,
            figures.ready.as_secs_f64(),
            millis(figures.connect),
            millis(figures.start),
            TARGET_READY.as_secs_f64(),
            if figures.ready <= TARGET_READY { "met" } else { "MISSED" },
            millis(figures.first_activation),
            after.len(),
            millis(median),
            millis(worst),
        );
        restarts.push(figures);
    }

    println!("\nsummary");
    println!("  population ({n_accounts} accounts, {n_postings} postings): {:.1} s", population_time.as_secs_f64());
    for (name, elapsed) in &population.phases {
        println!("    {name:<44} {:>8.2} s", elapsed.as_secs_f64());
    }
    for (index, figures) in restarts.iter().enumerate() {
        println!(
            "  restart {}: ready {:.3} s (Engine::start {:.3} s), first activation {:.2} ms",
            index + 1,
            figures.ready.as_secs_f64(),
            figures.start.as_secs_f64(),
            millis(figures.first_activation)
        );
    }
    database.drop_now().await;
}

fn main() {
    let admin_url = admin_url_or_exit("restart");
    let n_accounts = env_count("TALLY_BENCH_RESTART_ACCOUNTS", ACCOUNTS_DEFAULT);
    let n_postings = env_count("TALLY_BENCH_RESTART_POSTINGS", POSTINGS_DEFAULT);
    if n_accounts < 2 || n_postings % 2 == 1 || n_postings < 2 * n_accounts || to_i64(n_accounts) >= SPREAD {
        eprintln!(
            "restart: need TALLY_BENCH_RESTART_ACCOUNTS ≥ 2 (and below {SPREAD}) and TALLY_BENCH_RESTART_POSTINGS even \
             and ≥ twice the accounts (every account is funded by one transfer); got {n_accounts} and {n_postings}"
        );
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(run(&admin_url, n_accounts, n_postings));
}

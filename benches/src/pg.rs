//! Postgres for the benchmarks: the admin URL from `TALLY_BENCH_DATABASE_URL`, a fresh
//! database per scenario (dropped afterwards, also when the benchmark panics), and CPU
//! accounting from `/proc`, so a benchmark can say whether Postgres or Tally used the cores.
//!
//! The benchmarks never touch a database they did not create: every one is named
//! `<prefix>_<random hex>` and dropped with `DROP DATABASE ... WITH (FORCE)`, which also ends
//! the connections a stopped engine's pool may still hold.

// A benchmark that cannot set up its database should abort loudly rather than measure nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use sqlx::Connection;

/// The environment variable naming the admin URL of the cluster to benchmark against.
pub const DATABASE_URL_ENV: &str = "TALLY_BENCH_DATABASE_URL";

/// The admin URL from `TALLY_BENCH_DATABASE_URL`. Without it, prints how to start a throwaway
/// cluster and exits with status 2: a benchmark that silently skipped would report nothing.
pub fn admin_url_or_exit(bench: &str) -> String {
    match std::env::var(DATABASE_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            eprintln!(
                "{bench}: {DATABASE_URL_ENV} is not set. Start a throwaway Postgres and point the benchmark at it:\n\n\
                 \x20   scripts/pg start /tmp/tally-bench-pg 55433\n\
                 \x20   {DATABASE_URL_ENV}=postgres://postgres@127.0.0.1:55433/postgres cargo bench -p tally-benches --bench {bench}\n\
                 \x20   scripts/pg stop /tmp/tally-bench-pg\n\n\
                 The benchmark creates its own databases on that cluster and drops them at the end."
            );
            std::process::exit(2);
        }
    }
}

/// `admin_url` with its database replaced by `database` (any `?query` is kept).
pub fn url_with_database(admin_url: &str, database: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    // `postgres://user@host:port/db`: the database is after the last '/' that follows the
    // authority. A URL with no database yet has no '/' after "//".
    let scheme_end = base.find("://").map_or(0, |at| at + 3);
    let root = match base[scheme_end..].find('/') {
        Some(at) => &base[..scheme_end + at],
        None => base,
    };
    match query {
        Some(query) => format!("{root}/{database}?{query}"),
        None => format!("{root}/{database}"),
    }
}

/// A database created for one benchmark scenario. `drop_now` drops it; if the benchmark
/// panics first, `Drop` drops it on a thread of its own.
#[derive(Debug)]
pub struct BenchDatabase {
    admin_url: String,
    name: String,
    url: String,
    dropped: bool,
}

impl BenchDatabase {
    /// Creates an empty database named `<prefix>_<random hex>` on the admin URL's cluster.
    pub async fn create(admin_url: &str, prefix: &str) -> BenchDatabase {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {DATABASE_URL_ENV}={admin_url}: {error}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the benchmark database");
        admin.close().await.expect("close the admin connection");
        let url = url_with_database(admin_url, &name);
        BenchDatabase { admin_url: admin_url.to_owned(), name, url, dropped: false }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Drops the database, ending any connection still open on it.
    pub async fn drop_now(mut self) {
        drop_database(&self.admin_url, &self.name).await;
        self.dropped = true;
    }
}

impl Drop for BenchDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Reached only when the benchmark unwinds before `drop_now`. This may run inside a
        // runtime, where blocking on another runtime would panic, so drop from a thread of
        // its own and wait for it.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropper =
            std::thread::spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(drop_database(&admin_url, &name)),
                Err(error) => eprintln!("could not drop benchmark database {name}: {error}"),
            });
        let _ = dropper.join();
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    let dropped = async {
        let mut admin = sqlx::PgConnection::connect(admin_url).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await?;
        admin.close().await
    };
    if let Err(error) = dropped.await {
        eprintln!("could not drop benchmark database {name}: {error}");
    }
}

/// Clock ticks per second of `/proc`'s CPU times (`getconf CLK_TCK`; 100 on Linux in practice).
/// Asked of `getconf` because `sysconf` is `unsafe` FFI, which the workspace forbids.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

/// User plus system CPU ticks of one process (all its threads), from `/proc/<pid>/stat`.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the name.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// Busy and total ticks of the whole machine, from the first line of `/proc/stat`.
fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return (0, 0) };
    let Some(line) = stat.lines().next() else { return (0, 0) };
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|value| value.parse().ok()).collect();
    let total: u64 = values.iter().take(8).sum();
    // idle and iowait are the 4th and 5th values.
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// Watches the CPU that Postgres spends for one benchmark database: its client backends
/// (the engine's pool, autovacuum on it) and the cluster's background processes (WAL writer,
/// checkpointer, background writer), which work for whoever writes. Backends of other
/// databases on a shared cluster are left out.
#[derive(Debug)]
pub struct PgCpuWatch {
    admin: sqlx::PgConnection,
    database: String,
}

/// A point-in-time reading of CPU counters.
#[derive(Debug, Clone)]
pub struct CpuSample {
    at: Instant,
    postgres_ticks: HashMap<String, u64>,
    self_ticks: u64,
    machine_busy_ticks: u64,
    machine_total_ticks: u64,
}

/// CPU used between two samples, in cores (1.0 = one core busy the whole time).
#[derive(Debug, Clone, Copy)]
pub struct CpuUsage {
    pub wall_seconds: f64,
    /// The benchmark database's backends plus the cluster's background processes.
    pub postgres_cores: f64,
    /// This process: the benchmark driver, the engine's threads and the store's client side.
    pub tally_cores: f64,
    /// Everything on the machine that was not idle.
    pub machine_busy_cores: f64,
    pub machine_cores: f64,
}

impl std::fmt::Display for CpuUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU cores busy: postgres {:.2}, tally {:.2}, machine {:.2} of {:.0}",
            self.postgres_cores, self.tally_cores, self.machine_busy_cores, self.machine_cores
        )
    }
}

impl PgCpuWatch {
    pub async fn connect(admin_url: &str, database: &str) -> PgCpuWatch {
        let admin = sqlx::PgConnection::connect(admin_url).await.expect("connect to the cluster to watch its CPU");
        PgCpuWatch { admin, database: database.to_owned() }
    }

    async fn pids(&mut self) -> Vec<String> {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE (datname = $1 OR (backend_type <> 'client backend' AND datname IS NULL)) AND pid <> pg_backend_pid()",
        )
        .bind(&self.database)
        .fetch_all(&mut self.admin)
        .await
        .expect("list the benchmark's Postgres processes");
        pids.into_iter().map(|pid| pid.to_string()).collect()
    }

    pub async fn sample(&mut self) -> CpuSample {
        let pids = self.pids().await;
        let postgres_ticks = pids.into_iter().filter_map(|pid| process_ticks(&pid).map(|ticks| (pid, ticks))).collect();
        let (machine_busy_ticks, machine_total_ticks) = machine_ticks();
        CpuSample {
            at: Instant::now(),
            postgres_ticks,
            self_ticks: process_ticks("self").unwrap_or(0),
            machine_busy_ticks,
            machine_total_ticks,
        }
    }
}

impl CpuSample {
    /// A sample of this process and the machine only (no Postgres): for the SQLite runs.
    pub fn local() -> CpuSample {
        let (machine_busy_ticks, machine_total_ticks) = machine_ticks();
        CpuSample {
            at: Instant::now(),
            postgres_ticks: HashMap::new(),
            self_ticks: process_ticks("self").unwrap_or(0),
            machine_busy_ticks,
            machine_total_ticks,
        }
    }

    /// CPU used from `earlier` to this sample. A Postgres process that started in between
    /// counts from zero; one that ended in between is lost (the pool's connections live for
    /// the whole run, so that is at most a short-lived autovacuum worker).
    pub fn since(&self, earlier: &CpuSample) -> CpuUsage {
        let ticks_per_second = clock_ticks_per_second();
        let wall_seconds = self.at.duration_since(earlier.at).as_secs_f64().max(1e-9);
        let pids: HashSet<&String> = self.postgres_ticks.keys().collect();
        let postgres_ticks: u64 = pids
            .into_iter()
            .map(|pid| {
                let now = self.postgres_ticks.get(pid).copied().unwrap_or(0);
                now.saturating_sub(earlier.postgres_ticks.get(pid).copied().unwrap_or(0))
            })
            .sum();
        let cores = |ticks: u64| ticks as f64 / ticks_per_second / wall_seconds;
        let machine_total = self.machine_total_ticks.saturating_sub(earlier.machine_total_ticks);
        CpuUsage {
            wall_seconds,
            postgres_cores: cores(postgres_ticks),
            tally_cores: cores(self.self_ticks.saturating_sub(earlier.self_ticks)),
            machine_busy_cores: cores(self.machine_busy_ticks.saturating_sub(earlier.machine_busy_ticks)),
            machine_cores: cores(machine_total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_replaced_and_the_query_kept() {
        assert_eq!(
            url_with_database("postgres://postgres@127.0.0.1:55432/postgres", "bench_x"),
            "postgres://postgres@127.0.0.1:55432/bench_x"
        );
        assert_eq!(url_with_database("postgres://u:p@h/db?sslmode=disable", "b"), "postgres://u:p@h/b?sslmode=disable");
        assert_eq!(url_with_database("postgres://h:5432", "b"), "postgres://h:5432/b");
    }
}

//! Postgres's floor: what Postgres alone spends to store the rows a transfer leaves, with
//! nothing of Tally around them.
//!
//! A durable transfer leaves one `transfers` row and two `postings` rows. This program takes
//! the rows a `scripts/bench` scenario just stored (read back byte for byte with binary
//! `COPY … TO STDOUT`), and writes them again into a fresh database migrated with Tally's own
//! migrations (the same tables, the same indexes), the way the journals group them: `W`
//! writers on their own connections (Tally has one journal per shard), each committing `N`
//! transfer rows and their `2N` postings per transaction: `BEGIN`, binary `COPY` of the
//! postings, binary `COPY` of the transfers, `COMMIT` (durable: `synchronous_commit` as the
//! cluster has it). Nothing else: no journal fence, no hash-chain link, no events, no holds,
//! no rows written twice, no snapshots.
//!
//! Postgres's CPU per transfer here (the new database's backends and the cluster's WAL writer,
//! checkpointer and background writer, from `/proc`) is the least any engine storing these
//! facts with these indexes pays Postgres at this commit size; what Tally's scenario paid above
//! it is what Tally's way of writing adds.
//!
//! ```text
//! pg-floor SOURCE_URL [TRANSFERS_PER_COMMIT=40] [WRITERS=2] [SECONDS=20] [REPORT.json]
//! ```
//! `SOURCE_URL` is the database to read the rows from (its cluster also hosts the floor's own
//! database, created and dropped here). `TALLY_FLOOR_SETUP_SQL`, if set, runs on the floor's
//! database after the migrations: a schema change measured here before Tally makes it.

// A benchmark that cannot set up should abort loudly rather than measure nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use sqlx::{Connection, PgConnection};
use tally_benches::pg::{BenchDatabase, PgCpuWatch};
use tally_persistence::postgres::PgStore;

/// Binary COPY's header: signature, flags, header-extension length (both zero).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let source_url =
        args.next().ok_or("usage: pg-floor SOURCE_URL [TRANSFERS_PER_COMMIT] [WRITERS] [SECONDS] [REPORT]")?;
    let number = |text: Option<String>, default: usize, what: &str| -> Result<usize, String> {
        text.map_or(Ok(default), |text| text.parse().map_err(|error| format!("{what}: {error}")))
    };
    let per_commit = number(args.next(), 40, "transfers per commit")?.max(1);
    let writers = number(args.next(), 2, "writers")?.max(1);
    let seconds = number(args.next(), 20, "seconds")?;
    let report = args.next();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(writers)
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    runtime.block_on(run(&source_url, per_commit, writers, Duration::from_secs(seconds as u64), report))
}

async fn run(
    source_url: &str,
    per_commit: usize,
    writers: usize,
    limit: Duration,
    report: Option<String>,
) -> Result<(), String> {
    // The rows: completed transfers (what a scenario's transfers are) and postings, in the
    // order they were stored.
    let mut source = PgConnection::connect(source_url).await.map_err(|error| format!("connect: {error}"))?;
    let transfers = read_rows(
        &mut source,
        "COPY (SELECT * FROM transfers WHERE status = 'completed' AND kind = 'internal' ORDER BY seq) TO STDOUT (FORMAT BINARY)",
    )
    .await?;
    let postings =
        read_rows(&mut source, "COPY (SELECT * FROM postings ORDER BY shard, seq) TO STDOUT (FORMAT BINARY)").await?;
    source.close().await.map_err(|error| error.to_string())?;
    let commits = (transfers.len() / per_commit).min(postings.len() / (2 * per_commit));
    if commits < writers {
        return Err(format!("{} transfer rows stored: run a load scenario first", transfers.len()));
    }

    let floor = BenchDatabase::create(source_url, "tally_floor").await;
    let store = PgStore::connect(floor.url()).await.map_err(|error| error.to_string())?;
    store.migrate().await.map_err(|error| error.to_string())?;
    drop(store);
    // What-if runs: a schema change tried on the floor first (an index dropped, a column's
    // collation changed) before the write path is changed to match.
    if let Ok(setup) = std::env::var("TALLY_FLOOR_SETUP_SQL") {
        let mut connection = PgConnection::connect(floor.url()).await.map_err(|error| error.to_string())?;
        sqlx::raw_sql(&setup)
            .execute(&mut connection)
            .await
            .map_err(|error| format!("TALLY_FLOOR_SETUP_SQL: {error}"))?;
        connection.close().await.map_err(|error| error.to_string())?;
    }

    // Each writer gets every `writers`-th commit, built before the clock starts.
    let batches: Vec<Vec<(Vec<u8>, Vec<u8>)>> = (0..writers)
        .map(|writer| {
            (writer..commits)
                .step_by(writers)
                .map(|commit| {
                    let t = &transfers[commit * per_commit..(commit + 1) * per_commit];
                    let p = &postings[commit * 2 * per_commit..(commit + 1) * 2 * per_commit];
                    (copy_data(p), copy_data(t))
                })
                .collect()
        })
        .collect();
    let mut connections = Vec::with_capacity(writers);
    for _ in 0..writers {
        connections.push(PgConnection::connect(floor.url()).await.map_err(|error| error.to_string())?);
    }
    let mut watch = PgCpuWatch::connect(floor.admin_url(), floor.name()).await;
    let before = watch.sample().await;
    let started = Instant::now();
    let deadline = started + limit;
    let tasks: Vec<_> = connections
        .into_iter()
        .zip(batches)
        .map(|(connection, batches)| tokio::spawn(write(connection, batches, deadline)))
        .collect();
    let (mut latencies, mut finished) = (Vec::new(), Vec::new());
    for task in tasks {
        let (connection, times) = task.await.map_err(|error| error.to_string())??;
        latencies.extend(times);
        finished.push(connection);
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Sampled while the writers' backends live: an ended process's time is no longer readable.
    let usage = watch.sample().await.since(&before);
    drop(finished);
    let written = latencies.len() * per_commit;

    // What autovacuum would spend on these rows sooner or later (setting the visibility map,
    // sampling for statistics), done at once and measured apart: a scenario's window may or may
    // not hold one of autovacuum's passes, this short run most likely none.
    let mut check = PgConnection::connect(floor.url()).await.map_err(|error| error.to_string())?;
    let before_vacuum = watch.sample().await;
    sqlx::query("VACUUM (ANALYZE) transfers, postings").execute(&mut check).await.map_err(|e| e.to_string())?;
    let vacuum = watch.sample().await.since(&before_vacuum);
    let vacuum_us = vacuum.postgres_cores * vacuum.wall_seconds * 1e6 / written.max(1) as f64;

    // Every row committed is there.
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM transfers").fetch_one(&mut check).await.map_err(|e| e.to_string())?;
    let stored_postings: i64 =
        sqlx::query_scalar("SELECT count(*) FROM postings").fetch_one(&mut check).await.map_err(|e| e.to_string())?;
    check.close().await.map_err(|error| error.to_string())?;
    floor.drop_now().await;
    let passed = stored as usize == written && stored_postings as usize == 2 * written;

    latencies.sort_unstable();
    let pick =
        |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)).copied().unwrap_or(0);
    let per_transfer_us = usage.postgres_cores * elapsed * 1e6 / written.max(1) as f64;
    println!(
        "pg-floor: {written} transfers ({} commits of {per_commit}, {writers} writers) in {elapsed:.1} s = {:.0}/s; \
         postgres {per_transfer_us:.1} µs CPU per transfer ({:.2} cores), + {vacuum_us:.1} for their VACUUM (ANALYZE); \
         commit p50 {:.1} ms, p99 {:.1} ms{}",
        latencies.len(),
        written as f64 / elapsed,
        usage.postgres_cores,
        pick(0.5) as f64 / 1000.0,
        pick(0.99) as f64 / 1000.0,
        if passed { "" } else { "; ROWS MISSING" },
    );
    if let Some(path) = report {
        // The shape of the load generator's report, as `scripts/bench`'s table reads it.
        let json = format!(
            r#"{{"transfers_per_second": {rate}, "transfers_ok": {written}, "duration_seconds": {elapsed},
 "latency": {{"p50_us": {p50}, "p99_us": {p99}, "p99_9_us": {p999}}},
 "cpu": [{{"name": "postgres", "cores": {cores}, "per_transfer_us": {per_transfer_us}, "vacuum_per_transfer_us": {vacuum_us}}}],
 "verification": {{"passed": {passed}, "problems": []}},
 "config": {{"transfers_per_commit": {per_commit}, "writers": {writers}}}}}"#,
            rate = written as f64 / elapsed,
            p50 = pick(0.5),
            p99 = pick(0.99),
            p999 = pick(0.999),
            cores = usage.postgres_cores,
        );
        std::fs::write(&path, json).map_err(|error| format!("{path}: {error}"))?;
    }
    if passed { Ok(()) } else { Err(format!("stored {stored} transfers and {stored_postings} postings of {written}")) }
}

/// One writer's loop: a transaction per batch until the batches or the time run out. Returns
/// the connection, still open, and each commit's time in µs.
async fn write(
    mut connection: PgConnection,
    batches: Vec<(Vec<u8>, Vec<u8>)>,
    deadline: Instant,
) -> Result<(PgConnection, Vec<u64>), String> {
    let mut latencies = Vec::with_capacity(batches.len());
    for (postings, transfers) in batches {
        if Instant::now() >= deadline {
            break;
        }
        let started = Instant::now();
        let mut transaction = connection.begin().await.map_err(|error| error.to_string())?;
        for (table, data) in [("postings", postings), ("transfers", transfers)] {
            let mut copy = transaction
                .copy_in_raw(&format!("COPY {table} FROM STDIN (FORMAT BINARY)"))
                .await
                .map_err(|error| error.to_string())?;
            copy.send(data).await.map_err(|error| error.to_string())?;
            copy.finish().await.map_err(|error| error.to_string())?;
        }
        transaction.commit().await.map_err(|error| error.to_string())?;
        latencies.push(started.elapsed().as_micros() as u64);
    }
    Ok((connection, latencies))
}

/// The rows of a binary `COPY … TO STDOUT`, each as its bytes (field count and fields).
async fn read_rows(connection: &mut PgConnection, statement: &str) -> Result<Vec<Vec<u8>>, String> {
    let chunks: Vec<_> = connection
        .copy_out_raw(statement)
        .await
        .map_err(|error| format!("{statement}: {error}"))?
        .try_collect()
        .await
        .map_err(|error| format!("{statement}: {error}"))?;
    let data: Vec<u8> = chunks.concat();
    let body = data.strip_prefix(HEADER).ok_or("not a binary COPY without header extension")?;
    let mut rows = Vec::new();
    let mut at = 0;
    let take = |at: usize, n: usize| body.get(at..at + n).ok_or_else(|| "COPY data ends mid-row".to_owned());
    loop {
        let fields = i16::from_be_bytes(take(at, 2)?.try_into().map_err(|_| "field count")?);
        if fields < 0 {
            break;
        }
        let start = at;
        at += 2;
        for _ in 0..fields {
            let length = i32::from_be_bytes(take(at, 4)?.try_into().map_err(|_| "field length")?);
            at += 4 + usize::try_from(length).unwrap_or(0);
        }
        rows.push(take(start, at - start)?.to_vec());
    }
    Ok(rows)
}

/// `rows` as one binary COPY stream.
fn copy_data(rows: &[Vec<u8>]) -> Vec<u8> {
    let mut data = HEADER.to_vec();
    for row in rows {
        data.extend_from_slice(row);
    }
    data.extend_from_slice(&(-1_i16).to_be_bytes());
    data
}

//! `tally-loadtest`: an HTTP load generator for Tally (issue 7). A black box: it speaks only
//! HTTP to a running Tally and depends on no Tally crate. A run is set-up (users, accounts,
//! funding) → load (open or closed loop) → verification (every acknowledged transfer stored
//! once, as requested, in the status its answer promised; every outcome the load left unknown
//! replayed under its key; each account's balance moved by what its transfers explain; money
//! conserved) → JSON report and a self-contained HTML report with charts.

pub mod cli;
pub mod client;
pub mod cpu;
pub mod driver;
pub mod error;
pub mod html;
pub mod progress;
pub mod report;
pub mod setup;
pub mod stats;
pub mod svg;
pub mod verify;
pub mod workload;

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::cli::Config;
use crate::client::Client;
use crate::driver::{Shared, lock};
use crate::error::LoadError;
use crate::report::Report;
use crate::stats::Stats;

/// One whole run. `Ok` carries the report even when verification failed: the caller decides
/// the exit status from `report.verification.verdict()`.
pub async fn run(config: &Config) -> Result<Report, LoadError> {
    config.validate()?;
    let client = Client::new(&config.base_url)?;
    let run_id = setup::run_id();
    let fixture = setup::prepare(&client, config, &run_id).await?;
    let before = verify::snapshot(&client, &fixture).await?;
    let shared = Arc::new(Shared {
        client: client.clone(),
        fixture,
        amount: config.amount.clone(),
        warmup: config.warmup,
        stats: Mutex::new(Stats::new()?),
        acks: Mutex::new(Vec::new()),
        unknowns: Mutex::new(Vec::new()),
        retry_mismatches: Mutex::new(Vec::new()),
    });
    let progress = (!config.quiet).then(|| progress::start(Arc::clone(&shared)));
    let started = Instant::now();
    // CPU of the watched processes over the measured window: from the end of the warm-up (where
    // the measured transfers and the duration start, before `--at-window-start` runs) to the
    // last answer (before `--at-window-end` runs).
    let warmup = config.warmup;
    let watches = config.cpu.clone();
    let window_start = config.at_window_start.clone();
    let cpu_before = tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        let sample = cpu::sample(&watches)?;
        if let Some(command) = window_start {
            hook(&command).await?;
        }
        Ok::<_, LoadError>(sample)
    });
    driver::drive(config, Arc::clone(&shared)).await;
    let cpu_after = cpu::sample(&config.cpu)?;
    let duration = started.elapsed().saturating_sub(config.warmup).as_secs_f64();
    if let Some(command) = &config.at_window_end {
        hook(command).await?;
    }
    let cpu_before = cpu_before.await.map_err(|e| LoadError::Config(format!("cpu sampling task: {e}")))??;
    if let Some(p) = progress {
        p.abort();
    }
    let resolution = driver::resolve(&shared).await?;
    let acks = std::mem::take(&mut *lock(&shared.acks));
    let mismatches = std::mem::take(&mut *lock(&shared.retry_mismatches));
    let verification = verify::verify(&client, &shared.fixture, acks, resolution, mismatches, &before).await?;
    let stats = lock(&shared.stats);
    let cpu = cpu::usage(&config.cpu, &cpu_before, &cpu_after, duration, stats.transfers);
    Ok(Report::new(config, run_id, duration, &stats, verification, cpu))
}

/// Runs a `--at-window-*` command with `sh -c`; a command that fails stops the run, since the
/// figures it was meant to frame would be wrong.
async fn hook(command: &str) -> Result<(), LoadError> {
    let status = tokio::process::Command::new("sh")
        .args(["-c", command])
        .status()
        .await
        .map_err(|e| LoadError::Config(format!("running `{command}`: {e}")))?;
    if !status.success() {
        return Err(LoadError::Config(format!("`{command}` exited with {status}")));
    }
    Ok(())
}

/// `--setup-only FILE`: set-up alone, its fixture (accounts with their owners, the owners'
/// tokens and API keys) written to `FILE` as JSON for another load generator to drive.
pub async fn setup_only(config: &Config, path: &std::path::Path) -> Result<setup::Fixture, LoadError> {
    config.validate()?;
    let client = Client::new(&config.base_url)?;
    let fixture = setup::prepare(&client, config, &setup::run_id()).await?;
    let json = serde_json::to_string(&fixture).map_err(|e| LoadError::Config(format!("encoding the fixture: {e}")))?;
    std::fs::write(path, json).map_err(|e| LoadError::Config(format!("writing {}: {e}", path.display())))?;
    Ok(fixture)
}
